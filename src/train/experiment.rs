//! Experiments: a grid of conditions × seeds × data sets, each a normal run in its own directory
//! (so an interrupted experiment resumes where it stopped), summarised as mean ± std tables
//! (Markdown and CSV) and mean test-accuracy curves with a ±1 std band.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;

use super::config::{Overrides, parse_overrides};
use super::run_dir::{self, Mode, Status};
use super::{EpochMetrics, Progress, TrainConfig};
use crate::gpu::GpuContext;
use crate::plot::{Panel, Series, Stroke, save_png};
use crate::util::write_atomic;
use crate::{Error, Result};

/// An experiment file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// One condition each: a preset name (see `arelax train --help`), or an inline table with a
    /// `name` and any settings (e.g. `{ name = "no-frozen", relax_fprime = "current" }`).
    pub conditions: Vec<Condition>,
    pub seeds: Vec<u64>,
    pub datasets: Vec<String>,
    /// Where results go, unless `--out` is given.
    pub out: Option<PathBuf>,
    /// Data directory per data set name (else each data set's default).
    #[serde(default)]
    pub data: BTreeMap<String, PathBuf>,
    /// Settings shared by every run (the keys of `config.toml`).
    #[serde(default)]
    pub base: toml::Table,
    /// Seeds of one condition trained side by side as replicas of one engine (runs with
    /// adaptive relaxation go one at a time). Results match one-at-a-time runs. Default 1.
    pub parallel_seeds: Option<usize>,
}

/// A condition of an experiment: a preset, or named settings on top of `[base]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Condition {
    Preset(String),
    Custom(toml::Table),
}

impl Condition {
    /// The name in tables, plots and run directories.
    pub fn name(&self) -> String {
        match self {
            Condition::Preset(p) => p.clone(),
            Condition::Custom(t) => t
                .get("name")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
        }
    }
}

impl ExperimentConfig {
    /// How many seeds train side by side (at least 1).
    pub fn parallel_seeds(&self) -> usize {
        self.parallel_seeds.unwrap_or(1).max(1)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::util::read_settings(path)?;
        Self::parse(path, &text)
    }

    /// Parses and checks the text of an experiment file (`path` only names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| Error::file(path, e.message()))?;
        if cfg.conditions.is_empty() || cfg.seeds.is_empty() || cfg.datasets.is_empty() {
            return Err(Error::file(
                path,
                "conditions, seeds and datasets must each list at least one entry",
            ));
        }
        if cfg.parallel_seeds == Some(0) {
            return Err(Error::file(path, "parallel_seeds must be at least 1"));
        }
        for c in &cfg.conditions {
            let name = c.name();
            let safe = !name.is_empty()
                && name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
                && !name.starts_with('.');
            if !safe {
                return Err(Error::file(
                    path,
                    format!(
                        "condition '{name}': a condition needs a name of letters, digits, '-', '_' \
                         or '.' (it names a directory)"
                    ),
                ));
            }
        }
        // Check every run's settings before anything trains.
        for ds in &cfg.datasets {
            for c in &cfg.conditions {
                cfg.run_config(path, ds, c, cfg.seeds[0])?;
            }
        }
        Ok(cfg)
    }

    /// `[base]` with a custom condition's settings on top.
    fn settings(&self, path: &Path, condition: &Condition) -> Result<Overrides> {
        let mut table = self.base.clone();
        if let Condition::Custom(t) = condition {
            for (k, v) in t.iter().filter(|(k, _)| k.as_str() != "name") {
                table.insert(k.clone(), v.clone());
            }
        }
        let text = toml::to_string(&table).map_err(|e| Error::file(path, e))?;
        parse_overrides(path, &text).map_err(|e| {
            Error::file(
                path,
                format!("condition '{}' with [base]: {e}", condition.name()),
            )
        })
    }

    /// The resolved settings of one run.
    pub fn run_config(
        &self,
        path: &Path,
        dataset: &str,
        condition: &Condition,
        seed: u64,
    ) -> Result<TrainConfig> {
        let settings = self.settings(path, condition)?;
        let flags = Overrides {
            preset: match condition {
                Condition::Preset(p) => Some(p.clone()),
                Condition::Custom(_) => None,
            },
            dataset: Some(dataset.to_string()),
            data: self.data.get(dataset).cloned(),
            seed: Some(seed),
            ..Default::default()
        };
        let name = condition.name();
        TrainConfig::resolve(Some(&settings), &flags)
            .map_err(|e| Error::file(path, format!("{dataset}/{name}/seed {seed}: {e}")))
    }
}

