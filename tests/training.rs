//! The training path on lavapipe: batches gathered on the GPU, epoch sums, adaptive and sweep
//! relaxation against the CPU reference, resumption bit for bit, settings resolution, experiments.

mod common;

use arelax::engine::Ops as _;
use std::path::PathBuf;
use std::sync::OnceLock;

use arelax::data::{self, Dataset, DatasetKind, Split};
use arelax::engine::feed::DeviceSplit;
use arelax::engine::{Engine, EngineOptions};
use arelax::model::{Activation, Init, Loss, Params, Reduction};
use arelax::reference::{self as cpu, Params64};
use arelax::train::config::{KernelChoice, Overrides, TrainConfig, parse_overrides};
use arelax::train::run_dir::Mode;
use common::*;

fn mnist_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"))
}

fn mnist() -> &'static Dataset {
    static DS: OnceLock<Dataset> = OnceLock::new();
    DS.get_or_init(|| data::load(&mnist_dir(), DatasetKind::Mnist).unwrap())
}

fn subset(s: &Split, n: usize) -> Split {
    Split {
        images: s.images[..n * 784].to_vec(),
        labels: s.labels[..n].to_vec(),
        len: n,
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("arelax-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn batches_are_gathered_on_the_gpu_exactly() {
    let s = spec(&[784, 12, 10], Activation::Relu, Loss::Mse);
    let b = 7;
    let engine = Engine::new(ctx(), &s, EngineOptions::new(b)).unwrap();
    let split = subset(&mnist().train, 50);
    let dev = DeviceSplit::new(&engine, &split, true).unwrap();
    let mut order: Vec<u32> = (0..50).collect();
    arelax::rng::Rng::new(3).shuffle(&mut order);
    dev.set_order(&engine, &order).unwrap();
    let mut enc = ctx().device.create_command_encoder(&Default::default());
    dev.encode_gather(&engine, &mut enc, 2);
    ctx().queue.submit([enc.finish()]);
    let x0 = &engine.activities().unwrap()[0];
    let target = ctx()
        .read_f32(&engine.bufs.target, 0, (b * 10) as u64)
        .unwrap();
    let idx: Vec<usize> = order[2 * b..3 * b].iter().map(|&i| i as usize).collect();
    let (want_x, want_t) = data::one_hot_batch(&split, &idx);
    assert_eq!(x0, &want_x, "pixels");
    assert_eq!(target, want_t, "one-hot targets");
}

#[test]
fn evaluation_sums_match_the_reference_with_a_partial_last_batch() {
    for loss in [Loss::Mse, Loss::Ce] {
        let s = spec(&[784, 20, 10], Activation::Tanh, loss);
        let engine = Engine::new(ctx(), &s, EngineOptions::new(64)).unwrap();
        let params = Params::init(&s, Init::FanIn, 2);
        engine.set_params(&params).unwrap();
        let split = subset(&mnist().test, 150); // 64 + 64 + 22
        let dev = DeviceSplit::new(&engine, &split, false).unwrap();
        let sums = dev.evaluate(&engine).unwrap();
        let idx: Vec<usize> = (0..150).collect();
        let (x, t) = data::one_hot_batch(&split, &idx);
        let fwd = cpu::forward(&s, &Params64::from(&params), &to64(&x), 150);
        let out = cpu::output_error(&s, &fwd, &to64(&t), Reduction::Sum);
        let loss_sum: f64 = out.loss.iter().sum();
        let correct = out.correct.iter().filter(|&&c| c).count();
        assert_eq!(sums.samples, 150.0);
        assert_eq!(sums.correct, correct as f64, "{loss}: correct count");
        assert!(
            (sums.loss - loss_sum).abs() < 1e-4 * loss_sum,
            "{loss}: {} vs {loss_sum}",
            sums.loss
        );
        assert_eq!(sums.diverged_at, None);
    }
}

/// Adaptive relaxation stops where the CPU's criterion says, and its state and gradients are the
/// CPU's after that many steps.
#[test]
fn adaptive_relaxation_stops_where_the_reference_does() {
    let s = spec(&[30, 24, 20, 16, 10], Activation::Relu, Loss::Mse);
    for tol in [1e-2f32, 1e-4] {
        let mut opts = EngineOptions::new(9);
        opts.relax_tol = Some(tol);
        opts.relax_rate = 0.2;
        let mut p = problem(&s, opts, Init::FanIn, 21);
        let g_gpu = p.engine.ar_gradients(400).unwrap();
        let used = p.engine.last_relax_steps().unwrap().unwrap();
        let w = Params64::from(&p.params);
        let fwd = cpu::forward(&s, &w, &to64(&p.input), 9);
        let out = cpu::output_error(&s, &fwd, &to64(&p.target), Reduction::Sum);
        let mut r = cpu::relax_start(&s, &fwd, &out.g, true);
        let mut steps = 0;
        loop {
            let next = cpu::relax_step(&s, &w, &fwd, &r, 0.2, true);
            steps += 1;
            let change = cpu::relative_change(&next, &r);
            r = next;
            if change < tol as f64 || steps == 400 {
                break;
            }
        }
        assert!(steps < 400, "reference did not converge");
        assert!(
            used.abs_diff(steps) <= 1,
            "tol {tol}: GPU stopped after {used}, CPU after {steps}"
        );
        let mut r = cpu::relax_start(&s, &fwd, &out.g, true);
        for _ in 0..used {
            r = cpu::relax_step(&s, &w, &fwd, &r, 0.2, true);
        }
        let g = cpu::gradients(&s, &fwd, &r, true);
        for l in 0..s.depth() {
            let e = rel_err(&g_gpu.weights[l], &g.weights[l]);
            assert!(e < 1e-4, "tol {tol}: grad {l} rel. error {e}");
        }
    }
}

#[test]
fn sweep_schedule_matches_the_reference_gauss_seidel() {
    let s = spec(&[20, 17, 13, 9, 5], Activation::Sigmoid, Loss::Ce);
    let mut opts = EngineOptions::new(6);
    opts.sweep = true;
    opts.relax_rate = 0.3;
    let mut p = problem(&s, opts, Init::FanIn, 22);
    let g_gpu = p.engine.ar_gradients(4).unwrap();
    let w = Params64::from(&p.params);
    let fwd = cpu::forward(&s, &w, &to64(&p.input), 6);
    let out = cpu::output_error(&s, &fwd, &to64(&p.target), Reduction::Sum);
    let mut r = cpu::relax_start(&s, &fwd, &out.g, true);
    for _ in 0..4 {
        r = cpu::relax_sweep_step(&s, &w, &fwd, &r, 0.3, true);
    }
    let state = p.engine.state().unwrap();
    for l in 1..s.depth() {
        let e = rel_err(&state[l], &r[l]);
        assert!(e < 1e-5, "r_{l} rel. error {e}");
    }
    let g = cpu::gradients(&s, &fwd, &r, true);
    for l in 0..s.depth() {
        let e = rel_err(&g_gpu.weights[l], &g.weights[l]);
        assert!(e < 1e-4, "grad {l} rel. error {e}");
    }
}

fn tiny_config(epochs: usize) -> TrainConfig {
    TrainConfig::resolve(None, &tiny_flags(epochs)).unwrap()
}

fn tiny_flags(epochs: usize) -> Overrides {
    Overrides {
        data: Some(mnist_dir()),
        layers: Some("784,16,10".into()),
        epochs: Some(epochs),
        relax_steps: Some(5),
        relax_rate: Some(0.5),
        lr: Some(0.002),
        train_limit: Some(640),
        test_limit: Some(100),
        ..Default::default()
    }
}

#[test]
fn resuming_gives_bit_identical_results() {
    let a = temp_dir("uninterrupted");
    let b = temp_dir("resumed");
    let full = arelax::train::run_with(
        ctx(),
        &tiny_config(3),
        &a,
        Mode::New,
        &mut arelax::train::Quiet,
    )
    .unwrap();
    arelax::train::run_with(
        ctx(),
        &tiny_config(1),
        &b,
        Mode::New,
        &mut arelax::train::Quiet,
    )
    .unwrap();
    let resumed = arelax::train::run_with(
        ctx(),
        &tiny_config(3),
        &b,
        Mode::Resume,
        &mut arelax::train::Quiet,
    )
    .unwrap();
    assert_eq!(full.params, resumed.params, "final weights differ");
    assert_eq!(resumed.metrics.len(), 3);
    for (x, y) in full.metrics.iter().zip(&resumed.metrics) {
        assert_eq!(
            (x.train_loss, x.test_accuracy),
            (y.train_loss, y.test_accuracy)
        );
    }
    assert!(
        full.metrics[2].test_accuracy > 0.3,
        "the tiny run should learn: {:?}",
        full.metrics[2]
    );
    // A finished run is not overwritten without --force.
    let err = arelax::train::run_with(
        ctx(),
        &tiny_config(3),
        &a,
        Mode::New,
        &mut arelax::train::Quiet,
    )
    .unwrap_err();
    assert!(err.to_string().contains("finished run"), "{err}");
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn settings_resolve_defaults_preset_file_then_flags() {
    let file = parse_overrides(
        std::path::Path::new("x.toml"),
        "preset = \"feedback-alignment\"\nrelax_derivative = false\nepochs = 3\n",
    )
    .unwrap();
    let flags = Overrides {
        epochs: Some(5),
        ..Default::default()
    };
    let cfg = TrainConfig::resolve(Some(&file), &flags).unwrap();
    assert_eq!(cfg.epochs, 5, "flags win over the file");
    assert!(!cfg.relax_derivative, "the file wins over the preset");
    assert_eq!(
        cfg.feedback,
        arelax::engine::Feedback::Random,
        "the preset applies"
    );
    assert_eq!(cfg.lr, 0.0005, "the paper's default");
    // The written config reads back to the same settings.
    let again = TrainConfig::resolve(
        Some(&parse_overrides(std::path::Path::new("c"), &cfg.to_toml()).unwrap()),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(again, cfg);
}

#[test]
fn bad_settings_name_the_key() {
    let p = std::path::Path::new("bad.toml");
    let e = parse_overrides(p, "epochs = 3\nrelax_sped = 4\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.toml") && e.contains("line 2") && e.contains("relax_sped"),
        "{e}"
    );
    let e = parse_overrides(p, "epochs = \"many\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1"), "{e}");
    for (flags, key) in [
        (
            Overrides {
                batch_size: Some(0),
                ..Default::default()
            },
            "batch_size",
        ),
        (
            Overrides {
                relax_rate: Some(2.5),
                ..Default::default()
            },
            "relax_rate",
        ),
        (
            Overrides {
                relax_rate: Some(0.0),
                ..Default::default()
            },
            "relax_rate",
        ),
        (
            Overrides {
                relax_steps: Some(0),
                ..Default::default()
            },
            "relax_steps",
        ),
        (
            Overrides {
                lr: Some(f64::NAN),
                ..Default::default()
            },
            "lr",
        ),
        (
            Overrides {
                preset: Some("magic".into()),
                ..Default::default()
            },
            "preset",
        ),
        (
            Overrides {
                layers: Some("784,0,10".into()),
                ..Default::default()
            },
            "layers",
        ),
        (
            Overrides {
                activation: Some("swish".into()),
                ..Default::default()
            },
            "activation",
        ),
    ] {
        let e = TrainConfig::resolve(None, &flags).unwrap_err().to_string();
        assert!(e.contains(key), "{key}: {e}");
    }
}

#[test]
fn a_tiny_experiment_writes_its_table_and_plot() {
    let out = temp_dir("experiment");
    std::fs::create_dir_all(&out).unwrap();
    let path = out.join("tiny.toml");
    std::fs::write(
        &path,
        format!(
            "conditions = [\"ar\", \"bp\", {{ name = \"ar-current-fprime\", relax_fprime = \"current\" }}]\nseeds = [1, 2]\ndatasets = [\"mnist\"]\n[data]\nmnist = \"{}\"\n[base]\nlayers = \"784,8,8,10\"\nepochs = 1\nrelax_steps = 3\ntrain_limit = 256\ntest_limit = 64\nlr = 0.002\n",
            mnist_dir().display()
        ),
    )
    .unwrap();
    let exp = arelax::train::experiment::ExperimentConfig::load(&path).unwrap();
    use arelax::train::experiment::{Limits, run};
    // Past its time limit, an invocation starts nothing and says how many runs are left.
    let past = Limits {
        deadline: Some(std::time::Instant::now()),
        ..Limits::default()
    };
    let (s, left) = run(ctx(), &exp, &path, &out, past, &mut |_| {}).unwrap();
    assert_eq!(left, 6);
    assert!(s.iter().all(|r| r.runs == 0), "{s:?}");
    let (s, left) = run(ctx(), &exp, &path, &out, Limits::default(), &mut |_| {}).unwrap();
    assert_eq!(left, 0);
    assert_eq!(s.len(), 3);
    assert!(
        s.iter()
            .all(|r| r.runs == 2 && r.test_accuracy_mean.is_finite())
    );
    // Finished runs are not run again; a diverged one counts as diverged, not as a result.
    arelax::train::run_dir::mark_diverged(&out.join("mnist/bp/seed-2"), "test").unwrap();
    let mut ran = 0;
    let (s, _) = run(ctx(), &exp, &path, &out, past, &mut |_| ran += 1).unwrap();
    assert_eq!(ran, 0);
    let bp = s.iter().find(|r| r.condition == "bp").unwrap();
    assert_eq!((bp.runs, bp.diverged), (1, 1));
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        md.contains("| mnist | ar |") && md.contains("| mnist | bp |"),
        "{md}"
    );
    assert!(md.contains("| mnist | ar-current-fprime |"), "{md}");
    // Against bp on the seeds both finished: seed 1 only, now that bp's seed 2 diverged.
    let ar = s.iter().find(|r| r.condition == "ar").unwrap();
    assert_eq!(ar.finals.len(), 2);
    let (d, n) = ar.paired_difference(bp).unwrap();
    let seed1 =
        |r: &arelax::train::experiment::Summary| r.finals.iter().find(|f| f.0 == 1).unwrap().1;
    assert_eq!((d, n), (seed1(ar) - seed1(bp), 1));
    let row = |name: &str| {
        let start = format!("| mnist | {name} |");
        md.lines()
            .find(|l| l.starts_with(&start))
            .unwrap()
            .to_string()
    };
    assert!(
        row("ar").ends_with(&format!("| {:+.2} (1) |", 100.0 * d)),
        "{md}"
    );
    assert!(row("bp").ends_with("| — |"), "{md}");
    let cfg =
        std::fs::read_to_string(out.join("mnist/ar-current-fprime/seed-1/config.toml")).unwrap();
    assert!(cfg.contains("relax_fprime = \"current\""), "{cfg}");
    // A custom condition needs a name fit for a directory.
    let bad = arelax::train::experiment::ExperimentConfig::parse(
        &path,
        "conditions = [{ relax_fprime = \"current\" }]\nseeds = [1]\ndatasets = [\"mnist\"]\n",
    );
    assert!(bad.unwrap_err().to_string().contains("needs a name"));
    assert!(out.join("accuracy-mnist.png").exists());
    let _ = std::fs::remove_dir_all(out);
}

/// A graph model (the residual example) trains through the same loop, and resumes bit for bit.
#[test]
fn a_graph_model_trains_and_resumes() {
    let model = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/residual-mlp.toml"
    ));
    let cfg = |epochs| {
        let flags = Overrides {
            data: Some(mnist_dir()),
            model: Some(model.clone()),
            epochs: Some(epochs),
            relax_steps: Some(8),
            relax_rate: Some(0.5),
            lr: Some(0.002),
            train_limit: Some(640),
            test_limit: Some(100),
            preset: Some("learned-backward".into()),
            ..Default::default()
        };
        TrainConfig::resolve(None, &flags).unwrap()
    };
    let a = temp_dir("graph-full");
    let b = temp_dir("graph-resumed");
    let full =
        arelax::train::run_with(ctx(), &cfg(2), &a, Mode::New, &mut arelax::train::Quiet).unwrap();
    arelax::train::run_with(ctx(), &cfg(1), &b, Mode::New, &mut arelax::train::Quiet).unwrap();
    let resumed =
        arelax::train::run_with(ctx(), &cfg(2), &b, Mode::Resume, &mut arelax::train::Quiet)
            .unwrap();
    assert_eq!(full.params, resumed.params);
    assert!(full.metrics[1].test_accuracy > 0.3, "{:?}", full.metrics[1]);
    let ckpt = arelax::checkpoint::TensorFile::load(&a.join("checkpoint.safetensors")).unwrap();
    for name in ["h1.weight", "h2.bias", "out.weight", "feedback.h1.weight"] {
        assert!(ckpt.tensors.contains_key(name), "{name} missing");
    }
    assert!(
        ckpt.metadata
            .get("model")
            .is_some_and(|m| m.contains("residual") || m.contains("add"))
    );
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Every shipped experiment file resolves every one of its runs (model files included).
#[test]
fn shipped_experiment_files_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/experiments");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            // Relative data and model paths are relative to the repository root.
            std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
            let exp = arelax::train::experiment::ExperimentConfig::load(&path)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            assert!(!exp.conditions.is_empty());
            n += 1;
        }
    }
    assert!(n >= 3, "expected the shipped experiments");
}

