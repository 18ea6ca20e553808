//! `arelax gradcheck`: AR's weight gradients against exact backprop's as relaxation proceeds
//! (the paper's Figure 1), per layer: cosine, angle and relative error.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use serde::Serialize;

use super::common::{DataArgs, DeviceArgs, ModelArgs, RelaxArgs};
use crate::checkpoint::TensorFile;
use crate::engine::net::{Model, Net, insert_groups};
use crate::graph::Graph;
use crate::metrics::{LayerAgreement, compare_groups};
use crate::plot::{Panel, Series, save_png};
use crate::rng::Rng;
use crate::{Error, Result};

#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A model description file (graph); replaces --layers, --activation and --loss.
    #[arg(long = "model")]
    model_file: Option<PathBuf>,
    #[command(flatten)]
    relax: RelaxArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// Batch size B.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Seed for the weights and the batch.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Use a real batch from this data directory instead of a seeded random one.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Data set of --data: mnist or fashion-mnist.
    #[arg(long, default_value = "mnist")]
    dataset: String,
    /// Also relax adaptively with this tolerance (capped at --relax-steps) and report the
    /// gradient error where it stopped.
    #[arg(long)]
    relax_tol: Option<f32>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Draw the convergence curves (relative error and angle vs steps, one line per layer).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Write the batch, parameters and both gradients to a safetensors file.
    #[arg(long)]
    dump: Option<PathBuf>,
}

#[derive(Serialize)]
struct Checkpoint {
    steps: usize,
    layers: Vec<LayerAgreement>,
}

#[derive(Serialize)]
struct Report {
    adapter: String,
    model: String,
    batch_size: usize,
    seed: u64,
    batch: String,
    relax_rate: f32,
    relax_steps: usize,
    relax_start: String,
    loss: String,
    reduction: String,
    series: Vec<Checkpoint>,
    adaptive: Option<Adaptive>,
}

#[derive(Serialize)]
struct Adaptive {
    tol: f32,
    steps_used: usize,
    layers: Vec<LayerAgreement>,
}

/// Step counts for the plot: the table's and every `t/25` steps up to `t` (~35 readbacks).
pub fn dense_checkpoints(t: usize) -> Vec<usize> {
    let stride = t.div_ceil(25).max(1);
    let mut out: Vec<usize> = checkpoints(t)
        .into_iter()
        .chain((stride..=t).step_by(stride))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Step counts for the table: 1, 2, 5, 10, 20, 50, … up to and including `t`.
pub fn checkpoints(t: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut base = 1;
    'outer: loop {
        for m in [1, 2, 5] {
            let s = base * m;
            if s >= t {
                break 'outer;
            }
            out.push(s);
        }
        base *= 10;
    }
    out.push(t);
    out
}

/// A seeded batch: inputs uniform in [0, 1), one-hot targets of random classes.
pub fn random_batch(n_in: usize, n: usize, batch: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::stream(seed, 2);
    let input = (0..batch * n_in).map(|_| rng.uniform() as f32).collect();
    let mut target = vec![0.0; batch * n];
    for b in 0..batch {
        target[b * n + rng.below(n)] = 1.0;
    }
    (input, target)
}

fn real_batch(
    args: &Args,
    n_in: usize,
    n_out: usize,
    dir: PathBuf,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let ds = DataArgs {
        dataset: args.dataset.clone(),
        data: Some(dir),
    }
    .load()?;
    if n_in != ds.rows * ds.cols || n_out != 10 {
        return Err(Error::Config(format!(
            "a {} batch needs --layers starting at {} and ending at 10",
            args.dataset,
            ds.rows * ds.cols
        )));
    }
    let mut order: Vec<usize> = (0..ds.train.len).collect();
    Rng::stream(args.seed, 3).shuffle(&mut order);
    let idx = &order[..args.batch_size.min(ds.train.len)];
    Ok(crate::data::one_hot_batch(&ds.train, idx))
}

