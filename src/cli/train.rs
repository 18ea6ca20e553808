//! `arelax train`: the main job. Trains with AR (or a variant, or backprop) on MNIST or
//! Fashion-MNIST, printing one line per epoch, into a run directory.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args as ClapArgs;
use indicatif::{ProgressBar, ProgressStyle};

use super::common::DeviceArgs;
use crate::Result;
use crate::gpu::AdapterRequest;
use crate::train::run_dir::{Mode, RunDir};
use crate::train::{self, EpochMetrics, Overrides, Progress, TrainConfig};

#[derive(ClapArgs)]
pub struct Args {
    /// A TOML file of settings (the keys of a run's config.toml); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run directory [default: runs/<dataset>-<preset>-seed<seed>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last complete epoch (flags such as
    /// --epochs override its saved settings).
    #[arg(long, conflicts_with_all = ["out", "config"])]
    resume: Option<PathBuf>,
    /// Replace a run the output directory already holds.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    settings: Overrides,
    #[command(flatten)]
    device: DeviceArgs,
}

struct Bars {
    bar: Option<ProgressBar>,
    epochs: usize,
}

impl Progress for Bars {
    fn note(&mut self, line: &str) {
        println!("{line}");
    }
    fn epoch_start(&mut self, epoch: usize, batches: usize) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::new(batches as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:40}] {pos}/{len} batches, {per_sec}, eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, self.epochs));
        self.bar = Some(bar);
    }
    fn batches_done(&mut self, done: usize) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
        }
    }
    fn epoch_end(&mut self, m: &EpochMetrics) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let val = m
            .val_accuracy
            .map(|v| format!("  val {:.2}%", 100.0 * v))
            .unwrap_or_default();
        println!(
            "epoch {:>3}/{}  loss {:.4}  train {:.2}%  test {:.2}%{val}  angle {:.2}°  relax steps {:.1}  {:.0} samples/s",
            m.epoch,
            self.epochs,
            m.train_loss,
            100.0 * m.train_accuracy,
            100.0 * m.test_accuracy,
            m.grad_angle_deg,
            m.relax_steps_mean,
            m.samples_per_s
        );
    }
}

pub fn run(args: Args) -> Result<()> {
    let (cfg, out, mode) = match &args.resume {
        Some(dir) => {
            let saved = RunDir::saved_config(dir)?;
            let cfg = TrainConfig::resolve(Some(&saved), &args.settings)?;
            (cfg, dir.clone(), Mode::Resume)
        }
        None => {
            let file = args
                .config
                .as_deref()
                .map(TrainConfig::read_file)
                .transpose()?;
            let cfg = TrainConfig::resolve(file.as_ref(), &args.settings)?;
            let out = args.out.clone().unwrap_or_else(|| {
                PathBuf::from("runs").join(format!(
                    "{}-{}-seed{}",
                    cfg.dataset,
                    // The preset, else the algorithm (variants set by hand are in config.toml).
                    cfg.preset.as_deref().unwrap_or(match cfg.algorithm {
                        crate::engine::Algorithm::Ar => "ar",
                        crate::engine::Algorithm::Bp => "bp",
                    }),
                    cfg.seed
                ))
            });
            (cfg, out, if args.force { Mode::Force } else { Mode::New })
        }
    };
    let model = cfg.model()?;
    println!(
        "training {} on {} with {} ({} epochs, batch {}, lr {}, {} relaxation steps at eta {}), seed {}",
        model.describe(),
        cfg.dataset,
        condition(&cfg),
        cfg.epochs,
        cfg.batch_size,
        cfg.lr,
        cfg.relax_steps,
        cfg.relax_rate,
        cfg.seed
    );
    println!("run directory: {}", out.display());
    let mut bars = Bars {
        bar: None,
        epochs: cfg.epochs,
    };
    let request = AdapterRequest {
        name: args.device.adapter.clone(),
    };
    let result = train::run(&cfg, &request, &out, mode, &mut bars)?;
    println!("adapter: {}", result.adapter);
    if let Some(last) = result.metrics.last() {
        println!(
            "final test accuracy {:.2}% (loss {:.4}); wrote config.toml, metrics.csv, checkpoint.safetensors, curves.png",
            100.0 * last.test_accuracy,
            last.test_loss
        );
    }
    Ok(())
}

/// A short description of the learning rule.
pub fn condition(cfg: &TrainConfig) -> String {
    use crate::engine::{Algorithm, Feedback};
    if cfg.algorithm == Algorithm::Bp {
        return "exact backprop".into();
    }
    let fb = match cfg.feedback {
        Feedback::Transpose => "W feedback",
        Feedback::Random => "random feedback",
        Feedback::Learned => "learned feedback",
    };
    let mut s = format!(
        "AR ({fb}, f' in relaxation {}, in update {}",
        on(cfg.relax_derivative),
        on(cfg.update_derivative)
    );
    if let Some(t) = cfg.relax_tol {
        s.push_str(&format!(", adaptive tol {t}"));
    }
    use crate::train::config::{FprimeAt, UpdateInput};
    if cfg.relax_fprime == FprimeAt::Current {
        s.push_str(", f' at the current state in relaxation");
    }
    if cfg.update_fprime == FprimeAt::Current {
        s.push_str(", f' at the relaxed state in update");
    }
    if cfg.update_input == UpdateInput::Relaxed {
        s.push_str(", relaxed pre-synaptic input");
    }
    s.push(')');
    s
}

fn on(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}