/// Final-epoch statistics of one condition on one data set.
#[derive(Clone, Debug)]
pub struct Summary {
    pub dataset: String,
    pub condition: String,
    pub runs: usize,
    pub test_accuracy_mean: f64,
    pub test_accuracy_std: f64,
    pub grad_angle_mean: f64,
    pub diverged: usize,
    /// Mean and std of test accuracy per epoch (over runs that reached that epoch).
    pub curve: Vec<(f64, f64)>,
    /// Final test accuracy of each finished run, by seed.
    pub finals: Vec<(u64, f64)>,
}

/// The condition other conditions are compared with, seed by seed, in `results.md`.
pub const BASELINE: &str = "bp";

impl Summary {
    /// Mean difference in final test accuracy from `base` over the seeds both finished, and how
    /// many seeds that is (None if none): the comparison on the same seeds, so the same initial
    /// weights and batch order.
    pub fn paired_difference(&self, base: &Summary) -> Option<(f64, usize)> {
        let d: Vec<f64> = self
            .finals
            .iter()
            .filter_map(|(seed, a)| {
                let b = base.finals.iter().find(|(s, _)| s == seed)?;
                Some(a - b.1)
            })
            .collect();
        (!d.is_empty()).then(|| (d.iter().sum::<f64>() / d.len() as f64, d.len()))
    }
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// Limits on how much of the grid one invocation runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// Start no run after this instant (a started run finishes; the rest wait for the next
    /// invocation, which resumes the grid).
    pub deadline: Option<Instant>,
    /// Start no run that would end after this instant, judged by the longest run (or seed group)
    /// of this invocation so far; the first one always starts.
    pub end_by: Option<Instant>,
}

impl Limits {
    /// Whether a run may start at `now`, the longest so far having taken `longest`.
    pub fn may_start(&self, now: Instant, longest: Option<std::time::Duration>) -> bool {
        let before_deadline = self.deadline.is_none_or(|d| now < d);
        let ends_in_time = match (self.end_by, longest) {
            (Some(end), Some(l)) => now + l <= end,
            _ => true,
        };
        before_deadline && ends_in_time
    }
}

/// Whether runs of `cfg` can train side by side as replicas of one engine (adaptive relaxation
/// stops the whole dispatch at once).
fn replicable(cfg: &TrainConfig) -> bool {
    cfg.relax_tol.is_none()
}

