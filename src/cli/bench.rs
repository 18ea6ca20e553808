//! `arelax bench`: ms per AR training step, per relaxation step, relaxation throughput and
//! GFLOP/s per batch size, with exact backprop's step for comparison.

use clap::Args as ClapArgs;

use super::common::DeviceArgs;
use crate::bench::{self, BenchOptions, BenchResult, saved};
use crate::engine::RelaxKernel;
use crate::engine::net::Model;
use crate::engine::tune::ResidentSetting;
use crate::gpu::Needs;
use crate::gpu::resident::{MAX_LOADS, MAX_PARTS, MAX_ROWS, MAX_WIDE, ResidentShape};
use crate::gpu::tile::TileChoice;
use crate::graph::Graph;
use crate::model::{Activation, Loss, ModelSpec};
use crate::{Error, Result};

#[derive(ClapArgs)]
pub struct Args {
    /// Layer widths [default: the paper's MLP].
    #[arg(long, default_value = "784,300,300,100,10")]
    layers: String,
    /// A model file (see examples/) instead of --layers.
    #[arg(long, conflicts_with = "layers")]
    model: Option<std::path::PathBuf>,
    /// Batch sizes to measure, comma-separated.
    #[arg(long, default_value = "64,256,1024,4096")]
    batch_sizes: String,
    /// Relaxation steps per training step.
    #[arg(long, default_value_t = 100)]
    relax_steps: usize,
    /// Timed samples per measurement.
    #[arg(long, default_value_t = 15)]
    samples: usize,
    /// Warm-up before sampling, in milliseconds.
    #[arg(long, default_value_t = 200)]
    warmup_ms: u64,
    /// Tile shapes of the matrix products: auto (the size table) or a shape (16x16, 32x32, 64x64,
    /// 128x64, 128x128, or any TMxTN-rRMxRN-kKT-sKS: tile, a thread's block, K slice and K
    /// groups, e.g. 64x64-r4x4-k16-s1) forced on every product; a comma-separated list measures
    /// each.
    #[arg(long, default_value = "auto")]
    tile: String,
    /// How the relaxation is dispatched: tiled (one dispatch per step), resident (several steps
    /// per dispatch, a workgroup per few samples, their state on chip), cooperative (the tiled
    /// steps, several per dispatch, with a grid barrier between them), or several,
    /// comma-separated [default: tiled,resident for an MLP with a hidden layer, else tiled].
    #[arg(long)]
    relax_kernel: Option<String>,
    /// The resident kernel's shape: auto (chosen per batch size and device), tune (a few shapes
    /// around auto timed for a few training steps on this device, the fastest measured), or
    /// rR-tT-uU-pP-wN-b-c-z, each part optional (rows and threads per workgroup, loads in
    /// flight per thread, workgroups per row block, columns per work item, extra items packed by
    /// the host: b or b0, weights kept in registers: c or c0, K walked down on odd steps: z or
    /// z0), e.g. r2-p4; a comma-separated list measures each.
    #[arg(long, default_value = "auto")]
    resident: String,
    /// K chunks of the weight-gradient product (K is the batch): each output tile is computed
    /// by this many workgroups and their partial sums added by a second dispatch; 1 is no split
    /// (not yet measured on a GPU); a comma-separated list measures each. MLPs only.
    #[arg(long, default_value = "1")]
    grad_split: String,
    /// Take each training step's SGD step inside its gradient dispatch instead of a dispatch of
    /// its own (not yet measured on a GPU; slower on lavapipe). MLPs only.
    #[arg(long)]
    fused_update: bool,
    /// The cooperative kernel's workgroups per dispatch at most [default: 256 on a GPU, 1 on a
    /// CPU adapter].
    #[arg(long)]
    cooperative_groups: Option<usize>,
    /// Train this many copies of the model side by side (how an experiment trains seeds with
    /// `parallel_seeds`); FLOPs and throughput then count every copy.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Also time one AR step with each dispatch in its own timed pass and report GPU time per
    /// kernel kind (MLPs: each forward layer, the output error, the relaxation, the gradient
    /// products and their chunk sum; graphs: dense VJPs, combine with the conv and pool VJPs,
    /// each gradient kernel).
    #[arg(long)]
    kernel_times: bool,
    /// Print one JSON object per configuration instead of a table.
    #[arg(long)]
    json: bool,
    /// Draw ms per training step and µs per relaxation step against batch size into this PNG
    /// (one line per kernel and tile choice, with backprop's step).
    #[arg(long, value_name = "FILE.png")]
    plot: Option<std::path::PathBuf>,
    /// Measure nothing: read the results of earlier `--json` runs (JSON lines; `-` reads
    /// standard input) and print their tables (or JSON with --json) and, with --plot, their
    /// figure; several files are compared in one figure, each named by its file (or folder).
    /// Needs no GPU.
    #[arg(long, value_name = "FILE.jsonl", num_args = 1.., conflicts_with_all = [
        "layers", "model", "batch_sizes", "relax_steps", "samples", "warmup_ms", "tile",
        "relax_kernel", "resident", "cooperative_groups", "replicas", "kernel_times", "adapter",
        "grad_split", "fused_update",
    ])]
    from: Vec<std::path::PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: Args) -> Result<()> {
    if args.plot.is_some() {
        // Before measuring, not after: the figure is part of what was asked for.
        crate::plot::ensure_font()?;
    }
    let sets = if args.from.is_empty() {
        vec![(String::new(), measure(&args)?)]
    } else {
        let mut sets = Vec::new();
        for path in &args.from {
            sets.push((saved::set_name(path), show_saved(path, args.json)?));
        }
        sets
    };
    if let Some(png) = &args.plot {
        let panels = saved::figure(&sets);
        crate::plot::save_png_with(png, &panels, crate::plot::Legend::SharedBelow)?;
        if !args.json {
            println!("figure: {}", png.display());
        }
    }
    Ok(())
}

