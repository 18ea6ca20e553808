//! Relaxation throughput: time one AR training step (forward + T relaxation steps + update) and
//! one exact-backprop step per batch size, by wall clock always and by GPU timestamps per phase
//! where the adapter has them. Used by `arelax bench` and by `benches/`. [`saved`] reads results
//! back from `--json` output and draws them.

pub mod saved;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::engine::net::{Model, Net, ParamGroup};
use crate::engine::tune::{self, ResidentSetting};
use crate::engine::{Algorithm, EngineOptions, RelaxKernel};
use crate::gpu::GpuContext;
use crate::gpu::tile::TileChoice;
use crate::model::Init;

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub model: Model,
    pub batch_sizes: Vec<usize>,
    pub relax_steps: usize,
    /// Timed samples per measurement (at least 15 for reported figures).
    pub samples: usize,
    /// Untimed work before sampling.
    pub warmup: Duration,
    /// Tile shapes of the matrix products (measure a forced shape against the table).
    pub tile: TileChoice,
    /// How the relaxation is dispatched.
    pub relax_kernel: RelaxKernel,
    /// Copies of the model trained side by side (seeds of an experiment); 1 normally.
    pub replicas: usize,
    /// Also time an AR step with every dispatch in its own timed pass (graphs: per kernel kind).
    pub kernel_times: bool,
    /// The cooperative kernel's workgroup cap (None: the adapter's default).
    pub cooperative_groups: Option<usize>,
    /// The resident kernel's shape (unset parts: chosen per batch size and device), or `tune`
    /// (settled per batch size by timing a few shapes, see `engine::tune`).
    pub resident: ResidentSetting,
    /// K chunks of the weight-gradient product (see `EngineOptions::grad_split`).
    pub grad_split: usize,
    /// SGD inside the gradient dispatch (see `EngineOptions::fused_update`).
    pub fused_update: bool,
}

/// Median, min and max of a set of timings, in milliseconds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            0.5 * (v[n / 2 - 1] + v[n / 2])
        };
        Self {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }
}

