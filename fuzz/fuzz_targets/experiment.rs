//! The experiment-file parser: the grid, the per-data-set directories and the `[base]` table,
//! with every run's settings resolved as `arelax experiment` does before training.
#![no_main]

use std::path::Path;

use arelax::train::experiment::ExperimentConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("fuzz-experiment.toml");
    if let Ok(exp) = ExperimentConfig::parse(path, &text) {
        assert!(!exp.conditions.is_empty() && !exp.seeds.is_empty() && !exp.datasets.is_empty());
    }
});