/// Prints saved results as `run` printed them when measured, with a header wherever the
/// adapter, model or step count changes.
fn show_saved(path: &std::path::Path, json: bool) -> Result<Vec<BenchResult>> {
    let results = saved::read_jsonl(path)?;
    let labels: Vec<String> = results.iter().map(tile_label).collect();
    let w = tile_width(labels.iter().map(String::as_str));
    let mut print = report(json, w);
    let mut last: Option<(String, String, usize, usize)> = None;
    for r in &results {
        let context = (
            r.adapter.clone(),
            r.model.clone(),
            r.relax_steps,
            r.replicas,
        );
        if !json && last.as_ref() != Some(&context) {
            if last.is_some() {
                println!();
            }
            println!("from:    {}", path.display());
            println!("adapter: {} ({}, {})", r.adapter, r.backend, r.driver);
            println!(
                "model:   {}, {} relaxation steps per training step, {} samples{}",
                r.model,
                r.relax_steps,
                r.samples,
                if r.replicas > 1 {
                    format!(", {} replicas side by side", r.replicas)
                } else {
                    String::new()
                }
            );
            println!();
            print_columns(w);
            last = Some(context);
        }
        print(r);
    }
    Ok(results)
}

/// Runs every kernel × tile configuration, printing each result as it is measured.
fn measure(args: &Args) -> Result<Vec<BenchResult>> {
    let model = match &args.model {
        Some(path) => Model::Graph(Graph::load(path)?),
        None => Model::Mlp(ModelSpec::new(
            ModelSpec::parse_widths(&args.layers)?,
            Activation::Relu,
            Loss::Mse,
        )?),
    };
    let batch_sizes = args
        .batch_sizes
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .ok()
                .filter(|&b| b > 0)
                .ok_or_else(|| {
                    Error::Config(format!("--batch-sizes: '{s}' is not a positive integer"))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    if args.relax_steps == 0 || args.samples == 0 || args.replicas == 0 {
        return Err(Error::Config(
            "--relax-steps, --samples and --replicas must be at least 1".into(),
        ));
    }
    let tiles: Vec<TileChoice> = parse_list("--tile", &args.tile)?;
    // Both kernels by default where the resident one applies: the fastest differs by device and
    // batch size (on the H100 resident, at every size measured; on lavapipe, tiled).
    let default_kernels = match &model {
        Model::Mlp(spec) if spec.widths.len() > 2 => "tiled,resident",
        _ => "tiled",
    };
    let kernels: Vec<RelaxKernel> = parse_list(
        "--relax-kernel",
        args.relax_kernel.as_deref().unwrap_or(default_kernels),
    )?;
    let residents: Vec<ResidentSetting> = parse_list("--resident", &args.resident)?;
    let splits: Vec<usize> = parse_list("--grad-split", &args.grad_split)?;
    // Room for a forced shape's name with the cooperative prefix and the rolled-loops mark, and
    // for the resident kernel's settled shapes (every part given, at most this long).
    let mut names: Vec<String> = tiles.iter().map(|t| format!("c{t} rolled")).collect();
    if kernels.contains(&RelaxKernel::Resident) {
        let widest = ResidentShape {
            rows: Some(MAX_ROWS),
            threads: Some(1024),
            loads: Some(MAX_LOADS),
            parts: Some(MAX_PARTS),
            wide: Some(MAX_WIDE),
            packed: Some(false),
            zigzag: Some(false),
            cache: Some(false),
        };
        names.push(format!("resident {widest} rolled"));
    }
    // A split adds " gS" to every name, a fused update " fu".
    let most = splits.iter().copied().max().unwrap_or(1);
    let suffix = if most > 1 {
        format!(" g{most}").len()
    } else {
        0
    } + if args.fused_update { 3 } else { 0 };
    let w = tile_width(names.iter().map(String::as_str)) + suffix;
    if args.resident != "auto" && !kernels.contains(&RelaxKernel::Resident) {
        return Err(Error::Config(
            "--resident sets the resident kernel's shape; measure that kernel with \
             --relax-kernel resident (or tiled,resident)"
                .into(),
        ));
    }
    let largest = *batch_sizes.iter().max().expect("non-empty");
    let mut needs: Needs = model.needs_replicated(largest, args.replicas);
    needs.timestamps = true;
    needs.wide_workgroups = kernels.contains(&RelaxKernel::Resident);
    for &tile in &tiles {
        needs = needs.with_tiles(tile);
    }
    let ctx = args.device.open(needs)?;
    if ctx.info.device_type == wgpu::DeviceType::Cpu {
        warn_if_slow(
            &ctx.info.name,
            &model,
            largest * args.replicas,
            args.relax_steps,
        );
    }
    let mut opts = BenchOptions {
        model: model.clone(),
        batch_sizes,
        relax_steps: args.relax_steps,
        samples: args.samples,
        warmup: std::time::Duration::from_millis(args.warmup_ms),
        tile: TileChoice::Auto,
        relax_kernel: RelaxKernel::Tiled,
        replicas: args.replicas,
        kernel_times: args.kernel_times,
        cooperative_groups: args.cooperative_groups,
        resident: ResidentSetting::default(),
        grad_split: 1,
        fused_update: args.fused_update,
    };
    if !args.json {
        println!("adapter: {}", ctx.describe());
        println!(
            "model:   {}{}, FP32, {} relaxation steps per training step, {} samples after {} ms warm-up",
            model.describe(),
            if args.replicas > 1 {
                format!(
                    " × {} replicas side by side (FLOPs and sample-steps count all)",
                    args.replicas
                )
            } else {
                String::new()
            },
            args.relax_steps,
            args.samples,
            args.warmup_ms
        );
        println!(
            "FLOPs:   2·B·n_in·n_out per product; AR step = forward + T × relaxation (layers 1..L−1) + gradients"
        );
        println!(
            "AR step: wall time of one step alone (encode, submit, wait); piped: wall time per step \
             with {} steps submitted back to back, as in training; both with no timestamps written \
             (GPU ms comes from as many samples again that write them)",
            args.samples
        );
        if !ctx.unroll {
            println!("loops:   the tiled products' register loops left rolled (ARELAX_UNROLL=0)");
        }
        println!(
            "GPU time: {}",
            if ctx.timestamps {
                "timestamp queries at pass boundaries"
            } else {
                "not available on this adapter (wall time only)"
            }
        );
        println!();
        print_columns(w);
    }
    let mut results = Vec::new();
    for &split in &splits {
        opts.grad_split = split;
        results.extend(measure_kernels(
            &ctx, args, &kernels, &tiles, &residents, &mut opts, w,
        )?);
    }
    Ok(results)
}

/// Every kernel at every tile (tiled, cooperative) or shape (resident) of `opts`.
fn measure_kernels(
    ctx: &std::sync::Arc<crate::gpu::GpuContext>,
    args: &Args,
    kernels: &[RelaxKernel],
    tiles: &[TileChoice],
    residents: &[ResidentSetting],
    opts: &mut BenchOptions,
    w: usize,
) -> Result<Vec<BenchResult>> {
    let json = args.json;
    let mut results = Vec::new();
    for &kernel in kernels {
        opts.relax_kernel = kernel;
        // The resident kernel has no tiles but shapes of its own; the others, the tiles.
        if kernel == RelaxKernel::Resident {
            opts.tile = tiles[0];
            for &shape in residents {
                opts.resident = shape;
                match bench::run(ctx.clone(), opts, &mut report(json, w)) {
                    Ok(r) => results.extend(r),
                    // Asked for by default only: a model it cannot hold is measured tiled.
                    Err(Error::Config(e)) if args.relax_kernel.is_none() => {
                        eprintln!("note: the resident kernel is not measured: {e}");
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            continue;
        }
        for &tile in tiles {
            opts.tile = tile;
            results.extend(bench::run(ctx.clone(), opts, &mut report(json, w))?);
        }
    }
    Ok(results)
}

/// A comma-separated list of `flag`'s values.
fn parse_list<T>(flag: &str, list: &str) -> Result<Vec<T>>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    list.split(',')
        .map(|s| s.parse().map_err(|e| Error::Config(format!("{flag}: {e}"))))
        .collect()
}

/// On a CPU adapter the default sizes take hours: say so before starting, with an estimate.
fn warn_if_slow(adapter: &str, model: &Model, batch: usize, steps: usize) {
    // lavapipe on 2 cores ran the paper's MLP at about 1.2 GFLOP/s (README, "Measuring on a GPU").
    const CPU_FLOPS: f64 = 1.0e9;
    let (fwd, relax, grad) = model.flops(batch);
    let step_s = (fwd + steps as f64 * relax + grad) / CPU_FLOPS;
    // Each configuration times about a hundred steps (samples, pipelined rounds, warm-up).
    if step_s * 100.0 > 600.0 {
        eprintln!(
            "note: {adapter} is a CPU adapter: one AR training step at batch {batch} is about \
             {step_s:.0} s here, and each configuration times about a hundred of them. For a \
             quick measurement: --batch-sizes 16,64 --relax-steps 20 --samples 5"
        );
    }
}

/// The tile column's width: the default, or wider for long labels (full tile specs).
fn tile_width<'a>(labels: impl Iterator<Item = &'a str>) -> usize {
    labels.map(str::len).fold(14, usize::max)
}

fn print_columns(w: usize) {
    println!(
        "{:>6} | {:>w$} | {:>28} | {:>9} | {:>9} | {:>13} | {:>15} | {:>8} | {:>10} | {:>6}",
        "batch",
        "tile",
        "AR step ms median [min, max]",
        "GPU ms",
        "piped ms",
        "relax ms/step",
        "sample-steps/s",
        "GFLOP/s",
        "BP step ms",
        "AR/BP"
    );
}

fn report(json: bool, w: usize) -> impl FnMut(&BenchResult) {
    move |r: &BenchResult| {
        if json {
            println!("{}", serde_json::to_string(r).expect("serialisable"));
        } else {
            println!(
                "{:>6} | {:>w$} | {:>9.3} [{:>7.3}, {:>7.3}] | {:>9} | {:>9.3} | {:>13.4} | {:>15.3e} | {:>8.1} | {:>10.3} | {:>6.1}",
                r.batch_size,
                tile_label(r),
                r.ar_step_ms.median,
                r.ar_step_ms.min,
                r.ar_step_ms.max,
                r.ar_step_gpu_ms
                    .map(|g| format!("{:.3}", g.median))
                    .unwrap_or_else(|| "-".into()),
                r.ar_step_pipelined_ms.median,
                r.relax_step_ms,
                r.relax_sample_steps_per_s,
                r.achieved_gflops,
                r.bp_step_ms.median,
                r.ar_over_bp
            );
            if !r.ar_phases_ms.is_empty() {
                let submit = r
                    .ar_submit_ms
                    .map(|s| format!(" (the submit {:.3} ms)", s.median))
                    .unwrap_or_default();
                println!(
                    "{:>6}   GPU time by phase: {}; host encode + submit {:.3} ms{submit}",
                    "",
                    times(&r.ar_phases_ms),
                    r.ar_encode_ms.median
                );
            }
            if let Some(w) = r.ar_step_timed_ms {
                println!(
                    "{:>6}   the AR step with timestamps written (the GPU-time samples): {:.3} ms \
                     median, against {:.3} ms without",
                    "", w.median, r.ar_step_ms.median
                );
            }
            if let Some(d) = r.vs_tiled_rel_diff {
                let groups = r
                    .cooperative_groups
                    .map(|g| format!("{g} workgroups per dispatch; "))
                    .unwrap_or_default();
                let same = if d == 0.0 {
                    "bit for bit".to_string()
                } else {
                    format!("largest difference {d:.2e} of the largest gradient")
                };
                println!(
                    "{:>6}   {} kernel: {groups}gradients against the tiled kernel's: {same}",
                    "", r.relax_kernel
                );
            }
            if let (Some(g), Some(bytes), Some(shape)) = (
                r.resident_groups,
                r.resident_weight_bytes_per_step,
                &r.resident_shape,
            ) && r.relax_step_ms > 0.0
            {
                // What the step time means for the weights every workgroup streams.
                let all = bytes / (r.relax_step_ms / 1e3) / 1e9;
                println!(
                    "{:>6}   resident kernel: {g} workgroups ({shape}) read {:.0} KB of W each \
                     every step: {all:.1} GB/s in all, {:.2} GB/s per workgroup",
                    "",
                    bytes / f64::from(g) / 1e3,
                    all / f64::from(g)
                );
                if !r.resident_tuned_ms.is_empty() {
                    println!(
                        "{:>6}   resident kernel tuned (ms per training step, piped): {}",
                        "",
                        times(&r.resident_tuned_ms)
                    );
                }
                if let Some(b) = r.resident_busiest_loads {
                    println!(
                        "{:>6}   resident kernel: the plan's busiest thread: {b} weight loads a \
                         step, counting 8 for each work item's fixed cost",
                        ""
                    );
                }
            }
            if !r.ar_kernels_ms.is_empty() {
                println!(
                    "{:>6}   GPU time by kernel: {}",
                    "",
                    times(&r.ar_kernels_ms)
                );
            }
        }
    }
}

/// The table's tile column: the relaxation's tile shape, prefixed `c` for the cooperative kernel
/// ("resident" has none), and marked where the register loops were left rolled.
fn tile_label(r: &BenchResult) -> String {
    let mut s = match r.relax_kernel.as_str() {
        "resident" => match &r.resident_shape {
            Some(shape) => format!("resident {shape}"),
            None => "resident".to_string(),
        },
        "cooperative" => format!("c{}", r.relax_tile),
        _ => r.relax_tile.clone(),
    };
    if !r.unrolled {
        s.push_str(" rolled");
    }
    if r.grad_split > 1 {
        s.push_str(&format!(" g{}", r.grad_split));
    }
    if r.fused_update {
        s.push_str(" fu");
    }
    if r.wait_spin_us > 0 {
        s.push_str(" spin");
    }
    s
}

/// "name 1.234 ms, …" for a list of GPU times.
fn times(v: &[(String, f64)]) -> String {
    let parts: Vec<String> = v.iter().map(|(n, ms)| format!("{n} {ms:.3} ms")).collect();
    parts.join(", ")
}
