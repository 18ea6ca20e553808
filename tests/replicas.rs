//! Seeds trained side by side as replicas of one engine: every replica computes exactly what a
//! single engine with its seed computes (gradients against the CPU reference, gathered batches,
//! whole training runs, resumption and experiments), and one replica's failure stays its own.

mod common;

use std::path::{Path, PathBuf};

use arelax::data::{self, DatasetKind, Split};
use arelax::engine::Ops as _;
use arelax::engine::feed::DeviceSplit;
use arelax::engine::{Engine, EngineOptions, Feedback, RelaxKernel};
use arelax::model::{Activation, Init, Loss, Params, Reduction};
use arelax::reference::{self as cpu, Params64};
use arelax::train::config::{Overrides, TrainConfig};
use arelax::train::run_dir::Mode;
use arelax::train::{Quiet, RunResult, Trainer};
use common::*;

fn mnist_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"))
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("arelax-replicas-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn tiny(preset: &str, epochs: usize) -> TrainConfig {
    let flags = Overrides {
        preset: Some(preset.into()),
        data: Some(mnist_dir()),
        layers: Some("784,12,9,10".into()),
        epochs: Some(epochs),
        relax_steps: Some(4),
        relax_rate: Some(0.5),
        lr: Some(0.002),
        train_limit: Some(320),
        test_limit: Some(70),
        ..Default::default()
    };
    TrainConfig::resolve(None, &flags).unwrap()
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs())) as f64;
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64 / scale)
        .fold(0.0, f64::max)
}

fn assert_same_run(side: &RunResult, alone: &RunResult, what: &str) {
    assert_eq!(side.metrics.len(), alone.metrics.len(), "{what}: epochs");
    // Bit-identical on lavapipe (every product gets the same tile shape there); on a GPU the
    // automatic tile choice may differ with the size of the dispatch, so rounding may differ.
    for (g, h) in side.params.iter().zip(&alone.params) {
        let d = max_rel_diff(&g.weight, &h.weight).max(max_rel_diff(&g.bias, &h.bias));
        assert!(d < 1e-5, "{what}: {} differs by {d:e}", g.name);
    }
    for (x, y) in side.metrics.iter().zip(&alone.metrics) {
        assert!(
            (x.train_loss - y.train_loss).abs() <= 1e-5 * y.train_loss.abs(),
            "{what}: train loss {} vs {}",
            x.train_loss,
            y.train_loss
        );
        assert!(
            (x.test_accuracy - y.test_accuracy).abs() <= 1.0 / 70.0,
            "{what}: test accuracy {} vs {}",
            x.test_accuracy,
            y.test_accuracy
        );
        assert!(
            (x.grad_angle_deg - y.grad_angle_deg).abs() < 1e-2,
            "{what}: gradient angle {} vs {}",
            x.grad_angle_deg,
            y.grad_angle_deg
        );
    }
}

/// AR's and backprop's gradients of every replica, from one set of dispatches, are the CPU
/// reference's for that replica's own weights and batch (odd widths, three replicas, a batch
/// that is not a multiple of the resident kernel's rows), with either relaxation kernel.
#[test]
fn every_replica_has_its_own_exact_gradients() {
    for kernel in [RelaxKernel::Tiled, RelaxKernel::Resident] {
        replica_gradients(kernel);
    }
}

