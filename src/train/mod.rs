//! The training loop: epochs of GPU-resident batches, metrics once per epoch, atomic checkpoints,
//! and resumption that reproduces an uninterrupted run bit for bit.

pub mod config;
pub mod experiment;
pub mod run_dir;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::checkpoint::TensorFile;
use crate::data::{self, DatasetKind, Split};
use crate::engine::Algorithm;
use crate::engine::feed::BatchTarget;
use crate::engine::feed::{DeviceSplit, EpochSums};
use crate::engine::net::{Model, Net, ParamGroup};
use crate::gpu::{AdapterRequest, GpuContext};
use crate::metrics::{compare_groups, mean_angle};
use crate::rng::Rng;
use crate::{Error, Result};
pub use config::{Overrides, TrainConfig};
use run_dir::RunDir;

/// Batches encoded into one command buffer: one submit per this many training steps.
const STEPS_PER_SUBMIT: usize = 16;

/// One row of `metrics.csv`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    /// Mean over layers of the angle between this condition's and backprop's weight gradients.
    pub grad_angle_deg: f64,
    /// Mean relaxation steps a batch used (below the cap only with `relax_tol`).
    pub relax_steps_mean: f64,
    pub samples_per_s: f64,
    pub seconds: f64,
}

/// How the loop reports progress (the CLI draws bars; experiments and tests stay quiet).
pub trait Progress {
    /// A one-line remark about the run (such as a choice made on the device).
    fn note(&mut self, _line: &str) {}
    fn epoch_start(&mut self, _epoch: usize, _batches: usize) {}
    fn batches_done(&mut self, _done: usize) {}
    fn epoch_end(&mut self, _m: &EpochMetrics) {}
}

/// Reports nothing.
pub struct Quiet;
impl Progress for Quiet {}

/// What a finished (or stopped) run leaves behind.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub metrics: Vec<EpochMetrics>,
    pub params: Vec<ParamGroup>,
    pub adapter: String,
}

/// Data prepared for a config: the splits after limits and the validation hold-out.
pub struct Prepared {
    pub train: Split,
    pub test: Split,
    pub val: Option<Split>,
}

fn take(split: &Split, n: Option<usize>) -> Split {
    let n = n.unwrap_or(split.len).min(split.len);
    let size = split.images.len() / split.len.max(1);
    Split {
        images: split.images[..n * size].to_vec(),
        labels: split.labels[..n].to_vec(),
        len: n,
    }
}

pub fn prepare_data(cfg: &TrainConfig) -> Result<Prepared> {
    let kind: DatasetKind = cfg.dataset.parse().map_err(Error::Config)?;
    let dir = cfg.data.clone().unwrap_or_else(|| kind.default_dir());
    let mut ds = data::load(&dir, kind)?;
    let val = if cfg.validation > 0 {
        Some(ds.split_validation(cfg.validation)?)
    } else {
        None
    };
    Ok(Prepared {
        train: take(&ds.train, cfg.train_limit),
        test: take(&ds.test, cfg.test_limit),
        val,
    })
}

/// The permutation of training samples for `epoch`, a function of the seed alone.
pub fn epoch_order(seed: u64, epoch: usize, len: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..len as u32).collect();
    Rng::stream(seed, 1000 + epoch as u64).shuffle(&mut order);
    order
}

/// A training session on one device.
pub struct Trainer {
    pub cfg: TrainConfig,
    pub net: Net,
    train: DeviceSplit,
    test: DeviceSplit,
    val: Option<DeviceSplit>,
}

impl Trainer {
    pub fn new(ctx: Arc<GpuContext>, cfg: &TrainConfig, data: &Prepared) -> Result<Self> {
        cfg.validate()?;
        let net = Net::new(ctx, &cfg.model()?, cfg.engine_options())?;
        let train = DeviceSplit::new(&net, &data.train, true)?;
        let test = DeviceSplit::new(&net, &data.test, false)?;
        let val = data
            .val
            .as_ref()
            .map(|v| DeviceSplit::new(&net, v, false))
            .transpose()?;
        Ok(Self {
            cfg: cfg.clone(),
            net,
            train,
            test,
            val,
        })
    }

