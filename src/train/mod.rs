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
use crate::engine::feed::BatchTarget;
use crate::engine::feed::{DeviceSplit, EpochSums};
use crate::engine::net::{Model, Net, ParamGroup};
use crate::engine::tune;
use crate::engine::{Algorithm, EngineOptions};
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

/// A training session on one device: one run, or several seeds of the same settings trained
/// side by side as replicas of one engine.
pub struct Trainer {
    /// The settings of replica 0 (the others differ only in their seed).
    pub cfg: TrainConfig,
    /// One seed per replica.
    pub seeds: Vec<u64>,
    pub net: Net,
    train: DeviceSplit,
    test: DeviceSplit,
    val: Option<DeviceSplit>,
}

/// One replica's epoch: its metrics, or why it diverged.
pub type ReplicaEpoch = std::result::Result<EpochMetrics, String>;

impl Trainer {
    pub fn new(ctx: Arc<GpuContext>, cfg: &TrainConfig, data: &Prepared) -> Result<Self> {
        Self::with_seeds(ctx, cfg, data, &[cfg.seed])
    }

    /// `cfg` once per seed, all in the same dispatches (see
    /// [`crate::engine::EngineOptions::replicas`]).
    pub fn with_seeds(
        ctx: Arc<GpuContext>,
        cfg: &TrainConfig,
        data: &Prepared,
        seeds: &[u64],
    ) -> Result<Self> {
        cfg.validate()?;
        if seeds.is_empty() {
            return Err(Error::Config("a trainer needs at least one seed".into()));
        }
        let mut opts = cfg.engine_options();
        opts.replicas = seeds.len();
        let net = Net::new(ctx, &cfg.model()?, opts)?;
        let train = DeviceSplit::new(&net, &data.train, true)?;
        let test = DeviceSplit::new(&net, &data.test, false)?;
        let val = data
            .val
            .as_ref()
            .map(|v| DeviceSplit::new(&net, v, false))
            .transpose()?;
        let mut cfg = cfg.clone();
        cfg.seed = seeds[0];
        Ok(Self {
            cfg,
            seeds: seeds.to_vec(),
            net,
            train,
            test,
            val,
        })
    }

    /// The settings of replica `k`.
    pub fn replica_config(&self, k: usize) -> TrainConfig {
        let mut c = self.cfg.clone();
        c.seed = self.seeds[k];
        c
    }

    /// Seeded initial parameters for every replica.
    pub fn initialise(&self) -> Result<()> {
        for (k, &seed) in self.seeds.iter().enumerate() {
            self.net
                .initialise_replica(k, self.cfg.init()?, self.cfg.feedback_init()?, seed)?;
        }
        Ok(())
    }

    /// Trains one epoch (0-based `epoch`) of a single run and measures it.
    pub fn epoch(&mut self, epoch: usize, progress: &mut dyn Progress) -> Result<EpochMetrics> {
        let mut all = self.epoch_replicas(epoch, progress)?;
        all.swap_remove(0).map_err(Error::Diverged)
    }

    /// Trains one epoch of every replica (each through its own seed's sample order) and
    /// measures each.
    pub fn epoch_replicas(
        &mut self,
        epoch: usize,
        progress: &mut dyn Progress,
    ) -> Result<Vec<ReplicaEpoch>> {
        let ctx = BatchTarget::context(&self.net).clone();
        for (k, &seed) in self.seeds.iter().enumerate() {
            let order = epoch_order(seed, epoch, self.train.len);
            self.train.set_replica_order(&self.net, k, &order)?;
        }
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
        let sums = self.train.read_replica_sums(&self.net)?;
        let seconds = started.elapsed().as_secs_f64();
        let steps_used = match self.cfg.algorithm {
            Algorithm::Bp => 0.0,
            Algorithm::Ar => self.net.relax_steps_used(batches, self.cfg.relax_steps)?,
        };
        let test = self.test.evaluate_replicas(&self.net)?;
        let val = self
            .val
            .as_ref()
            .map(|v| v.evaluate_replicas(&self.net))
            .transpose()?;
        let angles = self.gradient_angles()?;
        let mut out = Vec::with_capacity(self.seeds.len());
        for (k, sums) in sums.iter().enumerate() {
            if let Some(b) = sums.diverged_at {
                out.push(Err(format!(
                    "training diverged: the loss became non-finite in epoch {} at batch {b} \
                     (seed {}, lr {}, relax rate {}); the last good checkpoint is kept",
                    epoch + 1,
                    self.seeds[k],
                    self.cfg.lr,
                    self.cfg.relax_rate
                )));
                continue;
            }
            let m = EpochMetrics {
                epoch: epoch + 1,
                train_loss: sums.mean_loss(),
                train_accuracy: sums.accuracy(),
                test_loss: test[k].mean_loss(),
                test_accuracy: test[k].accuracy(),
                val_loss: val.as_ref().map(|v: &Vec<EpochSums>| v[k].mean_loss()),
                val_accuracy: val.as_ref().map(|v| v[k].accuracy()),
                grad_angle_deg: angles[k],
                relax_steps_mean: steps_used,
                samples_per_s: (batches * self.cfg.batch_size) as f64 / seconds,
                seconds,
            };
            progress.epoch_end(&m);
            out.push(Ok(m));
        }
        Ok(out)
    }

