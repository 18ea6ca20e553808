//! The graph engine's kernels against the float64 graph reference, on a graph that uses every
//! node kind with odd sizes, strided and padded convolutions (one into a relaxing node) and
//! overlapping pools.

#![allow(clippy::needless_range_loop)] // index loops mirror the maths

mod common;

use arelax::engine::Ops as _;
use arelax::engine::graph::GraphEngine;
use arelax::engine::{EngineOptions, Feedback, RelaxStart};
use arelax::graph::reference::{self as gref, GraphParams64};
use arelax::graph::{Graph, GraphParams};
use arelax::model::{Init, Reduction};
use common::{ctx, rel_err, to64};

const EVERY_KIND: &str = r#"
loss = "LOSS"
[[node]]
id = "image"
kind = "input"
shape = [2, 9, 9]
[[node]]
id = "c1"
kind = "conv2d"
inputs = ["image"]
channels = 3
kernel = 3
stride = 2
padding = 1
activation = "tanh"
[[node]]
id = "c2"
kind = "conv2d"
inputs = ["image"]
channels = 2
kernel = 3
activation = "leaky-relu"
[[node]]
id = "ap"
kind = "avg-pool"
inputs = ["c2"]
kernel = 3
stride = 1
[[node]]
id = "cat"
kind = "concat"
inputs = ["c1", "ap"]
[[node]]
id = "c3"
kind = "conv2d"
inputs = ["cat"]
channels = 5
kernel = 3
padding = 1
activation = "sigmoid"
[[node]]
id = "sum"
kind = "add"
inputs = ["cat", "c3"]
[[node]]
id = "mp"
kind = "max-pool"
inputs = ["sum"]
kernel = 3
stride = 2
[[node]]
id = "fl"
kind = "flatten"
inputs = ["mp"]
[[node]]
id = "cs"
kind = "conv2d"
inputs = ["sum"]
channels = 2
kernel = 3
stride = 2
padding = 1
activation = "tanh"
[[node]]
id = "fl2"
kind = "flatten"
inputs = ["cs"]
[[node]]
id = "flcat"
kind = "concat"
inputs = ["fl", "fl2"]
[[node]]
id = "d1"
kind = "dense"
inputs = ["flcat"]
units = 7
activation = "tanh"
[[node]]
id = "out"
kind = "dense"
inputs = ["d1"]
units = 4
activation = "linear"
"#;

fn graph(loss: &str) -> Graph {
    Graph::parse(
        std::path::Path::new("every-kind.toml"),
        &EVERY_KIND.replace("LOSS", loss),
    )
    .unwrap()
}

struct Setup {
    g: Graph,
    engine: GraphEngine,
    params: GraphParams,
    input: Vec<f32>,
    target: Vec<f32>,
}

fn setup(g: Graph, opts: EngineOptions, seed: u64) -> Setup {
    let b = opts.batch;
    let engine = GraphEngine::new(ctx(), &g, opts).unwrap();
    let params = GraphParams::init(&g, Init::FanIn, seed);
    engine.set_params(&params).unwrap();
    let mut rng = arelax::rng::Rng::new(seed + 5);
    let input: Vec<f32> = (0..b * g.input_size())
        .map(|_| rng.uniform() as f32)
        .collect();
    let n = g.output_size();
    let mut target = vec![0.0; b * n];
    for i in 0..b {
        target[i * n + rng.below(n)] = 1.0;
    }
    engine.set_batch(&input, &target).unwrap();
    Setup {
        g,
        engine,
        params,
        input,
        target,
    }
}

fn check_grads(g: &Graph, gpu: &GraphParams, cpu: &GraphParams64, tol: f64, what: &str) {
    for i in 0..g.nodes.len() {
        if g.param_shape(i).is_none() {
            continue;
        }
        let e = rel_err(&gpu.weights[i], &cpu.weights[i]);
        assert!(
            e < tol,
            "{what}: weight grad of {} rel. error {e}",
            g.nodes[i].id
        );
        let e = rel_err(&gpu.biases[i], &cpu.biases[i]);
        assert!(
            e < tol,
            "{what}: bias grad of {} rel. error {e}",
            g.nodes[i].id
        );
    }
}

#[test]
fn forward_and_output_error_match_the_reference() {
    for loss in ["mse", "ce"] {
        let g = graph(loss);
        let mut s = setup(g, EngineOptions::new(3), 1);
        s.engine.ar_gradients(0).unwrap();
        let f = gref::forward(&s.g, &GraphParams64::from(&s.params), &to64(&s.input), 3);
        let x = s.engine.activities().unwrap();
        for i in 1..s.g.nodes.len() {
            let e = rel_err(&x[i], &f.x[i]);
            assert!(e < 1e-5, "{loss}: x of {} rel. error {e}", s.g.nodes[i].id);
        }
        let out = gref::output_error(&s.g, &f, &to64(&s.target), Reduction::Sum);
        let (l, correct) = s.engine.batch_stats().unwrap();
        assert!(rel_err(&l, &out.loss) < 1e-5, "{loss}: loss");
        assert_eq!(correct, out.correct);
    }
}

