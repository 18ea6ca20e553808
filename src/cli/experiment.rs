//! `arelax experiment`: a grid of conditions × seeds × data sets with a summary table and plots.

use std::path::PathBuf;

use clap::Args as ClapArgs;

use super::common::DeviceArgs;
use crate::train::experiment::{self, ExperimentConfig, Limits};
use crate::{Error, Result};
use std::time::{Duration, Instant};

#[derive(ClapArgs)]
pub struct Args {
    /// The experiment file (see experiments/*.toml).
    #[arg(long)]
    config: PathBuf,
    /// Output directory [default: the file's `out`, else runs/<file name>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Start no new run after this many minutes; the table covers the runs finished so far and
    /// the same command later continues the grid (runs go seed group by seed group).
    #[arg(long, value_name = "MINUTES")]
    time_limit: Option<f64>,
    /// Start no run that would end after this many minutes, judged by the longest run (or seed
    /// group) so far; the first always starts. For a fixed time slot, such as a borrowed GPU.
    #[arg(long, value_name = "MINUTES")]
    end_by: Option<f64>,
    /// Train this many seeds of a condition side by side, as replicas of one engine (overrides
    /// the file's `parallel_seeds`; runs with a fixed step count only: with `relax_tol` they go
    /// one by one).
    #[arg(long, value_name = "N")]
    parallel_seeds: Option<usize>,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: Args) -> Result<()> {
    let mut exp = ExperimentConfig::load(&args.config)?;
    if let Some(n) = args.parallel_seeds {
        if n == 0 {
            return Err(Error::Config("--parallel-seeds must be at least 1".into()));
        }
        exp.parallel_seeds = Some(n);
    }
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
    let mut needs = first.needs(exp.parallel_seeds())?;
    for condition in &exp.conditions {
        let cfg = exp.run_config(&args.config, &exp.datasets[0], condition, exp.seeds[0])?;
        needs.wide_workgroups |= cfg.needs(1)?.wide_workgroups;
    }
    let ctx = args.device.open(needs)?;
    println!("adapter: {}", ctx.describe());
    println!(
        "{} conditions × {} seeds × {} data sets into {} ({} seeds side by side)",
        exp.conditions.len(),
        exp.seeds.len(),
        exp.datasets.len(),
        out.display(),
        exp.parallel_seeds()
    );
    let limits = Limits {
        deadline: minutes_from_now("--time-limit", args.time_limit)?,
        end_by: minutes_from_now("--end-by", args.end_by)?,
    };
    let (summaries, left) = experiment::run(ctx, &exp, &args.config, &out, limits, &mut |line| {
        println!("{line}")
    })?;
    println!();
    print!(
        "{}",
        std::fs::read_to_string(out.join("results.md")).map_err(|e| Error::file(&out, e))?
    );
    let plots: Vec<String> = exp
        .datasets
        .iter()
        .map(|ds| format!("accuracy-{ds}.png"))
        .filter(|f| out.join(f).exists())
        .collect();
    println!(
        "wrote results.md, results.csv{}{} to {} ({} conditions)",
        if plots.is_empty() { "" } else { ", " },
        plots.join(", "),
        out.display(),
        summaries.len()
    );
    if left > 0 {
        println!(
            "time limit reached: {left} runs not started; run the same command again to continue"
        );
    }
    Ok(())
}

/// The instant `minutes` from now, if given.
fn minutes_from_now(flag: &str, minutes: Option<f64>) -> Result<Option<Instant>> {
    match minutes {
        Some(m) if m.is_finite() && m >= 0.0 => {
            Ok(Some(Instant::now() + Duration::from_secs_f64(m * 60.0)))
        }
        Some(m) => Err(Error::Config(format!(
            "{flag} {m}: give a number of minutes, 0 or more"
        ))),
        None => Ok(None),
    }
}