fn replica_gradients(kernel: RelaxKernel) {
    let s = spec(&[13, 11, 7, 5], Activation::Tanh, Loss::Mse);
    let (b, k, steps) = (5, 3, 60);
    let mut opts = EngineOptions::new(b);
    opts.replicas = k;
    opts.relax_rate = 0.5;
    opts.relax_kernel = kernel;
    let mut engine = Engine::new(ctx(), &s, opts).unwrap();
    let params: Vec<Params> = (0..k)
        .map(|r| Params::init(&s, Init::FanIn, 10 + r as u64))
        .collect();
    let batches: Vec<(Vec<f32>, Vec<f32>)> = (0..k).map(|r| batch(&s, b, 20 + r as u64)).collect();
    for (r, p) in params.iter().enumerate() {
        engine.set_replica_params(r, p).unwrap();
    }
    let input: Vec<f32> = batches.iter().flat_map(|x| x.0.clone()).collect();
    let target: Vec<f32> = batches.iter().flat_map(|x| x.1.clone()).collect();
    engine.set_batch(&input, &target).unwrap();
    engine.ar_gradients(steps).unwrap();
    let ar: Vec<Params> = (0..k).map(|r| engine.replica_grads(r).unwrap()).collect();
    engine.bp_gradients().unwrap();
    let bp: Vec<Params> = (0..k).map(|r| engine.replica_grads(r).unwrap()).collect();
    for r in 0..k {
        let p64 = Params64::from(&params[r]);
        let (x, t) = (to64(&batches[r].0), to64(&batches[r].1));
        let fwd = cpu::forward(&s, &p64, &x, b);
        let out = cpu::output_error(&s, &fwd, &t, Reduction::Sum);
        let exact = cpu::gradients(&s, &fwd, &cpu::backprop(&s, &p64, &fwd, &out.g), true);
        let mut state = cpu::relax_start(&s, &fwd, &out.g, true);
        for _ in 0..steps {
            state = cpu::relax_step(&s, &p64, &fwd, &state, 0.5, true);
        }
        let relaxed = cpu::gradients(&s, &fwd, &state, true);
        for l in 0..s.depth() {
            let e = rel_err(&bp[r].weights[l], &exact.weights[l]);
            assert!(e < 1e-4, "replica {r} layer {l}: backprop error {e:e}");
            let e = rel_err(&ar[r].weights[l], &relaxed.weights[l]);
            assert!(e < 1e-4, "{kernel}: replica {r} layer {l}: AR error {e:e}");
        }
    }
}

/// Each replica gathers its batch through its own sample order; the epoch sums are per replica.
#[test]
fn each_replica_gathers_its_own_batches() {
    let ds = data::load(&mnist_dir(), DatasetKind::Mnist).unwrap();
    let split = Split {
        images: ds.train.images[..40 * 784].to_vec(),
        labels: ds.train.labels[..40].to_vec(),
        len: 40,
    };
    let s = spec(&[784, 6, 10], Activation::Relu, Loss::Mse);
    let (b, k) = (6, 2);
    let mut opts = EngineOptions::new(b);
    opts.replicas = k;
    let engine = Engine::new(ctx(), &s, opts).unwrap();
    let dev = DeviceSplit::new(&engine, &split, true).unwrap();
    let orders: Vec<Vec<u32>> = (0..k)
        .map(|r| arelax::train::epoch_order(r as u64 + 5, 0, 40))
        .collect();
    for (r, o) in orders.iter().enumerate() {
        dev.set_replica_order(&engine, r, o).unwrap();
    }
    assert!(dev.set_replica_order(&engine, k, &orders[0]).is_err());
    let mut enc = ctx().device.create_command_encoder(&Default::default());
    dev.encode_gather(&engine, &mut enc, 3);
    ctx().queue.submit([enc.finish()]);
    let x0 = &engine.activities().unwrap()[0];
    let target = ctx()
        .read_f32(&engine.bufs.target, 0, (k * b * 10) as u64)
        .unwrap();
    for (r, o) in orders.iter().enumerate() {
        let idx: Vec<usize> = o[3 * b..4 * b].iter().map(|&i| i as usize).collect();
        let (want_x, want_t) = data::one_hot_batch(&split, &idx);
        assert_eq!(
            &x0[r * b * 784..(r + 1) * b * 784],
            &want_x[..],
            "pixels {r}"
        );
        assert_eq!(
            &target[r * b * 10..(r + 1) * b * 10],
            &want_t[..],
            "targets {r}"
        );
    }
}

