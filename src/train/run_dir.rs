//! The run directory: `config.toml`, `metrics.csv`, `checkpoint.safetensors`, `curves.png` and
//! `state.json`, each written atomically, so an interrupted run always leaves the last complete
//! epoch loadable and resumable.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{EpochMetrics, TrainConfig};
use crate::checkpoint::TensorFile;
use crate::plot::{Panel, Series, save_png};
use crate::util::write_atomic;
use crate::{Error, Result};

pub const CONFIG: &str = "config.toml";
pub const METRICS: &str = "metrics.csv";
pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const CURVES: &str = "curves.png";
pub const STATE: &str = "state.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A new run; refuses a directory that already holds one.
    New,
    /// A new run that replaces whatever run the directory holds.
    Force,
    /// Continue the run in the directory from its last complete epoch.
    Resume,
}

pub struct RunDir {
    pub path: PathBuf,
    /// Whether [`RunDir::open`] created the directory (so a failed start may remove it).
    created: bool,
}

/// What a resumed run starts from.
pub struct Resumed {
    pub checkpoint: TensorFile,
    pub epochs_done: usize,
    pub metrics: Vec<EpochMetrics>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct State {
    epochs_done: usize,
    epochs: usize,
    finished: bool,
    /// Why the run stopped early, when it diverged (so experiments do not rerun it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    diverged: Option<String>,
}

/// Where a run directory stands.
#[derive(Clone, Debug)]
pub enum Status {
    /// Nothing to reuse: no run, or one that stopped before any epoch finished.
    Pending,
    /// Some epochs done (resumable from the checkpoint): how many, as far as the state says.
    Partial(usize),
    Finished(Vec<EpochMetrics>),
    /// Stopped by divergence: the metrics of the epochs that completed, and the reason.
    Diverged(Vec<EpochMetrics>, String),
}

/// Reads the state of the run directory at `path`.
pub fn status(path: &Path) -> Result<Status> {
    let dir = RunDir {
        path: path.to_path_buf(),
        created: false,
    };
    let metrics = || read_metrics(&path.join(METRICS)).or_else(|_| Ok::<_, Error>(Vec::new()));
    let state = dir.state();
    let done = state.as_ref().map_or(0, |s| s.epochs_done);
    match state {
        Some(State {
            diverged: Some(why),
            ..
        }) => Ok(Status::Diverged(metrics()?, why)),
        Some(State { finished: true, .. }) => {
            Ok(Status::Finished(read_metrics(&path.join(METRICS))?))
        }
        _ if path.join(CHECKPOINT).exists() => Ok(Status::Partial(done)),
        _ => Ok(Status::Pending),
    }
}

/// Records in the run's state that it diverged (the files of its last good epoch stay).
pub fn mark_diverged(path: &Path, why: &str) -> Result<()> {
    let dir = RunDir {
        path: path.to_path_buf(),
        created: false,
    };
    let mut s = dir.state().unwrap_or(State {
        epochs_done: 0,
        epochs: 0,
        finished: false,
        diverged: None,
    });
    s.diverged = Some(why.to_string());
    write_atomic(
        &path.join(STATE),
        serde_json::to_string_pretty(&s)
            .expect("state serialises")
            .as_bytes(),
    )
}

impl RunDir {
    pub fn open(path: &Path, mode: Mode) -> Result<Self> {
        let dir = Self {
            path: path.to_path_buf(),
            created: !path.exists(),
        };
        let has_run = [CONFIG, METRICS, CHECKPOINT, STATE]
            .iter()
            .any(|f| path.join(f).exists());
        match mode {
            Mode::New if has_run => {
                let what = match dir.state() {
                    Some(s) if s.finished => "a finished run".to_string(),
                    Some(s) => format!(
                        "an unfinished run ({} of {} epochs)",
                        s.epochs_done, s.epochs
                    ),
                    None => "files of a run".to_string(),
                };
                return Err(Error::file(
                    path,
                    format!(
                        "holds {what}; pass --resume to continue it or --force to overwrite it"
                    ),
                ));
            }
            Mode::Force => {
                for f in [CONFIG, METRICS, CHECKPOINT, CURVES, STATE] {
                    let p = path.join(f);
                    if p.exists() {
                        std::fs::remove_file(&p).map_err(|e| Error::file(&p, e))?;
                    }
                }
            }
            Mode::Resume if !path.join(CHECKPOINT).exists() => {
                return Err(Error::file(
                    path,
                    "has no checkpoint.safetensors to resume from (no epoch finished yet?)",
                ));
            }
            _ => {}
        }
        std::fs::create_dir_all(path).map_err(|e| Error::file(path, e))?;
        Ok(dir)
    }

    /// Removes the directory again if `open` created it and nothing was written into it: a run
    /// that fails before its first file leaves no empty directory behind.
    pub fn discard_if_unused(&self) {
        if self.created {
            // remove_dir only removes an empty directory; anything written there stays.
            let _ = std::fs::remove_dir(&self.path);
        }
    }