/// One configuration's measurements. Fields added after the first H100 results have defaults, so
/// older `--json` output still reads (`unrolled` defaults to false: those runs had rolled loops).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchResult {
    pub adapter: String,
    pub backend: String,
    pub driver: String,
    pub model: String,
    pub batch_size: usize,
    pub relax_steps: usize,
    pub samples: usize,
    /// `auto` (the size table) or the forced shape.
    pub tile_choice: String,
    /// `tiled` (one dispatch per relaxation step), `resident` or `cooperative` (several steps
    /// per dispatch).
    pub relax_kernel: String,
    /// Copies of the model side by side; a step trains all of them, and the FLOP counts and
    /// throughput cover all of them.
    pub replicas: usize,
    /// Tile shape of the relaxation product, of each layer's forward product, and of the
    /// weight gradients.
    pub relax_tile: String,
    pub forward_tiles: Vec<String>,
    pub grad_tile: String,
    /// Floating-point operations of one AR training step, counting 2 per multiply-add of the
    /// products: forward (all layers) + T × relaxation (the VJPs into hidden layers, so layers
    /// 1..L−1 of an MLP) + weight gradients (all layers). See `Model::flops`.
    pub ar_flop: f64,
    pub bp_flop: f64,
    /// Wall time of one AR training step (encode and submit to completion), with no timestamps
    /// written (results before `ar_step_timed_ms` existed wrote them).
    pub ar_step_ms: Stat,
    /// The same with the timestamp queries of the GPU-time samples (None without them): the
    /// difference is what timing costs.
    #[serde(default)]
    pub ar_step_timed_ms: Option<Stat>,
    /// Wall time per AR step when steps are submitted back to back (five rounds of `samples`
    /// steps, one wait per round): the throughput a training loop sees.
    pub ar_step_pipelined_ms: Stat,
    pub bp_step_pipelined_ms: Stat,
    /// Host time to encode and submit one AR training step (part of `ar_step_ms`; in training
    /// it overlaps the GPU's work on the previous steps).
    pub ar_encode_ms: Stat,
    /// The submit alone (part of `ar_encode_ms`; None in results from before it was measured).
    #[serde(default)]
    pub ar_submit_ms: Option<Stat>,
    /// GPU time of one AR training step from timestamps (None without timestamp queries).
    pub ar_step_gpu_ms: Option<Stat>,
    /// GPU milliseconds per phase of the median AR step (timestamps only).
    pub ar_phases_ms: Vec<(String, f64)>,
    /// With `kernel_times`: GPU milliseconds per kernel kind of the median AR step, measured
    /// separately with one pass per dispatch (timestamps only; else empty).
    #[serde(default)]
    pub ar_kernels_ms: Vec<(String, f64)>,
    /// One relaxation step: GPU time of the relax phase / T when timed, else the wall-time
    /// difference between T steps and none, / T.
    pub relax_step_ms: f64,
    pub relax_step_source: String,
    /// B·T / (time spent relaxing); infinite (JSON null) if no time was measured.
    #[serde(deserialize_with = "saved::number_or_infinity")]
    pub relax_sample_steps_per_s: f64,
    /// ar_flop / (GPU time if timed, else wall time) of the median step.
    #[serde(deserialize_with = "saved::number_or_infinity")]
    pub achieved_gflops: f64,
    pub bp_step_ms: Stat,
    pub bp_step_gpu_ms: Option<Stat>,
    /// Median AR step over median backprop step (GPU time when timed, else wall time).
    #[serde(deserialize_with = "saved::number_or_infinity")]
    pub ar_over_bp: f64,
    /// For the resident and cooperative kernels: the largest difference of one AR step's
    /// gradients from the tiled kernel's on the same weights and batch, relative to the largest
    /// tiled gradient (0 means bit for bit, as the cooperative kernel should be).
    #[serde(default)]
    pub vs_tiled_rel_diff: Option<f64>,
    /// The cooperative kernel's workgroups per dispatch (tiles per step are shared among them).
    #[serde(default)]
    pub cooperative_groups: Option<u32>,
    /// The resident kernel's settled shape ("r4-t1024-u16"); None for the other
    /// kernels, and for results from before the kernel kept its state on chip (commit history:
    /// those had 4 rows and 256 threads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident_shape: Option<String>,
    /// The resident kernel's workgroups, and the bytes of weights they read per relaxation
    /// step in all (each reads the W of every relaxed layer once per step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident_groups: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident_weight_bytes_per_step: Option<f64>,
    /// The resident plan's weight loads per step of its busiest thread (of its busiest warp,
    /// packed), counting 8 for each work item's fixed cost: what the plan minimises, to set
    /// against the measured step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident_busiest_loads: Option<u64>,
    /// The resident shape asked for: "auto", "tune" or a forced one (as `tile_choice` is to the
    /// tiles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident_choice: Option<String>,
    /// With "tune": each shape timed (its settled name, wall ms per training step, steps back to
    /// back), in the order timed; `resident_shape` is the fastest.
    #[serde(default)]
    pub resident_tuned_ms: Vec<(String, f64)>,
    /// Whether the tiled products' register loops were unrolled (the default; `ARELAX_UNROLL=0`
    /// leaves them as loops).
    #[serde(default)]
    pub unrolled: bool,
    /// K chunks of the weight-gradient product (1: not split, as every result before the
    /// option).
    #[serde(default = "one")]
    pub grad_split: usize,
    /// Whether the SGD step ran inside the gradient dispatch (false in every result before the
    /// option).
    #[serde(default)]
    pub fused_update: bool,
    /// Microseconds each wait polled before blocking (`ARELAX_WAIT_SPIN_US`; 0: blocked at
    /// once, as every result before the option).
    #[serde(default)]
    pub wait_spin_us: u64,
}

fn one() -> usize {
    1
}

struct Timing {
    /// Wall time with no timestamps written.
    wall: Stat,
    /// Host time to encode and submit a step (no timestamps).
    encode: Stat,
    /// The submit alone (part of `encode`).
    submit: Stat,
    /// Wall time of the samples that wrote timestamps (None without timestamp queries).
    wall_timed: Option<Stat>,
    gpu: Option<Stat>,
    phases: Vec<(String, f64)>,
}