/// Whole runs side by side equal the same runs one at a time, for exact AR, learned backward
/// weights (ψ per replica), no derivative, the sweep schedule and backprop; and a side-by-side
/// run resumes bit for bit.
#[test]
fn seeds_side_by_side_train_like_seeds_one_at_a_time() {
    for preset in ["ar", "learned-backward", "no-derivative", "bp"] {
        let mut cfg = tiny(preset, 2);
        if preset == "no-derivative" {
            cfg.schedule = arelax::train::config::Schedule::Sweep;
        }
        let root = temp_dir(&format!("side-{preset}"));
        let runs = side_by_side_matches_alone(&cfg, &root, [3, 8], preset);
        for (seed, dir) in &runs {
            // The run directory says which seed it holds.
            let saved = std::fs::read_to_string(dir.join("config.toml")).unwrap();
            assert!(saved.contains(&format!("seed = {seed}")), "{saved}");
            assert!(dir.join("checkpoint.safetensors").exists());
        }
        assert_ne!(
            std::fs::read(runs[0].1.join("metrics.csv")).unwrap(),
            std::fs::read(runs[1].1.join("metrics.csv")).unwrap(),
            "{preset}: the two seeds should differ"
        );
        if preset == "ar" {
            resume_side_by_side(&cfg, &root);
        }
        let _ = std::fs::remove_dir_all(root);
    }
}

/// Graph models too: the CNN example with learned backward weights (ψ of convolutions per
/// replica), side by side and alone.
#[test]
fn graph_seeds_side_by_side_train_like_seeds_one_at_a_time() {
    let mut cfg = tiny("learned-backward", 1);
    cfg.model = Some(PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/cnn.toml"
    )));
    cfg.batch_size = 8;
    cfg.train_limit = Some(64);
    let root = temp_dir("graph-side");
    side_by_side_matches_alone(&cfg, &root, [4, 9], "cnn");
    let _ = std::fs::remove_dir_all(root);
}

/// Trains `seeds` side by side under `root`, then each alone, and checks every pair is the same
/// run; returns the side-by-side runs (seed, directory).
fn side_by_side_matches_alone(
    cfg: &TrainConfig,
    root: &Path,
    seeds: [u64; 2],
    what: &str,
) -> Vec<(u64, PathBuf)> {
    let runs: Vec<(u64, PathBuf)> = seeds
        .iter()
        .map(|&s| (s, root.join(format!("side-{s}"))))
        .collect();
    let side = arelax::train::run_seeds(ctx(), cfg, &runs, Mode::New, &mut Quiet).unwrap();
    for ((seed, _), result) in runs.iter().zip(side) {
        let mut one = cfg.clone();
        one.seed = *seed;
        let alone_dir = root.join(format!("alone-{seed}"));
        let alone =
            arelax::train::run_with(ctx(), &one, &alone_dir, Mode::New, &mut Quiet).unwrap();
        assert_same_run(&result.unwrap(), &alone, &format!("{what} seed {seed}"));
    }
    runs
}

fn resume_side_by_side(cfg: &TrainConfig, root: &Path) {
    let runs: Vec<(u64, PathBuf)> = [3u64, 8]
        .iter()
        .map(|&s| (s, root.join(format!("resumed-{s}"))))
        .collect();
    let mut first = cfg.clone();
    first.epochs = 1;
    for r in arelax::train::run_seeds(ctx(), &first, &runs, Mode::New, &mut Quiet).unwrap() {
        r.unwrap();
    }
    let resumed = arelax::train::run_seeds(ctx(), cfg, &runs, Mode::Resume, &mut Quiet).unwrap();
    for ((seed, _), r) in runs.iter().zip(resumed) {
        let r = r.unwrap();
        let side =
            arelax::train::run_dir::RunDir::open(&root.join(format!("side-{seed}")), Mode::Resume)
                .unwrap()
                .resume_state()
                .unwrap();
        assert_eq!(r.metrics.len(), 2);
        for (x, y) in r.metrics.iter().zip(&side.metrics) {
            assert_eq!(
                (x.train_loss, x.test_accuracy),
                (y.train_loss, y.test_accuracy),
                "seed {seed}: resumed side by side"
            );
        }
    }
}