    /// Trains one epoch (0-based `epoch`) and measures it.
    pub fn epoch(&mut self, epoch: usize, progress: &mut dyn Progress) -> Result<EpochMetrics> {
        let ctx = BatchTarget::context(&self.net).clone();
        let order = epoch_order(self.cfg.seed, epoch, self.train.len);
        self.train.set_order(&self.net, &order)?;
        let batches = self.train.batches;
        progress.epoch_start(epoch, batches);
        let started = Instant::now();
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        self.train.encode_reset(&mut enc);
        self.net.encode_relax_counter_reset(&mut enc);
        let mut in_flight = None;
        for k in 0..batches {
            self.train.encode_gather(&self.net, &mut enc, k);
            self.net
                .encode_train_step(&mut enc, self.cfg.algorithm, self.cfg.relax_steps);
            self.train.encode_accumulate(&mut enc, k);
            if (k + 1) % STEPS_PER_SUBMIT == 0 || k + 1 == batches {
                let full = std::mem::replace(
                    &mut enc,
                    ctx.device.create_command_encoder(&Default::default()),
                );
                let index = ctx.queue.submit([full.finish()]);
                // At most two chunks queued: the GPU works on one while we encode the next.
                if let Some(previous) = in_flight.replace(index) {
                    ctx.wait_for(previous)?;
                }
                progress.batches_done(k + 1);
            }
        }
        drop(enc);
        ctx.wait()?;
        let sums = self.train.read_sums(&self.net)?;
        let seconds = started.elapsed().as_secs_f64();
        if let Some(b) = sums.diverged_at {
            return Err(Error::Diverged(format!(
                "training diverged: the loss became non-finite in epoch {} at batch {b} \
                 (seed {}, lr {}, relax rate {}); the last good checkpoint is kept",
                epoch + 1,
                self.cfg.seed,
                self.cfg.lr,
                self.cfg.relax_rate
            )));
        }
        let steps_used = match self.cfg.algorithm {
            Algorithm::Bp => 0.0,
            Algorithm::Ar => self.net.relax_steps_used(batches, self.cfg.relax_steps)?,
        };
        let test = self.test.evaluate(&self.net)?;
        let val = self
            .val
            .as_ref()
            .map(|v| v.evaluate(&self.net))
            .transpose()?;
        let angle = self.gradient_angle()?;
        let m = EpochMetrics {
            epoch: epoch + 1,
            train_loss: sums.mean_loss(),
            train_accuracy: sums.accuracy(),
            test_loss: test.mean_loss(),
            test_accuracy: test.accuracy(),
            val_loss: val.map(|v: EpochSums| v.mean_loss()),
            val_accuracy: val.map(|v| v.accuracy()),
            grad_angle_deg: angle,
            relax_steps_mean: steps_used,
            samples_per_s: (batches * self.cfg.batch_size) as f64 / seconds,
            seconds,
        };
        progress.epoch_end(&m);
        Ok(m)
    }

    /// Mean angle between this condition's gradient and backprop's on the first test batch.
    fn gradient_angle(&mut self) -> Result<f64> {
        let ctx = BatchTarget::context(&self.net).clone();
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        self.test.encode_gather(&self.net, &mut enc, 0);
        ctx.queue.submit([enc.finish()]);
        let bp = self.net.bp_gradients()?;
        if self.cfg.algorithm == Algorithm::Bp {
            return Ok(0.0);
        }
        let ar = self.net.ar_gradients(self.cfg.relax_steps)?;
        Ok(mean_angle(&compare_groups(&ar, &bp)))
    }

    /// Test loss and accuracy of the current parameters.
    pub fn evaluate_test(&self) -> Result<EpochSums> {
        self.test.evaluate(&self.net)
    }

    /// Parameters, ψ and metadata as a checkpoint.
    pub fn checkpoint(&self, epochs_done: usize) -> Result<TensorFile> {
        let mut f = TensorFile::default();
        self.net.save_state(&mut f)?;
        f.metadata.insert("epoch".into(), epochs_done.to_string());
        f.metadata.insert("config".into(), self.cfg.to_toml());
        if let Model::Graph(g) = self.net.model() {
            f.metadata.insert("model".into(), g.source.clone());
        }
        f.metadata
            .insert("format".into(), "arelax-checkpoint-1".into());
        Ok(f)
    }
}

/// Trains `cfg` into the run directory `out`, resuming if asked. Every finished epoch is
/// checkpointed atomically before the next begins.
pub fn run(
    cfg: &TrainConfig,
    device: &AdapterRequest,
    out: &Path,
    mode: run_dir::Mode,
    progress: &mut dyn Progress,
) -> Result<RunResult> {
    cfg.validate()?;
    let needs = cfg.model()?.needs(cfg.batch_size);
    let ctx = Arc::new(GpuContext::new(device, needs)?);
    run_with(ctx, cfg, out, mode, progress)
}