/// Times `steps`-step training steps, each submitted alone and waited for: first with no
/// timestamps written (wall and host time), then, where the adapter has timestamp queries,
/// as many again with them (GPU time per phase, and the wall time they cost).
fn time_steps(
    ctx: &GpuContext,
    engine: &mut Net,
    alg: Algorithm,
    steps: usize,
    opts: &BenchOptions,
    timed: bool,
) -> Result<Timing> {
    engine.pause_profiling(true);
    let start = Instant::now();
    loop {
        engine.train_step(alg, steps);
        engine.finish()?;
        if start.elapsed() >= opts.warmup {
            break;
        }
    }
    let (mut wall, mut encode, mut submit) = (Vec::new(), Vec::new(), Vec::new());
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    for _ in 0..opts.samples.max(1) {
        // What `train_step` does, with the submit timed on its own.
        let t = Instant::now();
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        engine.encode_train_step(&mut enc, alg, steps);
        let commands = enc.finish();
        let encoded = ms(t);
        ctx.queue.submit([commands]);
        encode.push(ms(t));
        submit.push(ms(t) - encoded);
        engine.finish()?;
        wall.push(ms(t));
    }
    let (mut wall_timed, mut gpu, mut phases) = (Vec::new(), Vec::new(), Vec::new());
    if timed {
        engine.pause_profiling(false);
        engine.phase_times()?;
        for _ in 0..opts.samples.max(1) {
            let t = Instant::now();
            engine.train_step(alg, steps);
            engine.finish()?;
            wall_timed.push(ms(t));
            let p = engine.phase_times()?;
            if !p.is_empty() {
                gpu.push(p.iter().map(|x| x.1).sum::<f64>());
                phases.push(p);
            }
        }
        engine.pause_profiling(true);
    }
    // The phases of the sample whose GPU time is the median.
    let median_phases = if gpu.is_empty() {
        Vec::new()
    } else {
        let mut idx: Vec<usize> = (0..gpu.len()).collect();
        idx.sort_by(|&a, &b| gpu[a].total_cmp(&gpu[b]));
        phases[idx[idx.len() / 2]]
            .iter()
            .map(|(n, ms)| (n.to_string(), *ms))
            .collect()
    };
    Ok(Timing {
        wall: Stat::of(wall),
        encode: Stat::of(encode),
        submit: Stat::of(submit),
        wall_timed: (!wall_timed.is_empty()).then(|| Stat::of(wall_timed)),
        gpu: (!gpu.is_empty()).then(|| Stat::of(gpu)),
        phases: median_phases,
    })
}

/// Wall time per step with steps submitted back to back and one wait at the end (encoding
/// overlaps the GPU's work, as in training): five rounds of `samples` steps, no timestamps.
fn time_pipelined(
    engine: &mut Net,
    alg: Algorithm,
    steps: usize,
    opts: &BenchOptions,
) -> Result<Stat> {
    let n = opts.samples.max(1);
    engine.pause_profiling(true);
    let mut per_step = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..n {
            engine.train_step(alg, steps);
        }
        engine.finish()?;
        per_step.push(t.elapsed().as_secs_f64() * 1e3 / n as f64);
    }
    Ok(Stat::of(per_step))
}

/// The largest |a − b| over every parameter gradient, relative to the largest |b|.
fn max_rel_diff(a: &[ParamGroup], b: &[ParamGroup]) -> f64 {
    let (mut diff, mut scale) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let xs = x.weight.iter().chain(&x.bias);
        let ys = y.weight.iter().chain(&y.bias);
        for (&p, &q) in xs.zip(ys) {
            diff = diff.max((p as f64 - q as f64).abs());
            scale = scale.max((q as f64).abs());
        }
    }
    if scale > 0.0 { diff / scale } else { diff }
}