    /// Per replica, the mean angle between this condition's gradient and backprop's on the
    /// first test batch.
    fn gradient_angles(&mut self) -> Result<Vec<f64>> {
        let ctx = BatchTarget::context(&self.net).clone();
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        self.test.encode_gather(&self.net, &mut enc, 0);
        ctx.queue.submit([enc.finish()]);
        if self.cfg.algorithm == Algorithm::Bp {
            return Ok(vec![0.0; self.seeds.len()]);
        }
        let bp = self.net.replica_bp_gradients()?;
        let ar = self.net.replica_ar_gradients(self.cfg.relax_steps)?;
        Ok(ar
            .iter()
            .zip(&bp)
            .map(|(a, b)| mean_angle(&compare_groups(a, b)))
            .collect())
    }

    /// Test loss and accuracy of the current parameters (of replica 0).
    pub fn evaluate_test(&self) -> Result<EpochSums> {
        self.test.evaluate(&self.net)
    }

    /// Parameters, ψ and metadata of replica 0 as a checkpoint.
    pub fn checkpoint(&self, epochs_done: usize) -> Result<TensorFile> {
        self.replica_checkpoint(0, epochs_done)
    }

    /// Parameters, ψ and metadata of replica `k` as a checkpoint.
    pub fn replica_checkpoint(&self, k: usize, epochs_done: usize) -> Result<TensorFile> {
        let mut f = TensorFile::default();
        self.net.save_replica_state(k, &mut f)?;
        f.metadata.insert("epoch".into(), epochs_done.to_string());
        f.metadata
            .insert("config".into(), self.replica_config(k).to_toml());
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
    let ctx = Arc::new(GpuContext::new(device, cfg.needs(1)?)?);
    run_with(ctx, cfg, out, mode, progress)
}

/// Settles `relax_kernel = "auto"`: a resumed run keeps the kernel its directory records (so it
/// continues bit for bit); a new run takes the faster on this device, timing a few training steps
/// of each with the run's model, batch size, step count and number of seeds side by side.
fn resolve_relax_kernel(
    ctx: &Arc<GpuContext>,
    cfg: &TrainConfig,
    replicas: usize,
    dir: &RunDir,
    mode: run_dir::Mode,
    progress: &mut dyn Progress,
) -> Result<TrainConfig> {
    use config::KernelChoice;
    let mut cfg = cfg.clone();
    if cfg.relax_kernel != KernelChoice::Auto {
        return Ok(cfg);
    }
    if let Some(base) = saved_settings(dir, mode)
        && base.relax_kernel != KernelChoice::Auto
    {
        cfg.relax_kernel = base.relax_kernel;
        return Ok(cfg);
    }
    cfg.relax_kernel = KernelChoice::Tiled;
    let model = cfg.model()?;
    if cfg.algorithm != Algorithm::Ar || !matches!(model, Model::Mlp(_)) {
        return Ok(cfg);
    }
    let configs: Vec<TrainConfig> = [
        KernelChoice::Tiled,
        KernelChoice::Resident,
        KernelChoice::Cooperative,
    ]
    .into_iter()
    .map(|relax_kernel| TrainConfig {
        relax_kernel,
        ..cfg.clone()
    })
    .collect();
    let options: Vec<_> = configs
        .iter()
        .map(|c| EngineOptions {
            replicas,
            ..c.engine_options()
        })
        .collect();
    let work = workload(&cfg)?;
    let mut timed = Vec::new();
    for (c, ms) in configs
        .into_iter()
        .zip(tune::contest(ctx, &model, &options, &work)?)
    {
        match ms {
            Ok(ms) => timed.push((c, ms)),
            // The others may not handle these settings (wide layers, adaptive, sweep, ...), and
            // a cooperative kernel's workgroups may not all run at once here.
            Err(e) if c.relax_kernel == KernelChoice::Tiled => return Err(e),
            Err(_) => {}
        }
    }
    let best = timed
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("tiled is always timed")
        .0
        .clone();
    let parts: Vec<String> = timed
        .iter()
        .map(|(c, ms)| format!("{ms:.3} ms {}", c.engine_options().relax_kernel))
        .collect();
    progress.note(&format!(
        "relaxation kernel: measured per training step {}; using {}",
        parts.join(", "),
        best.engine_options().relax_kernel
    ));
    Ok(best)
}

/// What timing a training step of `cfg` runs.
fn workload(cfg: &TrainConfig) -> Result<tune::Workload> {
    Ok(tune::Workload {
        algorithm: cfg.algorithm,
        steps: cfg.relax_steps,
        init: cfg.init()?,
        feedback_init: cfg.feedback_init()?,
        seed: cfg.seed,
    })
}

/// The settings a resumed run's directory records (None for a new run, or none readable).
fn saved_settings(dir: &RunDir, mode: run_dir::Mode) -> Option<TrainConfig> {
    if mode != run_dir::Mode::Resume {
        return None;
    }
    let saved = RunDir::saved_config(&dir.path).ok()?;
    TrainConfig::resolve(Some(&saved), &Overrides::default()).ok()
}

/// Settles `resident_shape = "tune"` where the resident kernel may run (an AR run of an MLP
/// with `relax_kernel` resident or auto): a resumed run keeps the shape its directory records;
/// a new run takes the fastest of the shapes `engine::tune` times, with the run's model, batch
/// size, step count and seeds side by side.
fn resolve_resident_shape(
    ctx: &Arc<GpuContext>,
    cfg: &TrainConfig,
    replicas: usize,
    dir: &RunDir,
    mode: run_dir::Mode,
    progress: &mut dyn Progress,
) -> Result<TrainConfig> {
    use config::KernelChoice;
    use tune::ResidentSetting;
    let mut cfg = cfg.clone();
    let tune_asked = cfg
        .resident_shape
        .as_deref()
        .is_some_and(|s| s.parse::<ResidentSetting>() == Ok(ResidentSetting::Tune));
    let model = cfg.model()?;
    if !tune_asked
        || !matches!(
            cfg.relax_kernel,
            KernelChoice::Resident | KernelChoice::Auto
        )
        || cfg.algorithm != Algorithm::Ar
        || !matches!(model, Model::Mlp(_))
    {
        return Ok(cfg);
    }
    if let Some(base) = saved_settings(dir, mode) {
        cfg.resident_shape = base.resident_shape;
        return Ok(cfg);
    }
    let mut opts = cfg.engine_options();
    opts.replicas = replicas;
    let tuned = tune::tune(ctx, &model, &opts, &workload(&cfg)?)?;
    progress.note(&format!(
        "resident kernel's shape: measured per training step {}; using {}",
        tuned.describe(),
        tuned.shape
    ));
    cfg.resident_shape = Some(tuned.shape.to_string());
    Ok(cfg)
}

/// [`run`] on an open device (experiments share one).
pub fn run_with(
    ctx: Arc<GpuContext>,
    cfg: &TrainConfig,
    out: &Path,
    mode: run_dir::Mode,
    progress: &mut dyn Progress,
) -> Result<RunResult> {
    let mut all = run_seeds(ctx, cfg, &[(cfg.seed, out.to_path_buf())], mode, progress)?;
    all.swap_remove(0)
}

/// Several runs of `cfg` that differ only in their seed, trained side by side as replicas of one
/// engine (one set of dispatches for all of them), each into its own run directory with the
/// same files, checkpoints and resumption as a single run. On a GPU this costs little more
/// than one run while the batch leaves the device idle (the paper's batch of 64).
///
/// Each run's result is separate: a run that diverges is reported as [`Error::Diverged`] in its
/// slot and its directory keeps the last good epoch, while the others go on. Resumed runs must
/// all have finished the same number of epochs.
pub fn run_seeds(
    ctx: Arc<GpuContext>,
    cfg: &TrainConfig,
    runs: &[(u64, std::path::PathBuf)],
    mode: run_dir::Mode,
    progress: &mut dyn Progress,
) -> Result<Vec<Result<RunResult>>> {
    cfg.validate()?;
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    // The data first: a missing data set is reported before any directory is made or any
    // kernel is timed.
    let data = prepare_data(cfg)?;
    let seeds: Vec<u64> = runs.iter().map(|r| r.0).collect();
    let adapter = ctx.describe();
    // Whatever fails before the first file is written removes the directories it made.
    let mut dirs = Vec::with_capacity(runs.len());
    let setup = runs
        .iter()
        .try_for_each(|(_, p)| {
            dirs.push(RunDir::open(p, mode)?);
            Ok(())
        })
        .and_then(|()| resolve_resident_shape(&ctx, cfg, seeds.len(), &dirs[0], mode, progress))
        .and_then(|cfg| resolve_relax_kernel(&ctx, &cfg, seeds.len(), &dirs[0], mode, progress))
        .and_then(|cfg| Ok((Trainer::with_seeds(ctx, &cfg, &data, &seeds)?, cfg)));
    let (mut trainer, cfg) = match setup {
        Ok(v) => v,
        Err(e) => {
            dirs.iter().for_each(RunDir::discard_if_unused);
            return Err(e);
        }
    };
    let cfg = &cfg;
    let mut metrics: Vec<Vec<EpochMetrics>> = vec![Vec::new(); seeds.len()];
    let mut start = 0;
    match mode {
        run_dir::Mode::Resume => {
            for (k, dir) in dirs.iter().enumerate() {
                let r = dir.resume_state()?;
                if k > 0 && r.epochs_done != start {
                    return Err(Error::Config(format!(
                        "runs trained side by side must resume from the same epoch, but {} has \
                         {} epochs and {} has {start}",
                        dir.path.display(),
                        r.epochs_done,
                        dirs[0].path.display()
                    )));
                }
                trainer.net.load_replica_state(
                    k,
                    &r.checkpoint,
                    &dir.path.join(run_dir::CHECKPOINT),
                )?;
                start = r.epochs_done;
                metrics[k] = r.metrics;
            }
        }
        _ => trainer.initialise()?,
    }
    for (k, dir) in dirs.iter().enumerate() {
        dir.write_config(&trainer.replica_config(k))?;
    }
    // A run that diverged keeps its last good epoch on disk and is not saved again.
    let mut failed: Vec<Option<Error>> = (0..seeds.len()).map(|_| None).collect();
    for epoch in start..cfg.epochs {
        let outcomes = trainer.epoch_replicas(epoch, progress)?;
        // Before anything of this epoch is saved: were its relaxations right?
        trainer.net.check_relaxation()?;
        for (k, outcome) in outcomes.into_iter().enumerate() {
            if failed[k].is_some() {
                continue;
            }
            let m = match outcome {
                Ok(m) => m,
                Err(msg) => {
                    failed[k] = Some(Error::Diverged(msg));
                    continue;
                }
            };
            let params = trainer.net.replica_params(k)?;
            if !params
                .iter()
                .all(|g| g.weight.iter().chain(&g.bias).all(|v| v.is_finite()))
            {
                failed[k] = Some(Error::Diverged(format!(
                    "training diverged: non-finite weights after epoch {} (seed {}); the last \
                     good checkpoint is kept",
                    epoch + 1,
                    seeds[k]
                )));
                continue;
            }
            metrics[k].push(m);
            dirs[k].save_epoch(&trainer.replica_checkpoint(k, epoch + 1)?, &metrics[k])?;
        }
        if failed.iter().all(Option::is_some) {
            break;
        }
    }
    let mut results = Vec::with_capacity(seeds.len());
    for (k, fail) in failed.into_iter().enumerate() {
        results.push(match fail {
            Some(e) => Err(e),
            None => {
                dirs[k].finish(&metrics[k])?;
                Ok(RunResult {
                    metrics: std::mem::take(&mut metrics[k]),
                    params: trainer.net.replica_params(k)?,
                    adapter: adapter.clone(),
                })
            }
        });
    }
    Ok(results)
}