/// Settles `relax_kernel = "auto"`: a resumed run keeps the kernel its directory records (so it
/// continues bit for bit); a new run takes the faster on this device, timing a few training steps
/// of each with the run's model, batch size and step count.
fn resolve_relax_kernel(
    ctx: &Arc<GpuContext>,
    cfg: &TrainConfig,
    dir: &RunDir,
    mode: run_dir::Mode,
    progress: &mut dyn Progress,
) -> Result<TrainConfig> {
    use config::KernelChoice;
    let mut cfg = cfg.clone();
    if cfg.relax_kernel != KernelChoice::Auto {
        return Ok(cfg);
    }
    if mode == run_dir::Mode::Resume
        && let Ok(saved) = RunDir::saved_config(&dir.path)
        && let Ok(base) = TrainConfig::resolve(Some(&saved), &Overrides::default())
        && base.relax_kernel != KernelChoice::Auto
    {
        cfg.relax_kernel = base.relax_kernel;
        return Ok(cfg);
    }
    cfg.relax_kernel = KernelChoice::Tiled;
    let mut resident = cfg.clone();
    resident.relax_kernel = KernelChoice::Resident;
    let model = cfg.model()?;
    if cfg.algorithm != Algorithm::Ar || !matches!(model, Model::Mlp(_)) {
        return Ok(cfg);
    }
    let resident_ms = match time_training_steps(ctx, &model, &resident) {
        Ok(ms) => ms,
        // Settings the resident kernel does not handle (wide layers, adaptive, sweep, ...).
        Err(Error::Config(_)) => return Ok(cfg),
        Err(e) => return Err(e),
    };
    let tiled_ms = time_training_steps(ctx, &model, &cfg)?;
    progress.note(&format!(
        "relaxation kernel: measured {tiled_ms:.3} ms per training step tiled, {resident_ms:.3} ms \
         resident; using {}",
        if resident_ms < tiled_ms {
            "resident"
        } else {
            "tiled"
        }
    ));
    Ok(if resident_ms < tiled_ms {
        resident
    } else {
        cfg
    })
}

/// Wall milliseconds per training step of `cfg` (weights frozen, random data), steps submitted
/// back to back as in training, after a warm-up.
fn time_training_steps(ctx: &Arc<GpuContext>, model: &Model, cfg: &TrainConfig) -> Result<f64> {
    let mut opts = cfg.engine_options();
    opts.lr = 0.0;
    let mut net = Net::new(ctx.clone(), model, opts)?;
    net.initialise(cfg.init()?, cfg.feedback_init()?, cfg.seed)?;
    net.set_random_batch(cfg.seed)?;
    for _ in 0..2 {
        net.train_step(cfg.algorithm, cfg.relax_steps);
    }
    net.finish()?;
    const STEPS: usize = 5;
    let t = Instant::now();
    for _ in 0..STEPS {
        net.train_step(cfg.algorithm, cfg.relax_steps);
    }
    net.finish()?;
    Ok(t.elapsed().as_secs_f64() * 1e3 / STEPS as f64)
}

/// [`run`] on an open device (experiments share one).
pub fn run_with(
    ctx: Arc<GpuContext>,
    cfg: &TrainConfig,
    out: &Path,
    mode: run_dir::Mode,
    progress: &mut dyn Progress,
) -> Result<RunResult> {
    cfg.validate()?;
    let dir = RunDir::open(out, mode)?;
    let cfg = &resolve_relax_kernel(&ctx, cfg, &dir, mode, progress)?;
    let data = prepare_data(cfg)?;
    let adapter = ctx.describe();
    let mut trainer = Trainer::new(ctx, cfg, &data)?;
    let (mut metrics, start) = match mode {
        run_dir::Mode::Resume => {
            let r = dir.resume_state()?;
            trainer
                .net
                .load_state(&r.checkpoint, &dir.path.join(run_dir::CHECKPOINT))?;
            (r.metrics, r.epochs_done)
        }
        _ => {
            trainer
                .net
                .initialise(cfg.init()?, cfg.feedback_init()?, cfg.seed)?;
            (Vec::new(), 0)
        }
    };
    dir.write_config(cfg)?;
    for epoch in start..cfg.epochs {
        let m = trainer.epoch(epoch, progress)?;
        metrics.push(m);
        let params = trainer.net.params()?;
        if !params
            .iter()
            .all(|g| g.weight.iter().chain(&g.bias).all(|v| v.is_finite()))
        {
            return Err(Error::Diverged(format!(
                "training diverged: non-finite weights after epoch {} (seed {}); the last good \
                 checkpoint is kept",
                epoch + 1,
                cfg.seed
            )));
        }
        dir.save_epoch(&trainer.checkpoint(epoch + 1)?, &metrics)?;
    }
    dir.finish(&metrics)?;
    Ok(RunResult {
        metrics,
        params: trainer.net.params()?,
        adapter,
    })
}