#[test]
fn relaxation_equals_t_jacobi_steps_of_the_reference() {
    for (deriv, start, rate, steps) in [
        (true, RelaxStart::Forward, 0.3, 6),
        (false, RelaxStart::Zero, 0.7, 4),
    ] {
        let g = graph("mse");
        let mut o = EngineOptions::new(3);
        o.relax_derivative = deriv;
        o.update_derivative = deriv;
        o.start = start;
        o.relax_rate = rate as f32;
        let mut s = setup(g, o, 2);
        let g_gpu = s.engine.ar_gradients(steps).unwrap();
        let p = GraphParams64::from(&s.params);
        let f = gref::forward(&s.g, &p, &to64(&s.input), 3);
        let out = gref::output_error(&s.g, &f, &to64(&s.target), Reduction::Sum);
        let mut r = gref::relax_start(&s.g, &f, &out.g, start == RelaxStart::Forward);
        for _ in 0..steps {
            r = gref::relax_step(&s.g, &p, &f, &r, rate, deriv);
        }
        let state = s.engine.state().unwrap();
        for i in 1..s.g.nodes.len() {
            let e = rel_err(&state[i], &r[i]);
            assert!(
                e < 1e-4,
                "deriv={deriv}: r of {} rel. error {e}",
                s.g.nodes[i].id
            );
        }
        check_grads(
            &s.g,
            &g_gpu,
            &gref::gradients(&s.g, &f, &r, deriv),
            1e-4,
            "AR",
        );
    }
}

#[test]
fn backprop_matches_the_reference_and_ar_converges_to_it() {
    for loss in ["mse", "ce"] {
        let mut o = EngineOptions::new(4);
        o.relax_rate = 0.5;
        let mut s = setup(graph(loss), o, 3);
        let bp = s.engine.bp_gradients().unwrap();
        let p = GraphParams64::from(&s.params);
        let f = gref::forward(&s.g, &p, &to64(&s.input), 4);
        let out = gref::output_error(&s.g, &f, &to64(&s.target), Reduction::Sum);
        let exact = gref::gradients(&s.g, &f, &gref::backprop(&s.g, &p, &f, &out.g), true);
        check_grads(&s.g, &bp, &exact, 1e-5, "backprop");
        let ar = s.engine.ar_gradients(150).unwrap();
        check_grads(&s.g, &ar, &exact, 1e-4, "AR after 150 steps at eta 0.5");
    }
}

/// Random feedback ψ replaces W (convolutions included) in the relaxation only; learned ψ also
/// takes the SGD step with decay.
#[test]
fn feedback_weights_for_convolutions() {
    let g = graph("mse");
    let psi = GraphParams::random(&g, Init::FanIn, &mut arelax::rng::Rng::new(9));
    for fb in [Feedback::Random, Feedback::Learned] {
        let mut o = EngineOptions::new(2);
        o.feedback = fb;
        o.lr = 0.05;
        o.feedback_decay = 0.1;
        let mut s = setup(g.clone(), o, 4);
        s.engine.set_feedback(&psi).unwrap();
        let ar = s.engine.ar_gradients(5).unwrap();
        let p = GraphParams64::from(&s.params);
        let f = gref::forward(&s.g, &p, &to64(&s.input), 2);
        let out = gref::output_error(&s.g, &f, &to64(&s.target), Reduction::Sum);
        let mut r = gref::relax_start(&s.g, &f, &out.g, true);
        for _ in 0..5 {
            r = gref::relax_step(&s.g, &GraphParams64::from(&psi), &f, &r, 0.1, true);
        }
        let grads = gref::gradients(&s.g, &f, &r, true);
        check_grads(&s.g, &ar, &grads, 1e-4, "random feedback");
        s.engine.train_step(arelax::engine::Algorithm::Ar, 5);
        s.engine.finish().unwrap();
        let after = s.engine.feedback().unwrap().unwrap();
        let mut expect = GraphParams64::from(&psi);
        if fb == Feedback::Learned {
            gref::sgd(&mut expect, &grads, 0.05, 0.1);
        }
        for i in 0..g.nodes.len() {
            let e = rel_err(&after.weights[i], &expect.weights[i]);
            assert!(e < 1e-5, "{fb:?}: psi of {} rel. error {e}", g.nodes[i].id);
        }
    }
}

