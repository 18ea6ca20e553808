//! `cargo bench`: the `arelax bench` measurements on sizes small enough for lavapipe, so kernel
//! changes can be compared on any machine. Set ARELAX_BENCH_LAYERS / ARELAX_BENCH_BATCHES /
//! ARELAX_BENCH_STEPS to measure other shapes (e.g. the paper's MLP on a real GPU), and
//! ARELAX_BENCH_TILES (e.g. `auto,32x32,64x64`) to compare tile shapes, ARELAX_BENCH_KERNELS
//! (e.g. `tiled,cooperative`) to compare relaxation kernels, ARELAX_BENCH_RESIDENT (e.g.
//! `r4-t256`, or `tune`) for the resident kernel's shape, ARELAX_BENCH_GRAD_SPLIT (e.g. `4`) for
//! the weight gradients' K chunks, and ARELAX_BENCH_FUSED_UPDATE=1 for the SGD step inside the
//! gradients' dispatch.

use std::sync::Arc;
use std::time::Duration;

use arelax::bench::{BenchOptions, run};
use arelax::engine::RelaxKernel;
use arelax::engine::net::Model;
use arelax::gpu::tile::TileChoice;
use arelax::gpu::{AdapterRequest, GpuContext};
use arelax::model::{Activation, Loss, ModelSpec};

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn main() -> Result<(), arelax::Error> {
    // `cargo bench` passes flags such as --bench; this harness takes its settings from the environment.
    let widths = ModelSpec::parse_widths(&env_or("ARELAX_BENCH_LAYERS", "196,64,64,32,10"))?;
    let spec = ModelSpec::new(widths, Activation::Relu, Loss::Mse)?;
    let batch_sizes: Vec<usize> = env_or("ARELAX_BENCH_BATCHES", "16,64")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let relax_steps: usize = env_or("ARELAX_BENCH_STEPS", "20").parse().unwrap_or(20);
    let largest = batch_sizes.iter().copied().max().unwrap_or(1);
    let mut needs = arelax::engine::needs(&spec, largest, 1);
    needs.timestamps = true;
    needs.wide_workgroups = true;
    let ctx = Arc::new(GpuContext::new(&AdapterRequest::default(), needs)?);
    println!("adapter: {}", ctx.describe());
    println!("model: {}, {relax_steps} relaxation steps", spec.describe());
    let tiles = env_or("ARELAX_BENCH_TILES", "auto")
        .split(',')
        .map(|s| s.parse::<TileChoice>().map_err(arelax::Error::Config))
        .collect::<Result<Vec<_>, _>>()?;
    let kernels = env_or("ARELAX_BENCH_KERNELS", "tiled")
        .split(',')
        .map(|s| s.parse::<RelaxKernel>().map_err(arelax::Error::Config))
        .collect::<Result<Vec<_>, _>>()?;
    let resident = env_or("ARELAX_BENCH_RESIDENT", "auto")
        .parse()
        .map_err(arelax::Error::Config)?;
    let grad_split = env_or("ARELAX_BENCH_GRAD_SPLIT", "1")
        .parse()
        .map_err(|_| arelax::Error::Config("ARELAX_BENCH_GRAD_SPLIT: a number of chunks".into()))?;
    let fused_update = env_or("ARELAX_BENCH_FUSED_UPDATE", "0") == "1";
    for (kernel, tile) in kernels
        .iter()
        .flat_map(|&k| tiles.iter().map(move |&t| (k, t)))
    {
        let opts = BenchOptions {
            model: Model::Mlp(spec.clone()),
            batch_sizes: batch_sizes.clone(),
            relax_steps,
            samples: 15,
            warmup: Duration::from_millis(200),
            tile,
            relax_kernel: kernel,
            replicas: 1,
            kernel_times: false,
            cooperative_groups: None,
            resident,
            grad_split,
            fused_update,
        };
        run(ctx.clone(), &opts, &mut report)?;
    }
    Ok(())
}

fn report(r: &arelax::bench::BenchResult) {
    println!(
        "batch {:>5}, {} kernel{}, tiles {} (relax {}){}: AR step {:.3} ms (median; min {:.3}, max {:.3}), relax {:.4} ms/step, {:.3e} sample-steps/s, {:.2} GFLOP/s; BP step {:.3} ms; AR/BP {:.1}",
        r.batch_size,
        r.relax_kernel,
        r.resident_shape
            .as_ref()
            .map_or(String::new(), |s| format!(" {s}")),
        r.tile_choice,
        r.relax_tile,
        options(r),
        r.ar_step_ms.median,
        r.ar_step_ms.min,
        r.ar_step_ms.max,
        r.relax_step_ms,
        r.relax_sample_steps_per_s,
        r.achieved_gflops,
        r.bp_step_ms.median,
        r.ar_over_bp
    );
}

/// The options that are off unless asked for, as `arelax bench --from` names them.
fn options(r: &arelax::bench::BenchResult) -> String {
    let mut s = String::new();
    if r.grad_split > 1 {
        s.push_str(&format!(", gradients in {} chunks", r.grad_split));
    }
    if r.fused_update {
        s.push_str(", SGD in the gradients' dispatch");
    }
    s
}