/// Measures every batch size in turn, reporting each result as soon as it is known.
pub fn run(
    ctx: Arc<GpuContext>,
    opts: &BenchOptions,
    report: &mut dyn FnMut(&BenchResult),
) -> Result<Vec<BenchResult>> {
    let model = &opts.model;
    let mut out = Vec::new();
    for &b in &opts.batch_sizes {
        let mut eo = EngineOptions::new(b);
        // lr = 0: the same work every step, and weights that cannot drift or diverge.
        eo.lr = 0.0;
        eo.tile = opts.tile;
        eo.relax_kernel = opts.relax_kernel;
        eo.replicas = opts.replicas;
        eo.cooperative_groups = opts.cooperative_groups;
        eo.resident = opts.resident.shape();
        let t = opts.relax_steps;
        let tuned = if opts.relax_kernel == RelaxKernel::Resident
            && opts.resident == ResidentSetting::Tune
        {
            let work = tune::Workload {
                algorithm: Algorithm::Ar,
                steps: t,
                init: Init::FanIn,
                feedback_init: Init::FanIn,
                seed: 1,
            };
            let tuned = tune::tune(&ctx, model, &eo, &work)?;
            eo.resident = tuned.shape;
            Some(tuned)
        } else {
            None
        };
        eo.grad_split = opts.grad_split;
        eo.fused_update = opts.fused_update;
        let mut engine = Net::new(ctx.clone(), model, eo)?;
        let timed = engine.enable_profiling();
        engine.initialise(Init::FanIn, Init::FanIn, 1)?;
        engine.set_random_batch(7)?;

        let ar = time_steps(&ctx, &mut engine, Algorithm::Ar, t, opts, timed)?;
        let bp = time_steps(&ctx, &mut engine, Algorithm::Bp, t, opts, timed)?;
        // Only for the wall-time estimate of a relaxation step.
        let ar0 = time_steps(&ctx, &mut engine, Algorithm::Ar, 0, opts, false)?;
        let ar_pipe = time_pipelined(&mut engine, Algorithm::Ar, t, opts)?;
        let bp_pipe = time_pipelined(&mut engine, Algorithm::Bp, t, opts)?;
        let kernels = if opts.kernel_times && timed {
            engine.set_kernel_times(true);
            let k = time_steps(&ctx, &mut engine, Algorithm::Ar, t, opts, timed)?;
            engine.set_kernel_times(false);
            k.phases
        } else {
            Vec::new()
        };
        // Several steps per dispatch: are the relaxations right, and the tiled kernel's?
        engine.check_relaxation()?;
        let vs_tiled_rel_diff = if opts.relax_kernel != RelaxKernel::Tiled {
            let mut tiled_opts = engine.opts().clone();
            tiled_opts.relax_kernel = RelaxKernel::Tiled;
            let mut tiled = Net::new(ctx.clone(), model, tiled_opts)?;
            tiled.initialise(Init::FanIn, Init::FanIn, 1)?;
            tiled.set_random_batch(7)?;
            let expected = tiled.ar_gradients(t)?;
            let got = engine.ar_gradients(t)?;
            engine.check_relaxation()?;
            Some(max_rel_diff(&got, &expected))
        } else {
            None
        };
        let (fwd, relax, grad) = model.flops(b * opts.replicas);
        let ar_flop = fwd + t as f64 * relax + grad;
        let bp_flop = fwd + relax + grad;
        let relax_gpu = ar
            .phases
            .iter()
            .find(|(p, _)| p == "relax")
            .map(|(_, ms)| ms / t.max(1) as f64);
        let (relax_step_ms, source) = match relax_gpu {
            Some(ms) if timed => (ms, "gpu timestamps of the relax phase / T"),
            _ => (
                (ar.wall.median - ar0.wall.median).max(0.0) / t.max(1) as f64,
                "wall time (T steps minus 0 steps) / T",
            ),
        };
        let step = |x: &Timing| x.gpu.map(|g| g.median).unwrap_or(x.wall.median);
        let info = &ctx.info;
        let tiles = engine.tile_shapes();
        let plan = engine.resident_plan();
        let r = BenchResult {
            adapter: info.name.clone(),
            backend: format!("{:?}", info.backend),
            driver: format!("{} {}", info.driver, info.driver_info),
            model: model.describe(),
            batch_size: b,
            relax_steps: t,
            samples: opts.samples,
            tile_choice: opts.tile.to_string(),
            relax_kernel: opts.relax_kernel.to_string(),
            replicas: opts.replicas,
            relax_tile: tiles.0.to_string(),
            forward_tiles: tiles.1.iter().map(|s| s.to_string()).collect(),
            grad_tile: tiles.2.to_string(),
            ar_flop,
            bp_flop,
            ar_step_ms: ar.wall,
            ar_step_timed_ms: ar.wall_timed,
            ar_encode_ms: ar.encode,
            ar_submit_ms: Some(ar.submit),
            ar_step_pipelined_ms: ar_pipe,
            bp_step_pipelined_ms: bp_pipe,
            ar_step_gpu_ms: ar.gpu,
            ar_phases_ms: ar.phases.clone(),
            ar_kernels_ms: kernels,
            relax_step_ms,
            relax_step_source: source.into(),
            relax_sample_steps_per_s: if relax_step_ms > 0.0 {
                (b * opts.replicas) as f64 / (relax_step_ms / 1e3)
            } else {
                f64::INFINITY
            },
            achieved_gflops: ar_flop / (step(&ar) / 1e3) / 1e9,
            bp_step_ms: bp.wall,
            bp_step_gpu_ms: bp.gpu,
            ar_over_bp: step(&ar) / step(&bp),
            vs_tiled_rel_diff,
            cooperative_groups: engine.cooperative_size().map(|(g, _)| g),
            resident_shape: plan.map(|p| p.shape().to_string()),
            resident_groups: plan.map(|p| p.groups(b, opts.replicas) as u32),
            resident_busiest_loads: plan.map(|p| p.busiest_loads),
            resident_weight_bytes_per_step: plan
                .map(|p| (4 * p.weights * p.blocks(b, opts.replicas) as u64) as f64),
            resident_choice: (opts.relax_kernel == RelaxKernel::Resident)
                .then(|| opts.resident.to_string()),
            resident_tuned_ms: tuned
                .map(|t| {
                    t.timings
                        .iter()
                        .map(|(s, ms)| (s.to_string(), *ms))
                        .collect()
                })
                .unwrap_or_default(),
            unrolled: ctx.unroll,
            grad_split: opts.grad_split,
            fused_update: opts.fused_update,
            wait_spin_us: ctx.wait_spin.as_micros() as u64,
        };
        report(&r);
        out.push(r);
    }
    Ok(out)
}