/// The same MLP through both engines gives the same gradients.
#[test]
fn the_graph_engine_agrees_with_the_mlp_engine() {
    let spec = arelax::model::ModelSpec::new(
        vec![13, 11, 7, 3],
        arelax::model::Activation::Relu,
        arelax::model::Loss::Mse,
    )
    .unwrap();
    let g = Graph::mlp(&spec);
    let mut s = setup(g, EngineOptions::new(5), 6);
    let mut mlp = arelax::engine::Engine::new(ctx(), &spec, EngineOptions::new(5)).unwrap();
    let mp = arelax::model::Params {
        weights: s.params.weights[1..].to_vec(),
        biases: s.params.biases[1..].to_vec(),
    };
    mlp.set_params(&mp).unwrap();
    mlp.set_batch(&s.input, &s.target).unwrap();
    for steps in [3, 40] {
        let a = s.engine.ar_gradients(steps).unwrap();
        let b = mlp.ar_gradients(steps).unwrap();
        for l in 0..spec.depth() {
            let e = rel_err(&a.weights[l + 1], &to64(&b.weights[l]));
            assert!(e < 1e-5, "{steps} steps: layer {l} rel. error {e}");
        }
    }
}

/// The dense products of a graph under every tile shape (forced), on a residual graph with sizes
/// that are multiples of no tile and cross several tiles of the largest.
#[test]
fn every_tile_shape_on_a_residual_graph() {
    use arelax::gpu::tile::{TileChoice, TileShape};
    let text = r#"
loss = "mse"
[[node]]
id = "x"
kind = "input"
size = 150
[[node]]
id = "h1"
kind = "dense"
inputs = ["x"]
units = 131
activation = "tanh"
[[node]]
id = "h2"
kind = "dense"
inputs = ["h1"]
units = 131
activation = "sigmoid"
[[node]]
id = "sum"
kind = "add"
inputs = ["h1", "h2"]
[[node]]
id = "out"
kind = "dense"
inputs = ["sum"]
units = 5
activation = "linear"
"#;
    let b = 133;
    for shape in TileShape::ALL {
        let g = Graph::parse(std::path::Path::new("residual.toml"), text).unwrap();
        let mut o = EngineOptions::new(b);
        o.tile = TileChoice::Fixed(shape);
        o.relax_rate = 0.4;
        let mut s = setup(g, o, 9);
        let g_gpu = s.engine.ar_gradients(5).unwrap();
        let p = GraphParams64::from(&s.params);
        let f = gref::forward(&s.g, &p, &to64(&s.input), b);
        let x = s.engine.activities().unwrap();
        for i in 1..s.g.nodes.len() {
            let e = rel_err(&x[i], &f.x[i]);
            assert!(e < 1e-5, "{shape}: x of {} rel. error {e}", s.g.nodes[i].id);
        }
        let out = gref::output_error(&s.g, &f, &to64(&s.target), Reduction::Sum);
        let mut r = gref::relax_start(&s.g, &f, &out.g, true);
        for _ in 0..5 {
            r = gref::relax_step(&s.g, &p, &f, &r, 0.4, true);
        }
        let what = format!("{shape} AR");
        check_grads(
            &s.g,
            &g_gpu,
            &gref::gradients(&s.g, &f, &r, true),
            1e-4,
            &what,
        );
        let bp = s.engine.bp_gradients().unwrap();
        let exact = gref::gradients(&s.g, &f, &gref::backprop(&s.g, &p, &f, &out.g), true);
        check_grads(&s.g, &bp, &exact, 1e-5, &format!("{shape} backprop"));
    }
}