/// A replica whose weights are not finite diverges alone: the others train exactly as they
/// would without it.
#[test]
fn a_diverging_replica_does_not_disturb_the_others() {
    let cfg = tiny("ar", 1);
    let data = arelax::train::prepare_data(&cfg).unwrap();
    let mut side = Trainer::with_seeds(ctx(), &cfg, &data, &[3, 8]).unwrap();
    side.initialise().unwrap();
    let mut broken = side.net.replica_params(1).unwrap();
    // The output bias: no activation can swallow it (ReLU's max may drop a NaN).
    broken.last_mut().unwrap().bias[0] = f32::NAN;
    side.net.set_replica_params(1, &broken).unwrap();
    let out = side.epoch_replicas(0, &mut Quiet).unwrap();
    let msg = out[1].as_ref().unwrap_err();
    assert!(msg.contains("seed 8") && msg.contains("diverged"), "{msg}");
    let ok = out[0].as_ref().unwrap();

    let mut one_cfg = cfg.clone();
    one_cfg.seed = 3;
    let mut alone = Trainer::new(ctx(), &one_cfg, &data).unwrap();
    alone.initialise().unwrap();
    let m = alone.epoch(0, &mut Quiet).unwrap();
    assert!((ok.train_loss - m.train_loss).abs() <= 1e-6 * m.train_loss);
    let (a, b) = (
        side.net.replica_params(0).unwrap(),
        alone.net.params().unwrap(),
    );
    for (g, h) in a.iter().zip(&b) {
        assert!(max_rel_diff(&g.weight, &h.weight) < 1e-6, "{}", g.name);
    }
}

/// An experiment with `parallel_seeds` gives the table of one run at a time; conditions that
/// cannot share an engine (adaptive relaxation) still run, one seed at a time.
#[test]
fn an_experiment_with_parallel_seeds_matches_one_at_a_time() {
    let out = temp_dir("experiment");
    std::fs::create_dir_all(&out).unwrap();
    let text = |parallel: usize| {
        format!(
            "parallel_seeds = {parallel}\nconditions = [\"ar\", \"feedback-alignment\", {{ name = \"adaptive\", relax_tol = 0.01 }}]\nseeds = [1, 2, 3]\ndatasets = [\"mnist\"]\n[data]\nmnist = \"{}\"\n[base]\nlayers = \"784,8,10\"\nepochs = 1\nrelax_steps = 3\ntrain_limit = 192\ntest_limit = 64\nlr = 0.002\n",
            mnist_dir().display()
        )
    };
    use arelax::train::experiment::{ExperimentConfig, Limits, run};
    let mut tables = Vec::new();
    for parallel in [1, 2] {
        let path = out.join(format!("p{parallel}.toml"));
        std::fs::write(&path, text(parallel)).unwrap();
        let exp = ExperimentConfig::load(&path).unwrap();
        assert_eq!(exp.parallel_seeds(), parallel);
        let dir = out.join(format!("p{parallel}"));
        let mut lines = Vec::new();
        let (s, left) = run(ctx(), &exp, &path, &dir, Limits::default(), &mut |l| {
            lines.push(l.to_string())
        })
        .unwrap();
        assert_eq!(left, 0);
        assert!(s.iter().all(|r| r.runs == 3), "{s:?}");
        if parallel == 2 {
            let side = lines.iter().filter(|l| l.contains("side by side")).count();
            // Seeds 1 and 2 of the two fixed-step conditions; seed 3 and `adaptive` go alone.
            assert_eq!(side, 4, "{lines:#?}");
        }
        tables.push(s);
    }
    for (a, b) in tables[0].iter().zip(&tables[1]) {
        assert_eq!(a.condition, b.condition);
        assert!(
            (a.test_accuracy_mean - b.test_accuracy_mean).abs() < 1e-9
                && (a.grad_angle_mean - b.grad_angle_mean).abs() < 1e-3,
            "{a:?} vs {b:?}"
        );
    }
    // Runs that stopped after the same epoch resume side by side: reopen two finished runs as if
    // interrupted after epoch 1 and extend the grid to 2 epochs.
    let dir = out.join("p2");
    for seed in [1, 2] {
        let state = dir.join(format!("mnist/ar/seed-{seed}/state.json"));
        let text = std::fs::read_to_string(&state).unwrap();
        assert!(text.contains("\"finished\": true"), "{text}");
        std::fs::write(
            &state,
            text.replace("\"finished\": true", "\"finished\": false"),
        )
        .unwrap();
    }
    let path = out.join("p2-longer.toml");
    std::fs::write(&path, text(2).replace("epochs = 1", "epochs = 2")).unwrap();
    let exp = ExperimentConfig::load(&path).unwrap();
    let mut lines = Vec::new();
    run(ctx(), &exp, &path, &dir, Limits::default(), &mut |l| {
        lines.push(l.to_string())
    })
    .unwrap();
    assert_eq!(
        lines.len(),
        2,
        "only the two reopened runs train: {lines:#?}"
    );
    for l in &lines {
        assert!(
            l.contains("after 2 epochs") && l.contains("2 seeds side by side"),
            "{l}"
        );
    }
    let bad = ExperimentConfig::parse(
        &out.join("bad.toml"),
        "parallel_seeds = 0\nconditions = [\"ar\"]\nseeds = [1]\ndatasets = [\"mnist\"]\n",
    );
    assert!(bad.unwrap_err().to_string().contains("parallel_seeds"));
    let _ = std::fs::remove_dir_all(out);
}