/// Runs (or resumes) the runs of the grid, seed group by seed group (`parallel_seeds` seeds at a
/// time, so a time limit leaves whole groups of seeds of every condition rather than every seed
/// of a few), then summarises the runs that finished into `out`. Returns the summaries and how
/// many runs are still to do.
pub fn run(
    ctx: Arc<GpuContext>,
    exp: &ExperimentConfig,
    path: &Path,
    out: &Path,
    limits: Limits,
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<Summary>, usize)> {
    let mut left = 0;
    let mut longest = None;
    // Within a seed group, condition by condition (both data sets of the first condition, the
    // paper's AR, come first).
    for seeds in exp.seeds.chunks(exp.parallel_seeds()) {
        for condition in &exp.conditions {
            for ds in &exp.datasets {
                let cond = condition.name();
                // New runs of this group train together, and so do partial runs that stopped
                // after the same epoch.
                let mut fresh = Vec::new();
                let mut partial: BTreeMap<usize, Vec<(u64, PathBuf)>> = BTreeMap::new();
                for &seed in seeds {
                    let dir = run_path(out, ds, &cond, seed);
                    match run_dir::status(&dir)? {
                        Status::Finished(_) | Status::Diverged(..) => {}
                        Status::Partial(done) => partial.entry(done).or_default().push((seed, dir)),
                        Status::Pending => fresh.push((seed, dir)),
                    }
                }
                let cfg = exp.run_config(path, ds, condition, seeds[0])?;
                let together = replicable(&cfg);
                let mut batches: Vec<(Mode, Vec<(u64, PathBuf)>)> = Vec::new();
                for (mode, runs) in partial
                    .into_values()
                    .map(|r| (Mode::Resume, r))
                    .chain([(Mode::Force, fresh)])
                {
                    if together && !runs.is_empty() {
                        batches.push((mode, runs));
                    } else {
                        batches.extend(runs.into_iter().map(|r| (mode, vec![r])));
                    }
                }
                for (mode, runs) in batches {
                    if !limits.may_start(Instant::now(), longest) {
                        left += runs.len();
                        continue;
                    }
                    let started = Instant::now();
                    let results = super::run_seeds(ctx.clone(), &cfg, &runs, mode, &mut Quiet)?;
                    let took = started.elapsed();
                    longest = longest.max(Some(took));
                    let secs = took.as_secs_f64();
                    for ((seed, dir), result) in runs.iter().zip(results) {
                        match result {
                            Ok(r) => {
                                if let Some(last) = r.metrics.last() {
                                    progress(&format!(
                                        "{ds} {cond} seed {seed}: test accuracy {:.2}% after {} \
                                         epochs ({secs:.1} s{})",
                                        100.0 * last.test_accuracy,
                                        r.metrics.len(),
                                        if runs.len() > 1 {
                                            format!(", {} seeds side by side", runs.len())
                                        } else {
                                            String::new()
                                        }
                                    ));
                                }
                            }
                            Err(Error::Diverged(msg)) => {
                                progress(&format!("{ds} {cond} seed {seed}: {msg}"));
                                run_dir::mark_diverged(dir, &msg)?;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
        }
    }
    draw_missing_curves(exp, out);
    let summaries = summarise(exp, out)?;
    write_summaries(out, &summaries, exp.seeds.len())?;
    Ok((summaries, left))
}

fn run_path(out: &Path, ds: &str, cond: &str, seed: u64) -> PathBuf {
    out.join(ds).join(cond).join(format!("seed-{seed}"))
}

/// Draws `curves.png` for every run that has metrics but no plot (one trained where no font was
/// found, say), so that summarising a finished grid on another machine completes its plots.
fn draw_missing_curves(exp: &ExperimentConfig, out: &Path) {
    for ds in &exp.datasets {
        for condition in &exp.conditions {
            for &seed in &exp.seeds {
                let dir = run_path(out, ds, &condition.name(), seed);
                let png = dir.join(run_dir::CURVES);
                if png.exists() {
                    continue;
                }
                if let Ok(metrics) = run_dir::read_metrics(&dir.join(run_dir::METRICS))
                    && let Err(e) = run_dir::plot_curves(&png, &metrics)
                {
                    run_dir::warn_not_drawn(&png, &e);
                }
            }
        }
    }
}

/// Final-epoch statistics of every condition from the run directories under `out`.
pub fn summarise(exp: &ExperimentConfig, out: &Path) -> Result<Vec<Summary>> {
    let mut summaries = Vec::new();
    for ds in &exp.datasets {
        for condition in &exp.conditions {
            let cond = condition.name();
            let mut finals = Vec::new();
            let mut angles = Vec::new();
            let mut curves: Vec<Vec<EpochMetrics>> = Vec::new();
            let mut diverged = 0;
            for &seed in &exp.seeds {
                match run_dir::status(&run_path(out, ds, &cond, seed))? {
                    Status::Finished(metrics) => {
                        if let Some(last) = metrics.last() {
                            finals.push((seed, last.test_accuracy));
                            angles.push(last.grad_angle_deg);
                        }
                        curves.push(metrics);
                    }
                    Status::Diverged(metrics, _) => {
                        diverged += 1;
                        curves.push(metrics);
                    }
                    Status::Partial(_) | Status::Pending => {}
                }
            }
            let accuracies: Vec<f64> = finals.iter().map(|f| f.1).collect();
            let (m, s) = mean_std(&accuracies);
            let epochs = curves.iter().map(|c| c.len()).max().unwrap_or(0);
            let curve = (0..epochs)
                .map(|e| {
                    let v: Vec<f64> = curves
                        .iter()
                        .filter_map(|c| c.get(e).map(|r| r.test_accuracy))
                        .collect();
                    mean_std(&v)
                })
                .collect();
            summaries.push(Summary {
                dataset: ds.clone(),
                condition: cond.clone(),
                runs: finals.len(),
                test_accuracy_mean: m,
                test_accuracy_std: s,
                grad_angle_mean: mean_std(&angles).0,
                diverged,
                curve,
                finals,
            });
        }
    }
    Ok(summaries)
}

struct Quiet;
impl Progress for Quiet {}

fn pct(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else {
        format!("{:.2}", 100.0 * v)
    }
}

/// `results.md`, `results.csv` and one `accuracy-<dataset>.png` per data set. The tables are the
/// result: a plot that cannot be drawn (no font) is a warning. Where the grid has a [`BASELINE`]
/// condition, each other condition's final accuracy is also given as its mean difference from
/// it over the seeds both finished.
pub fn write_summaries(out: &Path, s: &[Summary], seeds: usize) -> Result<()> {
    let mut md = String::from(
        "| data set | condition | final test accuracy (%) mean ± std | runs | diverged | mean gradient angle to backprop (°) | vs bp, points (seeds paired) |\n|---|---|---|---|---|---|---|\n",
    );
    let mut csv = String::from(
        "dataset,condition,runs,diverged,test_accuracy_mean,test_accuracy_std,grad_angle_mean_deg,vs_bp_points,vs_bp_seeds\n",
    );
    for r in s {
        let vs_bp = s
            .iter()
            .find(|b| b.dataset == r.dataset && b.condition == BASELINE)
            .filter(|_| r.condition != BASELINE)
            .and_then(|b| r.paired_difference(b));
        md.push_str(&format!(
            "| {} | {} | {} ± {} | {}/{} | {} | {} | {} |\n",
            r.dataset,
            r.condition,
            pct(r.test_accuracy_mean),
            pct(r.test_accuracy_std),
            r.runs,
            seeds,
            r.diverged,
            if r.grad_angle_mean.is_nan() {
                "—".to_string()
            } else {
                format!("{:.2}", r.grad_angle_mean)
            },
            match vs_bp {
                Some((d, n)) => format!("{:+.2} ({n})", 100.0 * d),
                None => "—".to_string(),
            }
        ));
        let (d, n) = vs_bp.unwrap_or((f64::NAN, 0));
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            r.dataset,
            r.condition,
            r.runs,
            r.diverged,
            r.test_accuracy_mean,
            r.test_accuracy_std,
            r.grad_angle_mean,
            100.0 * d,
            n
        ));
    }
    write_atomic(&out.join("results.md"), md.as_bytes())?;
    write_atomic(&out.join("results.csv"), csv.as_bytes())?;
    let datasets: Vec<&String> = {
        let mut d: Vec<&String> = s.iter().map(|r| &r.dataset).collect();
        d.dedup();
        d
    };
    for ds in datasets {
        let series = s
            .iter()
            .filter(|r| &r.dataset == ds)
            .map(|r| Series {
                label: r.condition.clone(),
                points: r
                    .curve
                    .iter()
                    .enumerate()
                    .map(|(e, (m, _))| ((e + 1) as f64, 100.0 * m))
                    .collect(),
                band: Some(
                    r.curve
                        .iter()
                        .map(|(m, sd)| (100.0 * (m - sd), 100.0 * (m + sd)))
                        .collect(),
                ),
                stroke: Stroke::Solid,
                colour: None,
            })
            .collect();
        let png = out.join(format!("accuracy-{ds}.png"));
        let drawn = save_png(
            &png,
            &[Panel {
                title: format!("{ds}: mean test accuracy (±1 std over seeds)"),
                x_label: "epoch".into(),
                y_label: "test accuracy (%)".into(),
                log_x: false,
                log_y: false,
                series,
            }],
        );
        if let Err(e) = drawn {
            run_dir::warn_not_drawn(&png, &e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Limits;
    use std::time::{Duration, Instant};

    #[test]
    fn a_run_starts_only_if_the_longest_so_far_would_end_in_time() {
        let now = Instant::now();
        let s = Duration::from_secs;
        let end_by = Limits {
            end_by: Some(now + s(100)),
            ..Limits::default()
        };
        assert!(end_by.may_start(now, None), "the first run has no estimate");
        assert!(end_by.may_start(now, Some(s(100))));
        assert!(!end_by.may_start(now, Some(s(101))));
        assert!(!end_by.may_start(now + s(60), Some(s(50))));
        let deadline = Limits {
            deadline: Some(now + s(10)),
            ..Limits::default()
        };
        assert!(deadline.may_start(now, Some(s(1000))));
        assert!(!deadline.may_start(now + s(10), None));
        assert!(Limits::default().may_start(now, Some(s(1 << 20))));
    }
}
