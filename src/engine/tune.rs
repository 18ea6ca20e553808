//! The resident kernel's shape settled by measurement (`resident = "tune"`, `--resident tune`):
//! a few shapes around the automatic one, each timed for a few training steps on this device
//! with the run's model, batch size and step count; the fastest is used. The automatic choice
//! is a table measured on one GPU (an H100); other devices, and the shapes not yet measured
//! there, may do better.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use super::net::{Model, Net};
use super::{Algorithm, EngineOptions, RelaxKernel};
use crate::gpu::GpuContext;
use crate::gpu::resident::{ResidentPlan, ResidentShape};
use crate::model::Init;
use crate::{Error, Result};

/// A resident shape as asked for: a shape (`auto`, or some parts forced), or `tune`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResidentSetting {
    Shape(ResidentShape),
    Tune,
}

impl Default for ResidentSetting {
    fn default() -> Self {
        Self::Shape(ResidentShape::default())
    }
}

impl ResidentSetting {
    /// The shape an engine is built with: `tune` must be settled first ([`tune`]); unsettled,
    /// it is the automatic shape.
    pub fn shape(&self) -> ResidentShape {
        match self {
            Self::Shape(s) => *s,
            Self::Tune => ResidentShape::default(),
        }
    }
}

impl FromStr for ResidentSetting {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "tune" => Ok(Self::Tune),
            other => other
                .parse()
                .map(Self::Shape)
                .map_err(|e| format!("{e}; or tune (the fastest of a few, timed here)")),
        }
    }
}

impl fmt::Display for ResidentSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shape(s) => s.fmt(f),
            Self::Tune => f.write_str("tune"),
        }
    }
}

/// The shapes `tune` times for `widths` at `batch` × `replicas` rows on a device with `room`
/// (threads, bytes) per workgroup: the automatic one first, then, where each is a plan and
/// differs from those before: the extra items packed (where that lightens the busiest thread),
/// units of two columns on half the threads, the full 1 024 threads, and at large batches four
/// parts per row block (each thread's weights then fit in registers) at the same and at half
/// the rows.
pub fn candidates(
    widths: &[usize],
    batch: usize,
    replicas: usize,
    room: (u32, u32),
) -> Vec<ResidentShape> {
    let plan = |s: ResidentShape| ResidentPlan::new(widths, batch, replicas, s, room).ok();
    let Some(auto) = plan(ResidentShape::default()) else {
        return Vec::new();
    };
    let (rows, threads) = (auto.rows, auto.threads);
    let with = |f: &dyn Fn(&mut ResidentShape)| {
        let mut s = ResidentShape {
            rows: Some(rows),
            threads: Some(threads),
            ..ResidentShape::default()
        };
        f(&mut s);
        s
    };
    let mut tries = Vec::new();
    if let Some(p) = plan(with(&|s| s.packed = Some(true)))
        && p.busiest_loads < auto.busiest_loads
    {
        tries.push(p);
    }
    tries.extend(plan(with(&|s| {
        s.threads = Some((threads / 2).max(32));
        s.wide = Some(2);
        s.cache = Some(false);
    })));
    if threads < 1024 {
        tries.extend(plan(with(&|s| s.threads = Some(1024))));
    }
    if auto.parts == 1 && rows >= 8 {
        tries.extend(plan(with(&|s| {
            s.threads = None;
            s.parts = Some(4);
        })));
        tries.extend(plan(with(&|s| {
            s.rows = Some(rows / 2);
            s.threads = None;
            s.parts = Some(4);
        })));
    }
    let mut shapes = vec![ResidentShape::default()];
    let mut seen = vec![auto.shape().to_string()];
    for p in tries {
        let name = p.shape().to_string();
        if !seen.contains(&name) {
            seen.push(name);
            shapes.push(p.shape());
        }
    }
    shapes
}

/// The training step a timing runs: its algorithm and relaxation steps, and the weights'
/// and feedback's initialisation with its seed (which also draws the random batch).
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub algorithm: Algorithm,
    pub steps: usize,
    pub init: Init,
    pub feedback_init: Init,
    pub seed: u64,
}

/// Steps timed per round, rounds, and warm-up steps of [`contest`].
const STEPS: usize = 5;
const ROUNDS: usize = 3;
const WARMUP: usize = 2;

/// Errors that rule one contender out (settings it cannot run, a relaxation gone wrong, an
/// error the device recorded while it ran) rather than end the contest.
fn rules_out(e: &Error) -> bool {
    matches!(e, Error::Config(_) | Error::Gpu(_) | Error::Device(_))
}