pub fn run(args: Args) -> Result<()> {
    let model = match &args.model_file {
        Some(path) => Model::Graph(Graph::load(path)?),
        None => Model::Mlp(args.model.spec()?),
    };
    let reduction = args.model.reduction()?;
    args.relax.check()?;
    if args.batch_size == 0 {
        return Err(Error::Config("--batch-size must be at least 1".into()));
    }
    let (n_in, n_out) = (model.input_width(), model.output_width());
    let (input, target, batch_name) = match &args.data {
        Some(dir) => {
            let (i, t) = real_batch(&args, n_in, n_out, dir.clone())?;
            (
                i,
                t,
                format!("{} training batch (seeded shuffle)", args.dataset),
            )
        }
        None => {
            let (i, t) = random_batch(n_in, n_out, args.batch_size, args.seed);
            (
                i,
                t,
                "seeded random batch (U[0,1) inputs, one-hot targets)".into(),
            )
        }
    };
    let batch = input.len() / n_in;
    let ctx = args.device.open(model.needs(batch))?;
    let opts = args.relax.engine_options(batch, reduction);
    let mut net = Net::new(ctx.clone(), &model, opts)?;
    let init = args.model.init()?;
    net.initialise(init, init, args.seed)?;
    let params = net.params()?;
    net.set_batch(&input, &target)?;

    let bp = net.bp_gradients()?;
    let steps = dense_checkpoints(args.relax.relax_steps);
    let series = net.ar_gradient_series(&steps)?;
    let ar_final = series.last().cloned().expect("at least one checkpoint");
    let adaptive = match args.relax_tol {
        Some(tol) => {
            let mut o = args.relax.engine_options(batch, reduction);
            o.relax_tol = Some(tol);
            let mut e = Net::new(ctx.clone(), &model, o)?;
            e.set_params(&params)?;
            e.set_batch(&input, &target)?;
            let g = e.ar_gradients(args.relax.relax_steps)?;
            Some(Adaptive {
                tol,
                steps_used: e.last_relax_steps()?.unwrap_or(args.relax.relax_steps),
                layers: compare_groups(&g, &bp),
            })
        }
        None => None,
    };
    let report = Report {
        adapter: ctx.describe(),
        model: model.describe(),
        batch_size: batch,
        seed: args.seed,
        batch: batch_name,
        relax_rate: args.relax.relax_rate,
        relax_steps: args.relax.relax_steps,
        relax_start: args.relax.relax_start.clone(),
        loss: model.loss().to_string(),
        reduction: reduction.to_string(),
        series: steps
            .iter()
            .zip(&series)
            .map(|(&s, g)| Checkpoint {
                steps: s,
                layers: compare_groups(g, &bp),
            })
            .collect(),
        adaptive,
    };

    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| Error::Other(e.to_string()))?
        );
    } else {
        print_report(&report);
    }
    if let Some(path) = &args.plot {
        plot(&report, path)?;
        if !args.json {
            println!("plot written to {}", path.display());
        }
    }
    if let Some(path) = &args.dump {
        let mut f = TensorFile::default();
        f.insert("input", vec![batch, n_in], input);
        f.insert("target", vec![batch, n_out], target);
        insert_groups(&mut f, "", &params);
        // Gradients are stored as {name}.weight_grad / {name}.bias_grad.
        for (prefix, groups) in [("ar.", &ar_final), ("bp.", &bp)] {
            for g in groups.iter() {
                f.insert(
                    format!("{prefix}{}.weight_grad", g.name),
                    g.weight_shape.clone(),
                    g.weight.clone(),
                );
                f.insert(
                    format!("{prefix}{}.bias_grad", g.name),
                    vec![g.bias.len()],
                    g.bias.clone(),
                );
            }
        }
        let m = &mut f.metadata;
        match &model {
            Model::Mlp(spec) => {
                m.insert("activation".into(), spec.hidden.to_string());
                m.insert("layers".into(), args.model.layers.clone());
            }
            Model::Graph(g) => {
                m.insert("model".into(), g.source.clone());
            }
        }
        m.insert(
            "output_activation".into(),
            model.loss().output_activation().into(),
        );
        m.insert("loss".into(), model.loss().to_string());
        m.insert("reduction".into(), reduction.to_string());
        m.insert("relax_steps".into(), args.relax.relax_steps.to_string());
        m.insert("relax_rate".into(), args.relax.relax_rate.to_string());
        m.insert("relax_start".into(), args.relax.relax_start.clone());
        m.insert("seed".into(), args.seed.to_string());
        f.save(path)?;
        if !args.json {
            println!("tensors written to {}", path.display());
        }
    }
    Ok(())
}