    fn state(&self) -> Option<State> {
        let text = std::fs::read_to_string(self.path.join(STATE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The saved config of the run (the base layer when resuming).
    pub fn saved_config(path: &Path) -> Result<super::Overrides> {
        TrainConfig::read_file(&path.join(CONFIG))
    }

    /// Loads the last complete epoch's checkpoint and the metrics up to it.
    pub fn resume_state(&self) -> Result<Resumed> {
        let ckpt_path = self.path.join(CHECKPOINT);
        let checkpoint = TensorFile::load(&ckpt_path)?;
        let epochs_done: usize = checkpoint
            .metadata
            .get("epoch")
            .and_then(|e| e.parse().ok())
            .ok_or_else(|| {
                Error::file(
                    &ckpt_path,
                    "has no 'epoch' metadata; not an arelax run checkpoint",
                )
            })?;
        let mut metrics = read_metrics(&self.path.join(METRICS))?;
        if metrics.len() < epochs_done {
            return Err(Error::file(
                self.path.join(METRICS),
                format!(
                    "has {} rows but the checkpoint is at epoch {epochs_done}",
                    metrics.len()
                ),
            ));
        }
        metrics.truncate(epochs_done);
        Ok(Resumed {
            checkpoint,
            epochs_done,
            metrics,
        })
    }

    pub fn write_config(&self, cfg: &TrainConfig) -> Result<()> {
        write_atomic(&self.path.join(CONFIG), cfg.to_toml().as_bytes())
    }

    /// Checkpoint first, then metrics, plot and state: whatever is on disk is consistent with a
    /// complete epoch, and the checkpoint is never older than the state says.
    pub fn save_epoch(&self, ckpt: &TensorFile, metrics: &[EpochMetrics]) -> Result<()> {
        ckpt.save(&self.path.join(CHECKPOINT))?;
        write_atomic(&self.path.join(METRICS), metrics_csv(metrics).as_bytes())?;
        let png = self.path.join(CURVES);
        if let Err(e) = plot_curves(&png, metrics) {
            warn_not_drawn(&png, &e);
        }
        let epochs = ckpt
            .metadata
            .get("config")
            .and_then(|c| toml::from_str::<TrainConfig>(c).ok())
            .map(|c| c.epochs)
            .unwrap_or(metrics.len());
        self.write_state(metrics.len(), epochs, false)
    }

    pub fn finish(&self, metrics: &[EpochMetrics]) -> Result<()> {
        self.write_state(metrics.len(), metrics.len(), true)
    }

    fn write_state(&self, done: usize, epochs: usize, finished: bool) -> Result<()> {
        let s = State {
            epochs_done: done,
            epochs,
            finished,
            diverged: None,
        };
        write_atomic(
            &self.path.join(STATE),
            serde_json::to_string_pretty(&s)
                .expect("state serialises")
                .as_bytes(),
        )
    }
}

const HEADER: &str = "epoch,train_loss,train_accuracy,test_loss,test_accuracy,val_loss,val_accuracy,grad_angle_deg,relax_steps_mean,samples_per_s,seconds";

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x}")).unwrap_or_default()
}

pub fn metrics_csv(rows: &[EpochMetrics]) -> String {
    let mut s = String::from(HEADER);
    s.push('\n');
    for m in rows {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{}\n",
            m.epoch,
            m.train_loss,
            m.train_accuracy,
            m.test_loss,
            m.test_accuracy,
            opt(m.val_loss),
            opt(m.val_accuracy),
            m.grad_angle_deg,
            m.relax_steps_mean,
            m.samples_per_s,
            m.seconds
        ));
    }
    s
}

pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(Error::file(
            path,
            "unexpected header; not an arelax metrics file",
        ));
    }
    lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let bad = || Error::file(path, format!("line {}: malformed row", i + 2));
            let f: Vec<&str> = l.split(',').collect();
            if f.len() != 11 {
                return Err(bad());
            }
            let num = |s: &str| s.parse::<f64>().map_err(|_| bad());
            let optn = |s: &str| {
                if s.is_empty() {
                    Ok(None)
                } else {
                    num(s).map(Some)
                }
            };
            Ok(EpochMetrics {
                epoch: f[0].parse().map_err(|_| bad())?,
                train_loss: num(f[1])?,
                train_accuracy: num(f[2])?,
                test_loss: num(f[3])?,
                test_accuracy: num(f[4])?,
                val_loss: optn(f[5])?,
                val_accuracy: optn(f[6])?,
                grad_angle_deg: num(f[7])?,
                relax_steps_mean: num(f[8])?,
                samples_per_s: num(f[9])?,
                seconds: num(f[10])?,
            })
        })
        .collect()
}

/// A plot that cannot be drawn (no font, say) is a warning, printed once per process: it would
/// otherwise repeat every epoch of every run.
pub fn warn_not_drawn(path: &Path, e: &Error) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "warning: {} not drawn: {e} (further plot warnings are not shown)",
            path.display()
        );
    }
}

/// Accuracy and loss per epoch.
pub fn plot_curves(path: &Path, m: &[EpochMetrics]) -> Result<()> {
    let line = |label: &str, f: &dyn Fn(&EpochMetrics) -> Option<f64>| {
        let points = m.iter().filter_map(|r| f(r).map(|v| (r.epoch as f64, v)));
        Series::line(label, points.collect())
    };
    let mut acc = vec![
        line("train", &|r| Some(100.0 * r.train_accuracy)),
        line("test", &|r| Some(100.0 * r.test_accuracy)),
    ];
    let mut loss = vec![
        line("train", &|r| Some(r.train_loss)),
        line("test", &|r| Some(r.test_loss)),
    ];
    if m.iter().any(|r| r.val_accuracy.is_some()) {
        acc.push(line("validation", &|r| r.val_accuracy.map(|a| 100.0 * a)));
        loss.push(line("validation", &|r| r.val_loss));
    }
    save_png(
        path,
        &[
            Panel {
                title: "accuracy".into(),
                x_label: "epoch".into(),
                y_label: "accuracy (%)".into(),
                log_x: false,
                log_y: false,
                series: acc,
            },
            Panel {
                title: "loss per sample".into(),
                x_label: "epoch".into(),
                y_label: "loss".into(),
                log_x: false,
                log_y: true,
                series: loss,
            },
        ],
    )
}
