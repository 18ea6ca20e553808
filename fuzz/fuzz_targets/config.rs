//! The training-settings parser: TOML overrides, resolution and validation, and the round trip
//! through the `config.toml` a run writes (`--resume` reads it back).
#![no_main]

use std::path::Path;

use arelax::train::TrainConfig;
use arelax::train::config::{Overrides, parse_overrides};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("fuzz.toml");
    let Ok(o) = parse_overrides(path, &text) else {
        return;
    };
    let Ok(cfg) = TrainConfig::resolve(Some(&o), &Overrides::default()) else {
        return;
    };
    let written = cfg.to_toml();
    let o2 = parse_overrides(path, &written)
        .unwrap_or_else(|e| panic!("written config does not parse: {e}\n{written}"));
    let cfg2 = TrainConfig::resolve(Some(&o2), &Overrides::default())
        .unwrap_or_else(|e| panic!("written config does not resolve: {e}\n{written}"));
    assert_eq!(
        cfg, cfg2,
        "config changed in the round trip through\n{written}"
    );
});