/// Three replicas of the every-kind graph in one engine: each replica's activities, loss, AR
/// state and gradients, and backprop gradients are the reference's for its own weights and
/// batch (the tables hold every entry once per replica, so this covers every kernel's offsets).
#[test]
fn every_replica_of_a_graph_matches_the_reference() {
    let g = graph("ce");
    let (b, k, steps, rate) = (3, 3, 5, 0.4);
    let mut o = EngineOptions::new(b);
    o.replicas = k;
    o.relax_rate = rate as f32;
    let mut engine = GraphEngine::new(ctx(), &g, o).unwrap();
    let mut rng = arelax::rng::Rng::new(77);
    let n = g.output_size();
    let mut params = Vec::new();
    let (mut input, mut target) = (Vec::new(), vec![0.0; k * b * n]);
    for r in 0..k {
        let p = GraphParams::init(&g, Init::FanIn, 30 + r as u64);
        engine.set_replica_params(r, &p).unwrap();
        params.push(p);
        input.extend((0..b * g.input_size()).map(|_| rng.uniform() as f32));
    }
    for row in 0..k * b {
        target[row * n + rng.below(n)] = 1.0;
    }
    engine.set_batch(&input, &target).unwrap();
    engine.ar_gradients(steps).unwrap();
    let ar: Vec<GraphParams> = (0..k).map(|r| engine.replica_grads(r).unwrap()).collect();
    let x = engine.activities().unwrap();
    let state = engine.state().unwrap();
    let (loss, correct) = engine.batch_stats().unwrap();
    engine.bp_gradients().unwrap();
    let bp: Vec<GraphParams> = (0..k).map(|r| engine.replica_grads(r).unwrap()).collect();
    let rows = |v: &[f32], i: usize, r: usize| {
        let size = g.nodes[i].shape.size();
        v[r * b * size..(r + 1) * b * size].to_vec()
    };
    for r in 0..k {
        let p = GraphParams64::from(&params[r]);
        let ins = &input[r * b * g.input_size()..(r + 1) * b * g.input_size()];
        let f = gref::forward(&g, &p, &to64(ins), b);
        let t = &target[r * b * n..(r + 1) * b * n];
        let out = gref::output_error(&g, &f, &to64(t), Reduction::Sum);
        for i in 1..g.nodes.len() {
            let e = rel_err(&rows(&x[i], i, r), &f.x[i]);
            assert!(
                e < 1e-5,
                "replica {r}: x of {} rel. error {e}",
                g.nodes[i].id
            );
        }
        assert!(rel_err(&loss[r * b..(r + 1) * b], &out.loss) < 1e-5);
        assert_eq!(&correct[r * b..(r + 1) * b], &out.correct[..]);
        let mut state_ref = gref::relax_start(&g, &f, &out.g, true);
        for _ in 0..steps {
            state_ref = gref::relax_step(&g, &p, &f, &state_ref, rate, true);
        }
        for i in 1..g.nodes.len() {
            let e = rel_err(&rows(&state[i], i, r), &state_ref[i]);
            assert!(
                e < 1e-4,
                "replica {r}: r of {} rel. error {e}",
                g.nodes[i].id
            );
        }
        let what = format!("replica {r} AR");
        check_grads(
            &g,
            &ar[r],
            &gref::gradients(&g, &f, &state_ref, true),
            1e-4,
            &what,
        );
        let exact = gref::gradients(&g, &f, &gref::backprop(&g, &p, &f, &out.g), true);
        check_grads(&g, &bp[r], &exact, 1e-5, &format!("replica {r} backprop"));
    }
    assert!(engine.set_replica_params(k, &params[0]).is_err());
}

/// Timing each kernel in its own pass (`bench --kernel-times`) changes no result: AR's and
/// backprop's gradients are bit-identical with and without it, and every kernel kind of the
/// graph is timed under its own label.
#[test]
fn kernel_timing_changes_no_result() {
    let mut plain = setup(graph("mse"), EngineOptions::new(3), 4);
    let mut timed = setup(graph("mse"), EngineOptions::new(3), 4);
    let profiled = timed.engine.enable_profiling();
    timed.engine.set_kernel_times(true);
    assert_eq!(
        plain.engine.ar_gradients(5).unwrap(),
        timed.engine.ar_gradients(5).unwrap()
    );
    assert_eq!(
        plain.engine.bp_gradients().unwrap(),
        timed.engine.bp_gradients().unwrap()
    );
    if profiled {
        let phases: Vec<&str> = timed
            .engine
            .phase_times()
            .unwrap()
            .into_iter()
            .map(|p| p.0)
            .collect();
        for label in [
            "relax: dense VJPs",
            "relax: combine (conv and pool VJPs)",
            "backprop: combine (conv and pool VJPs)",
            "gradients: dense",
            "gradients: conv",
        ] {
            assert!(phases.contains(&label), "{label} not in {phases:?}");
        }
        assert!(!phases.contains(&"relax"), "{phases:?}");
    }
}

/// The MLP engine's options that a graph cannot honour are refused with their names: split
/// weight gradients and the SGD step inside the gradients' dispatch.
#[test]
fn mlp_only_options_are_refused_for_a_graph() {
    let g = graph("mse");
    let mut split = EngineOptions::new(3);
    split.grad_split = 2;
    let mut fused = EngineOptions::new(3);
    fused.fused_update = true;
    for (opts, name) in [(split, "grad split"), (fused, "fused update")] {
        let err = GraphEngine::new(ctx(), &g, opts)
            .err()
            .expect("should be refused");
        assert!(matches!(err, arelax::Error::Config(_)), "{err}");
        assert!(err.to_string().contains(name), "{err}");
    }
}