/// Options that cannot hold several replicas say so.
#[test]
fn replicas_reject_what_they_cannot_do() {
    let s = spec(&[9, 6, 4], Activation::Relu, Loss::Mse);
    let mut opts = EngineOptions::new(4);
    opts.replicas = 2;
    opts.relax_tol = Some(1e-3);
    let err = Engine::new(ctx(), &s, opts.clone()).err().unwrap();
    assert!(err.to_string().contains("replicas"), "{err}");
    opts.relax_tol = None;
    opts.feedback = Feedback::Random;
    let engine = Engine::new(ctx(), &s, opts).unwrap();
    let p = Params::init(&s, Init::FanIn, 1);
    assert!(engine.set_replica_params(2, &p).is_err());
    assert!(engine.replica_params(2).is_err());
    engine.set_replica_feedback(1, &p).unwrap();
    assert_eq!(engine.replica_feedback(1).unwrap().unwrap(), p);
}

/// `relax_kernel = "auto"` for seeds side by side times both kernels with that many copies and
/// records the winner in every run's config.
#[test]
fn auto_kernel_choice_for_seeds_side_by_side_is_recorded() {
    let mut cfg = tiny("ar", 1);
    cfg.relax_kernel = arelax::train::config::KernelChoice::Auto;
    let root = temp_dir("auto");
    let runs: Vec<(u64, PathBuf)> = [2u64, 6]
        .iter()
        .map(|&s| (s, root.join(format!("seed-{s}"))))
        .collect();
    let mut notes = Notes(Vec::new());
    for r in arelax::train::run_seeds(ctx(), &cfg, &runs, Mode::New, &mut notes).unwrap() {
        r.unwrap();
    }
    assert!(
        notes
            .0
            .iter()
            .any(|n| n.contains("relaxation kernel: measured")),
        "{:?}",
        notes.0
    );
    let chosen: Vec<String> = runs
        .iter()
        .map(|(_, dir)| {
            let text = std::fs::read_to_string(dir.join("config.toml")).unwrap();
            let line = text
                .lines()
                .find(|l| l.starts_with("relax_kernel"))
                .unwrap()
                .to_string();
            assert!(!line.contains("auto"), "{line}");
            line
        })
        .collect();
    assert_eq!(chosen[0], chosen[1]);
    let _ = std::fs::remove_dir_all(root);
}

struct Notes(Vec<String>);
impl arelax::train::Progress for Notes {
    fn note(&mut self, line: &str) {
        self.0.push(line.to_string());
    }
}