/// Times engines built from `options` against one another, each as in training but frozen
/// (lr 0; `work`'s initialisation and a random batch): wall milliseconds per training step,
/// steps submitted back to back after a warm-up of 2. Three rounds of 5 steps visit every
/// engine in turn, and each keeps its least time, so that none is timed only while the GPU's
/// clocks are still rising. An engine that cannot be built, runs into an error, or whose
/// relaxation went wrong gets that error instead of a time.
pub fn contest(
    ctx: &Arc<GpuContext>,
    model: &Model,
    options: &[EngineOptions],
    work: &Workload,
) -> Result<Vec<Result<f64>>> {
    let build = |opts: &EngineOptions| -> Result<Net> {
        let mut opts = opts.clone();
        opts.lr = 0.0;
        let mut net = Net::new(ctx.clone(), model, opts)?;
        net.initialise(work.init, work.feedback_init, work.seed)?;
        net.set_random_batch(work.seed)?;
        for _ in 0..WARMUP {
            net.train_step(work.algorithm, work.steps);
        }
        net.finish()?;
        Ok(net)
    };
    let mut nets = Vec::with_capacity(options.len());
    for opts in options {
        match build(opts) {
            Err(e) if !rules_out(&e) => return Err(e),
            r => nets.push(r.map(|n| (n, f64::INFINITY))),
        }
    }
    for _ in 0..ROUNDS {
        for entry in nets.iter_mut() {
            let Ok((net, best)) = entry else { continue };
            let t = Instant::now();
            for _ in 0..STEPS {
                net.train_step(work.algorithm, work.steps);
            }
            match net.finish() {
                Ok(()) => *best = best.min(t.elapsed().as_secs_f64() * 1e3 / STEPS as f64),
                Err(e) if rules_out(&e) => *entry = Err(e),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(nets
        .into_iter()
        .map(|entry| {
            let (net, ms) = entry?;
            net.check_relaxation()?;
            Ok(ms)
        })
        .collect())
}

/// What [`tune`] chose, and every shape's time per training step (ms), in the order timed.
#[derive(Clone, Debug)]
pub struct Tuned {
    /// The fastest, settled (every part named: building with it again gives the same plan).
    pub shape: ResidentShape,
    pub timings: Vec<(ResidentShape, f64)>,
}

impl Tuned {
    /// "r16-t768-u16 6.120 ms, r16-t768-u16-p4-c 4.410 ms, ..." for reports.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .timings
            .iter()
            .map(|(s, ms)| format!("{s} {ms:.3} ms"))
            .collect();
        parts.join(", ")
    }
}

/// Times [`candidates`] against one another with [`contest`] (the resident kernel, `opts`
/// otherwise) and returns the fastest. A candidate that fails is left out; the automatic shape
/// must run.
pub fn tune(
    ctx: &Arc<GpuContext>,
    model: &Model,
    opts: &EngineOptions,
    work: &Workload,
) -> Result<Tuned> {
    let Model::Mlp(spec) = model else {
        return Err(Error::Config(
            "resident = \"tune\" applies to the resident kernel, which relaxes MLPs".into(),
        ));
    };
    let room = ctx.workgroup_room();
    let options: Vec<EngineOptions> =
        candidates(&spec.widths, opts.batch, opts.replicas.max(1), room)
            .into_iter()
            .map(|shape| EngineOptions {
                relax_kernel: RelaxKernel::Resident,
                resident: shape,
                ..opts.clone()
            })
            .collect();
    let mut timings = Vec::new();
    for (i, (o, ms)) in options
        .iter()
        .zip(contest(ctx, model, &options, work)?)
        .enumerate()
    {
        match ms {
            Ok(ms) => timings.push((settled(spec, o, room)?, ms)),
            Err(e) if i == 0 => return Err(e),
            Err(_) => {}
        }
    }
    let shape = timings
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|t| t.0)
        .ok_or_else(|| Error::Config("the resident kernel has no shape for this model".into()))?;
    Ok(Tuned { shape, timings })
}

/// The settled shape of `opts.resident` (the plan's own name for it).
fn settled(
    spec: &crate::model::ModelSpec,
    opts: &EngineOptions,
    room: (u32, u32),
) -> Result<ResidentShape> {
    let replicas = opts.replicas.max(1);
    Ok(ResidentPlan::new(&spec.widths, opts.batch, replicas, opts.resident, room)?.shape())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAPER: [usize; 5] = [784, 300, 300, 100, 10];
    const H100: (u32, u32) = (1024, 49152);

    fn names(batch: usize) -> Vec<String> {
        candidates(&PAPER, batch, 1, H100)
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn candidates_surround_the_automatic_shape() {
        // Batch 64 has parts and weights in registers already; packing finds nothing better
        // there, so only units of two columns (which keep weights in memory) are tried.
        assert_eq!(names(64), ["auto", "r2-t512-u16-p4-w2-z"]);
        // Batch 1024: units, 1024 threads, and four parts at 8 and at 4 rows.
        assert_eq!(
            names(1024),
            [
                "auto",
                "r8-t384-u16-w2",
                "r8-t1024-u16",
                "r8-t768-u16-p4-c",
                "r4-t1024-u16-p4-c",
            ]
        );
        // Batch 4096: packing as well (it lightens the busiest thread there).
        assert_eq!(
            names(4096),
            [
                "auto",
                "r16-t768-u16-b",
                "r16-t384-u16-w2",
                "r16-t1024-u16",
                "r16-t768-u16-p4-c",
                "r8-t768-u16-p4-c",
            ]
        );
        // Each is a plan, and none twice.
        for batch in [1, 3, 64, 256, 1024, 4096] {
            let n = names(batch);
            let mut d = n.clone();
            d.sort();
            d.dedup();
            assert_eq!(n.len(), d.len(), "batch {batch}: {n:?}");
            for s in candidates(&PAPER, batch, 1, H100) {
                ResidentPlan::new(&PAPER, batch, 1, s, H100).unwrap();
            }
        }
    }

    #[test]
    fn settings_parse_and_print() {
        for s in ["tune", "auto", "r4-t256", "r2-p4-c-z"] {
            assert_eq!(s.parse::<ResidentSetting>().unwrap().to_string(), s);
        }
        assert_eq!(
            "tune".parse::<ResidentSetting>().unwrap().shape(),
            ResidentShape::default()
        );
        assert!("r3".parse::<ResidentSetting>().is_err());
    }
}
