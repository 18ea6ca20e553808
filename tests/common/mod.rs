//! Shared by the GPU tests: one device for the whole test binary, seeded problems, comparisons.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use arelax::engine::{Engine, EngineOptions};
use arelax::gpu::{AdapterRequest, GpuContext, Needs};
use arelax::model::{Activation, Init, Loss, ModelSpec, Params};
use arelax::rng::Rng;

/// The test device (lavapipe in CI). A missing adapter fails the tests: they must not pass vacuously.
pub fn ctx() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| Arc::new(new_ctx())).clone()
}

/// A device of its own, set up like [`ctx`]'s (for tests that change its settings).
pub fn new_ctx() -> GpuContext {
    let needs = Needs {
        max_binding_bytes: 16 << 20,
        max_buffer_bytes: 16 << 20,
        timestamps: false,
        // Room for the wider tile specs the kernel tests force (lavapipe offers 1024 and 32 KiB).
        workgroup_threads: 512,
        workgroup_bytes: 32768,
        wide_workgroups: false,
    };
    GpuContext::new(&AdapterRequest::default(), needs)
        .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
}

pub fn spec(widths: &[usize], act: Activation, loss: Loss) -> ModelSpec {
    ModelSpec::new(widths.to_vec(), act, loss).unwrap()
}

/// A seeded batch: inputs in [0, 1), one-hot targets.
pub fn batch(spec: &ModelSpec, b: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let input = (0..b * spec.input_width())
        .map(|_| rng.uniform() as f32)
        .collect();
    let n = spec.output_width();
    let mut target = vec![0.0; b * n];
    for i in 0..b {
        target[i * n + rng.below(n)] = 1.0;
    }
    (input, target)
}

pub struct Problem {
    pub engine: Engine,
    pub params: Params,
    pub input: Vec<f32>,
    pub target: Vec<f32>,
}

/// An engine with seeded parameters and one seeded batch uploaded.
pub fn problem(spec: &ModelSpec, opts: EngineOptions, init: Init, seed: u64) -> Problem {
    let b = opts.batch;
    let engine = Engine::new(ctx(), spec, opts).unwrap();
    let params = Params::init(spec, init, seed);
    engine.set_params(&params).unwrap();
    let (input, target) = batch(spec, b, seed + 1000);
    engine.set_batch(&input, &target).unwrap();
    Problem {
        engine,
        params,
        input,
        target,
    }
}

pub fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// ‖a − e‖ / ‖e‖, with ‖a‖ when e is zero.
pub fn rel_err(a: &[f32], e: &[f64]) -> f64 {
    assert_eq!(a.len(), e.len(), "length mismatch");
    let mut num = 0.0;
    let mut den = 0.0;
    for (&x, &y) in a.iter().zip(e) {
        num += (x as f64 - y).powi(2);
        den += y * y;
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// Largest |a − e| / (|e| + floor), elementwise.
pub fn max_rel(a: &[f32], e: &[f64], floor: f64) -> f64 {
    a.iter()
        .zip(e)
        .map(|(&x, &y)| (x as f64 - y).abs() / (y.abs() + floor))
        .fold(0.0, f64::max)
}
