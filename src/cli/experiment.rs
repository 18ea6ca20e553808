//! `arelax experiment`: a grid of conditions × seeds × data sets with a summary table and plots.

use std::path::PathBuf;

use clap::Args as ClapArgs;

use super::common::DeviceArgs;
use crate::train::experiment::{self, ExperimentConfig};
use crate::{Error, Result};

#[derive(ClapArgs)]
pub struct Args {
    /// The experiment file (see experiments/*.toml).
    #[arg(long)]
    config: PathBuf,
    /// Output directory [default: the file's `out`, else runs/<file name>].
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: Args) -> Result<()> {
    let exp = ExperimentConfig::load(&args.config)?;
    let out = args.out.clone().or(exp.out.clone()).unwrap_or_else(|| {
        let stem = args
            .config
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "experiment".into());
        PathBuf::from("runs").join(stem)
    });
    std::fs::create_dir_all(&out).map_err(|e| Error::file(&out, e))?;
    let first = exp.run_config(
        &args.config,
        &exp.datasets[0],
        &exp.conditions[0],
        exp.seeds[0],
    )?;
    let spec = first.spec()?;
    let ctx = args
        .device
        .open(crate::engine::needs(&spec, first.batch_size))?;
    println!("adapter: {}", ctx.describe());
    println!(
        "{} conditions × {} seeds × {} data sets into {}",
        exp.conditions.len(),
        exp.seeds.len(),
        exp.datasets.len(),
        out.display()
    );
    let summaries = experiment::run(ctx, &exp, &args.config, &out, &mut |line| {
        println!("{line}")
    })?;
    println!();
    print!(
        "{}",
        std::fs::read_to_string(out.join("results.md")).map_err(|e| Error::file(&out, e))?
    );
    println!(
        "wrote results.md, results.csv and accuracy-*.png to {} ({} conditions)",
        out.display(),
        summaries.len()
    );
    Ok(())
}