fn print_report(r: &Report) {
    println!("adapter:    {}", r.adapter);
    println!(
        "model:      {}, batch {}, seed {}",
        r.model, r.batch_size, r.seed
    );
    println!("batch:      {}", r.batch);
    println!(
        "relaxation: eta {}, start {}, Jacobi (every layer updated in parallel each step)",
        r.relax_rate, r.relax_start
    );
    println!();
    println!(
        "AR vs exact backprop, weight gradient of each layer: cosine / angle / relative error"
    );
    let rows = checkpoints(r.relax_steps);
    print!("{:>6}", "steps");
    for a in &r.series[0].layers {
        print!("  {:>27}", a.name);
    }
    println!();
    for c in r.series.iter().filter(|c| rows.contains(&c.steps)) {
        print!("{:>6}", c.steps);
        for a in &c.layers {
            print!(
                "  {:>9.6} {:>7.3}° {:>9.2e}",
                a.weight.cosine, a.weight.angle_deg, a.weight.rel_error
            );
        }
        println!();
    }
    let last = r.series.last().expect("non-empty");
    println!();
    println!("after {} steps:", last.steps);
    print_layers(&last.layers);
    if let Some(a) = &r.adaptive {
        println!();
        println!(
            "adaptive relaxation (tol {}): stopped after {} of at most {} steps",
            a.tol, a.steps_used, r.relax_steps
        );
        print_layers(&a.layers);
    }
}

fn print_layers(layers: &[LayerAgreement]) {
    for a in layers {
        println!(
            "  {}: weight cosine {:.6} ({:.3}°, rel. error {:.2e}); bias cosine {:.6} (rel. error {:.2e})",
            a.name,
            a.weight.cosine,
            a.weight.angle_deg,
            a.weight.rel_error,
            a.bias.cosine,
            a.bias.rel_error
        );
    }
}

fn plot(r: &Report, path: &std::path::Path) -> Result<()> {
    let layers = r.series[0].layers.len();
    // A layer whose error is zero throughout (the last: its signal is the clamped output) is
    // exact by construction and has no place on a log axis.
    let exact = |l: usize| r.series.iter().all(|c| c.layers[l].weight.rel_error == 0.0);
    let series = |f: &dyn Fn(&LayerAgreement) -> f64| -> Vec<Series> {
        (0..layers)
            .filter(|&l| !exact(l))
            .map(|l| {
                let points = r.series.iter().map(|c| (c.steps as f64, f(&c.layers[l])));
                Series::line(r.series[0].layers[l].name.clone(), points.collect())
            })
            .collect()
    };
    let title = format!(
        "{}, B={}, eta={}",
        r.model.split(" (").next().unwrap_or(""),
        r.batch_size,
        r.relax_rate
    );
    save_png(
        path,
        &[
            Panel {
                title: format!("relative error of AR's gradient ({title})"),
                x_label: "relaxation steps".into(),
                y_label: "|G_AR - G_BP| / |G_BP| (weights)".into(),
                log_x: false,
                log_y: true,
                series: series(&|a| a.weight.rel_error),
            },
            Panel {
                title: "angle between AR's and backprop's gradients".into(),
                x_label: "relaxation steps".into(),
                y_label: "angle (degrees)".into(),
                log_x: false,
                log_y: true,
                series: series(&|a| a.weight.angle_deg),
            },
        ],
    )
}