/// `relax_kernel = "cooperative"` trains exactly the tiled kernel's run (the same tiles and sums,
/// bit for bit), and `cooperative_groups` is written to and read from config.toml.
#[test]
fn the_cooperative_kernel_trains_exactly_like_the_tiled_one() {
    let cfg = tiny_config(1);
    let a = temp_dir("tiled-kernel-2");
    let tiled =
        arelax::train::run_with(ctx(), &cfg, &a, Mode::New, &mut arelax::train::Quiet).unwrap();
    let file = parse_overrides(
        std::path::Path::new("k.toml"),
        "relax_kernel = \"cooperative\"\ncooperative_groups = 1\n",
    )
    .unwrap();
    let cfg = TrainConfig::resolve(Some(&file), &tiny_flags(1)).unwrap();
    assert_eq!(cfg.relax_kernel, KernelChoice::Cooperative);
    assert_eq!(cfg.cooperative_groups, Some(1));
    let text = cfg.to_toml();
    assert!(text.contains("relax_kernel = \"cooperative\""), "{text}");
    assert!(text.contains("cooperative_groups = 1"), "{text}");
    let b = temp_dir("cooperative-kernel");
    let coop =
        arelax::train::run_with(ctx(), &cfg, &b, Mode::New, &mut arelax::train::Quiet).unwrap();
    for (x, y) in tiled.params.iter().zip(&coop.params) {
        assert_eq!(x.weight, y.weight, "{}", x.name);
        assert_eq!(x.bias, y.bias, "{}", x.name);
    }
    assert_eq!(
        tiled.metrics[0].test_accuracy,
        coop.metrics[0].test_accuracy
    );
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// `relax_kernel = "resident"` is a speed choice: training with it follows the tiled kernel's
/// run (the same sums in another order), and it is written to and read from config.toml.
#[test]
fn the_resident_kernel_trains_like_the_tiled_one() {
    let mut cfg = tiny_config(1);
    let a = temp_dir("tiled-kernel");
    let tiled =
        arelax::train::run_with(ctx(), &cfg, &a, Mode::New, &mut arelax::train::Quiet).unwrap();
    let file = parse_overrides(
        std::path::Path::new("k.toml"),
        "relax_kernel = \"resident\"\n",
    )
    .unwrap();
    cfg = TrainConfig::resolve(Some(&file), &tiny_flags(1)).unwrap();
    assert_eq!(cfg.relax_kernel, KernelChoice::Resident);
    assert!(cfg.to_toml().contains("relax_kernel = \"resident\""));
    let b = temp_dir("resident-kernel");
    let resident =
        arelax::train::run_with(ctx(), &cfg, &b, Mode::New, &mut arelax::train::Quiet).unwrap();
    for (x, y) in tiled.params.iter().zip(&resident.params) {
        let e = rel_err(
            &y.weight,
            &x.weight.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        );
        assert!(e < 1e-3, "weights differ by {e}");
    }
    let (x, y) = (&tiled.metrics[0], &resident.metrics[0]);
    assert!(
        (x.test_accuracy - y.test_accuracy).abs() <= 0.02,
        "{x:?} vs {y:?}"
    );
    let bad = parse_overrides(std::path::Path::new("k.toml"), "relax_kernel = \"fast\"\n")
        .map_err(|e| e.to_string())
        .and_then(|f| {
            TrainConfig::resolve(Some(&f), &Overrides::default()).map_err(|e| e.to_string())
        });
    assert!(bad.unwrap_err().contains("relax_kernel"));
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// `relax_kernel = "auto"` settles on a kernel when the run starts and records it; a resumed run
/// keeps the recorded one whatever a new measurement would say.
#[test]
fn the_auto_kernel_choice_is_recorded_and_kept_on_resume() {
    let mut cfg = tiny_config(1);
    cfg.relax_kernel = KernelChoice::Auto;
    let dir = temp_dir("auto-kernel");
    arelax::train::run_with(ctx(), &cfg, &dir, Mode::New, &mut arelax::train::Quiet).unwrap();
    let chosen = |dir: &std::path::Path| {
        let saved = arelax::train::run_dir::RunDir::saved_config(dir).unwrap();
        TrainConfig::resolve(Some(&saved), &Overrides::default())
            .unwrap()
            .relax_kernel
    };
    let first = chosen(&dir);
    assert_ne!(first, KernelChoice::Auto, "the choice is recorded");
    // Pretend the directory chose the other kernel: resuming must keep it.
    let other = match first {
        KernelChoice::Tiled => ("tiled", "resident", KernelChoice::Resident),
        KernelChoice::Resident => ("resident", "tiled", KernelChoice::Tiled),
        _ => ("cooperative", "tiled", KernelChoice::Tiled),
    };
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("relax_kernel = \"{}\"", other.0),
        &format!("relax_kernel = \"{}\"", other.1),
    );
    std::fs::write(&path, text).unwrap();
    let mut more = cfg.clone();
    more.epochs = 2;
    let r = arelax::train::run_with(ctx(), &more, &dir, Mode::Resume, &mut arelax::train::Quiet)
        .unwrap();
    assert_eq!(r.metrics.len(), 2);
    assert_eq!(chosen(&dir), other.2);
    let _ = std::fs::remove_dir_all(dir);
}

/// `resident_shape = "tune"` settles on a shape when the run starts (one of those timed) and
/// records it; a resumed run keeps the recorded one without timing again.
#[test]
fn a_tuned_resident_shape_is_recorded_and_kept_on_resume() {
    let mut cfg = tiny_config(1);
    cfg.relax_kernel = KernelChoice::Resident;
    cfg.resident_shape = Some("tune".into());
    let dir = temp_dir("tuned-shape");
    let mut notes = Notes::default();
    arelax::train::run_with(ctx(), &cfg, &dir, Mode::New, &mut notes).unwrap();
    let shape = |dir: &std::path::Path| {
        let saved = arelax::train::run_dir::RunDir::saved_config(dir).unwrap();
        TrainConfig::resolve(Some(&saved), &Overrides::default())
            .unwrap()
            .resident_shape
            .unwrap()
    };
    let first = shape(&dir);
    let timed: Vec<&String> = notes.0.iter().filter(|n| n.contains("measured")).collect();
    assert_eq!(timed.len(), 1, "{:?}", notes.0);
    assert!(
        timed[0].contains(&format!("{first} ")) && timed[0].ends_with(&format!("using {first}")),
        "{first}: {}",
        timed[0]
    );
    // Resuming keeps the recorded shape (pretend another was chosen) and times nothing.
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("resident_shape = \"{first}\""),
        "resident_shape = \"r2-t64\"",
    );
    std::fs::write(&path, text).unwrap();
    let mut more = cfg.clone();
    more.epochs = 2;
    let mut notes = Notes::default();
    let r = arelax::train::run_with(ctx(), &more, &dir, Mode::Resume, &mut notes).unwrap();
    assert_eq!(r.metrics.len(), 2);
    assert_eq!(shape(&dir), "r2-t64");
    assert!(
        !notes.0.iter().any(|n| n.contains("measured")),
        "{:?}",
        notes.0
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A progress sink that keeps the run's notes.
#[derive(Default)]
struct Notes(Vec<String>);

impl arelax::train::Progress for Notes {
    fn note(&mut self, line: &str) {
        self.0.push(line.to_string());
    }
}

/// A contender that cannot run is ruled out with its error while the others are timed.
#[test]
fn a_contest_rules_out_what_cannot_run() {
    use arelax::engine::RelaxKernel;
    use arelax::engine::net::Model;
    use arelax::engine::tune::{Workload, contest};
    let model = Model::Mlp(spec(&[12, 40, 30, 4], Activation::Tanh, Loss::Mse));
    let tiled = EngineOptions::new(5);
    let mut too_big = tiled.clone();
    too_big.relax_kernel = RelaxKernel::Resident;
    // 64 rows of 34 inputs each: 8.7 KB of workgroup memory is fine, 3000 threads are not.
    too_big.resident = "r64-t3000".parse().unwrap();
    let work = Workload {
        algorithm: arelax::engine::Algorithm::Ar,
        steps: 3,
        init: Init::FanIn,
        feedback_init: Init::FanIn,
        seed: 1,
    };
    let times = contest(&ctx(), &model, &[tiled, too_big], &work).unwrap();
    assert!(times[0].as_ref().is_ok_and(|ms| *ms > 0.0), "{times:?}");
    let err = times[1].as_ref().unwrap_err().to_string();
    assert!(err.contains("3000 threads"), "{err}");
}
