//! The graph model and its float64 CPU reference, checked on their own terms (no GPU): the
//! example model files, the MLP as a graph against the MLP reference, backprop against finite
//! differences for every node kind, AR's Jacobi relaxation converging to backprop, and the
//! model-file validation.

use std::path::{Path, PathBuf};

use arelax::graph::reference::{self as gref, GForward, GraphParams64};
use arelax::graph::{Graph, GraphParams, KIND_NAMES, NodeKind, Shape};
use arelax::model::{Activation, Init, Loss, ModelSpec, Params, Reduction};
use arelax::reference::{self as cpu, Params64};
use arelax::rng::Rng;

fn example_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn example(name: &str) -> Graph {
    Graph::load(&example_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn parse(text: &str) -> Graph {
    Graph::parse(Path::new("test.toml"), text).unwrap_or_else(|e| panic!("{e}"))
}

/// Seeded fan-in weights (through f32, as the GPU gets them) and random biases, so that no bias
/// is accidentally zero and every gradient is exercised.
fn params(g: &Graph, seed: u64) -> GraphParams64 {
    let mut p = GraphParams64::from(&GraphParams::init(g, Init::FanIn, seed));
    let mut rng = Rng::new(seed + 100);
    for b in p.biases.iter_mut().flatten() {
        *b = 0.3 * rng.normal();
    }
    p
}

/// A random normal batch and one-hot targets.
fn batch(g: &Graph, b: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = Rng::new(seed);
    let x = (0..b * g.input_size()).map(|_| rng.normal()).collect();
    let n = g.output_size();
    let mut y = vec![0.0; b * n];
    for s in 0..b {
        y[s * n + rng.below(n)] = 1.0;
    }
    (x, y)
}

fn shapes(g: &Graph) -> Vec<(&str, Shape)> {
    g.nodes.iter().map(|n| (n.id.as_str(), n.shape)).collect()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Every node kind, listed out of order, with odd and non-square sizes, a stride-2 padding-1
/// convolution, overlapping pools (max 3/2, avg 2/1), a node with two children, a three-way add
/// and a concat of differently sized channel blocks. Every parameter-free node lies downstream
/// of a convolution, so the weight gradients depend on every node's VJP.
const ALL_KINDS: &str = r#"
[[node]]
id = "out"
kind = "dense"
inputs = ["sum2"]
units = 3

[[node]]
id = "x"
kind = "input"
shape = [2, 9, 7]

[[node]]
id = "c1"
kind = "conv2d"
inputs = ["x"]
channels = 3
kernel = 3
stride = 2
padding = 1
activation = "tanh"

[[node]]
id = "c2"
kind = "conv2d"
inputs = ["x"]
channels = 2
kernel = 3
padding = 1
activation = "sigmoid"

[[node]]
id = "mp"
kind = "max-pool"
inputs = ["c2"]
kernel = 3
stride = 2

[[node]]
id = "c3"
kind = "conv2d"
inputs = ["c1"]
channels = 2
kernel = 2
activation = "leaky-relu"

[[node]]
id = "ap"
kind = "avg-pool"
inputs = ["c1"]
kernel = 2
stride = 1

[[node]]
id = "sum"
kind = "add"
inputs = ["mp", "c3"]

[[node]]
id = "cat"
kind = "concat"
inputs = ["sum", "ap"]

[[node]]
id = "c4"
kind = "conv2d"
inputs = ["cat"]
channels = 5
kernel = 3
stride = 2
activation = "tanh"

[[node]]
id = "d1"
kind = "dense"
inputs = ["cat"]
units = 5
activation = "tanh"

[[node]]
id = "fl"
kind = "flatten"
inputs = ["mp"]

[[node]]
id = "d3"
kind = "dense"
inputs = ["fl"]
units = 5
activation = "sigmoid"

[[node]]
id = "sum2"
kind = "add"
inputs = ["d1", "c4", "d3"]
"#;

/// Overlapping 3/2 average pooling, a stride-3 padding-2 convolution, a 2/1 max-pool and a
/// concat whose first input is the later branch.
const POOLS: &str = r#"
[[node]]
id = "x"
kind = "input"
shape = [1, 7, 8]

[[node]]
id = "a"
kind = "conv2d"
inputs = ["x"]
channels = 3
kernel = 3
padding = 1
activation = "tanh"

[[node]]
id = "b"
kind = "avg-pool"
inputs = ["a"]
kernel = 3
stride = 2

[[node]]
id = "c"
kind = "conv2d"
inputs = ["a"]
channels = 2
kernel = 2
stride = 3
padding = 2
activation = "sigmoid"

[[node]]
id = "d"
kind = "max-pool"
inputs = ["c"]
kernel = 2
stride = 1

[[node]]
id = "e"
kind = "concat"
inputs = ["d", "b"]

[[node]]
id = "h"
kind = "dense"
inputs = ["e"]
units = 4
activation = "leaky-relu"

[[node]]
id = "out"
kind = "dense"
inputs = ["h"]
units = 2
"#;

fn with_loss(loss: Loss, text: &str) -> Graph {
    parse(&format!("loss = \"{loss}\"\n{text}"))
}

// ---------------------------------------------------------------------------------------------
// Parsing and the examples

#[test]
fn examples_parse_with_the_expected_shapes() {
    let cnn = example("cnn.toml");
    assert_eq!(
        shapes(&cnn),
        vec![
            ("image", Shape::new(1, 28, 28)),
            ("conv1", Shape::new(6, 24, 24)),
            ("pool1", Shape::new(6, 12, 12)),
            ("conv2", Shape::new(16, 8, 8)),
            ("flat", Shape::flat(1024)),
            ("fc1", Shape::flat(120)),
            ("fc2", Shape::flat(120)),
            ("out", Shape::flat(10)),
        ]
    );
    assert_eq!(cnn.loss, Loss::Mse);
    assert_eq!(cnn.output, 7);
    assert_eq!(cnn.depth(), 7);
    assert_eq!((cnn.input_size(), cnn.output_size()), (784, 10));
    assert_eq!(cnn.param_shape(1), Some((vec![6, 1, 5, 5], 6)));
    assert_eq!(cnn.param_shape(3), Some((vec![16, 6, 5, 5], 16)));
    assert_eq!(cnn.param_shape(5), Some((vec![120, 1024], 120)));
    assert_eq!(cnn.param_shape(2), None);
    assert_eq!(cnn.activation(1), Some(Activation::Tanh));
    assert_eq!(cnn.activation(7), Some(Activation::Linear));
    assert_eq!(cnn.activation(4), None);
    assert_eq!(cnn.param_count(), 156 + 2416 + 123_000 + 14_520 + 1210);
    assert_eq!(
        cnn.describe(),
        "graph input 1x28x28 -> 10, 8 nodes, depth 7, 141302 parameters, mse loss"
    );

    let res = example("residual-mlp.toml");
    assert_eq!(
        shapes(&res),
        vec![
            ("image", Shape::flat(784)),
            ("h1", Shape::flat(128)),
            ("h2", Shape::flat(128)),
            ("sum", Shape::flat(128)),
            ("out", Shape::flat(10)),
        ]
    );
    assert_eq!(res.children(1), vec![2, 3]);
    assert_eq!(res.children(2), vec![3]);
    assert_eq!(res.children(4), Vec::<usize>::new());
    assert_eq!(res.nodes[3].inputs, vec![1, 2]);
    assert_eq!(res.depth(), 4);

    let cat = example("concat.toml");
    assert_eq!(
        shapes(&cat),
        vec![
            ("image", Shape::new(1, 28, 28)),
            ("down", Shape::new(4, 14, 14)),
            ("pool", Shape::new(1, 14, 14)),
            ("join", Shape::new(5, 14, 14)),
            ("flat", Shape::flat(980)),
            ("out", Shape::flat(10)),
        ]
    );
    assert_eq!(cat.depth(), 4);

    // mlp.toml is node for node what --layers builds (only the source text differs).
    let mlp = example("mlp.toml");
    let spec = ModelSpec::new(vec![784, 300, 300, 100, 10], Activation::Relu, Loss::Mse).unwrap();
    let built = Graph::mlp(&spec);
    assert_eq!(
        (&mlp.nodes, mlp.output, mlp.loss),
        (&built.nodes, built.output, built.loss)
    );

    // Together the examples use every node kind.
    let mut kinds: Vec<&str> = [&cnn, &res, &cat, &mlp]
        .iter()
        .flat_map(|g| g.nodes.iter().map(|n| n.kind.name()))
        .collect();
    kinds.sort();
    kinds.dedup();
    let mut all = KIND_NAMES.to_vec();
    all.sort();
    assert_eq!(kinds, all);

    // The stored source is the file itself.
    let text = std::fs::read_to_string(example_path("cnn.toml")).unwrap();
    assert_eq!(cnn.source, text);
}

#[test]
fn to_toml_round_trips_and_mlp_source_parses() {
    let mut graphs: Vec<Graph> = ["cnn.toml", "residual-mlp.toml", "mlp.toml", "concat.toml"]
        .iter()
        .map(|n| example(n))
        .collect();
    graphs.push(with_loss(Loss::Ce, ALL_KINDS));
    graphs.push(parse(POOLS));
    for g in &graphs {
        let again = parse(&g.to_toml());
        assert_eq!(
            (&again.nodes, again.output, again.loss),
            (&g.nodes, g.output, g.loss)
        );
    }
    let spec = ModelSpec::new(vec![5, 4, 3], Activation::Sigmoid, Loss::Ce).unwrap();
    let g = Graph::mlp(&spec);
    assert_eq!(
        parse(&g.source),
        g,
        "Graph::mlp's source parses back to the same graph"
    );
}

#[test]
fn nodes_are_sorted_topologically_keeping_file_order() {
    let g = parse(ALL_KINDS);
    let ids: Vec<&str> = g.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "x", "c1", "c2", "mp", "c3", "ap", "sum", "cat", "c4", "d1", "fl", "d3", "sum2", "out"
        ]
    );
    for (i, n) in g.nodes.iter().enumerate() {
        assert!(
            n.inputs.iter().all(|&p| p < i),
            "{} has a later input",
            n.id
        );
    }
    assert_eq!(g.output, g.nodes.len() - 1);
    assert_eq!(g.depth(), 7);
    let id = |i: usize| g.nodes[i].id.as_str();
    let shape_of = |name: &str| g.nodes[g.index_of(name).unwrap()].shape;
    assert_eq!(shape_of("c1"), Shape::new(3, 5, 4));
    assert_eq!(shape_of("c2"), Shape::new(2, 9, 7));
    assert_eq!(shape_of("mp"), Shape::new(2, 4, 3));
    assert_eq!(shape_of("ap"), Shape::new(3, 4, 3));
    assert_eq!(shape_of("cat"), Shape::new(5, 4, 3));
    assert_eq!(shape_of("c4"), Shape::new(5, 1, 1));
    assert_eq!(shape_of("fl"), Shape::flat(24));
    let sum2 = &g.nodes[g.index_of("sum2").unwrap()];
    let names: Vec<&str> = sum2.inputs.iter().map(|&p| id(p)).collect();
    assert_eq!(names, ["d1", "c4", "d3"], "inputs keep the file's order");
    // Defaults: hidden dense relu... here explicit; the output defaults to linear.
    assert_eq!(g.activation(g.output), Some(Activation::Linear));
    let p = parse(POOLS);
    assert_eq!(p.nodes[p.index_of("b").unwrap()].shape, Shape::new(3, 3, 3));
    assert_eq!(p.nodes[p.index_of("c").unwrap()].shape, Shape::new(2, 4, 4));
    assert_eq!(p.nodes[p.index_of("e").unwrap()].shape, Shape::new(5, 3, 3));
}

#[test]
fn defaults_are_applied() {
    let g = parse(
        r#"
[[node]]
id = "x"
kind = "input"
shape = [2, 6, 6]
[[node]]
id = "c"
kind = "conv2d"
inputs = ["x"]
channels = 3
kernel = 3
[[node]]
id = "p"
kind = "max-pool"
inputs = ["c"]
kernel = 2
[[node]]
id = "h"
kind = "dense"
inputs = ["p"]
units = 4
[[node]]
id = "out"
kind = "dense"
inputs = ["h"]
units = 2
"#,
    );
    assert_eq!(g.loss, Loss::Mse);
    assert_eq!(
        g.nodes[1].kind,
        NodeKind::Conv2d {
            channels: 3,
            kernel: 3,
            stride: 1,
            padding: 0,
            activation: Activation::Relu
        }
    );
    assert_eq!(
        g.nodes[2].kind,
        NodeKind::MaxPool {
            kernel: 2,
            stride: 2
        }
    );
    assert_eq!(g.nodes[2].shape, Shape::new(3, 2, 2));
    assert_eq!(g.activation(3), Some(Activation::Relu));
    assert_eq!(g.activation(4), Some(Activation::Linear));
}

// ---------------------------------------------------------------------------------------------
// Parameters

#[test]
fn init_matches_the_mlp_and_uses_the_fan_in() {
    let spec = ModelSpec::new(vec![7, 5, 6, 3], Activation::Tanh, Loss::Mse).unwrap();
    let g = Graph::mlp(&spec);
    for init in [Init::FanIn, Init::Normal(0.05), Init::Pytorch] {
        let gp = GraphParams::init(&g, init, 9);
        assert_eq!(gp, GraphParams::from_mlp(&Params::init(&spec, init, 9)));
        assert!(gp.all_finite());
    }
    let cnn = example("cnn.toml");
    let p = GraphParams::init(&cnn, Init::FanIn, 1);
    let zero = GraphParams::zeros_like(&cnn);
    for i in 0..cnn.nodes.len() {
        let (nw, nb) = cnn
            .param_shape(i)
            .map_or((0, 0), |(w, b)| (w.iter().product(), b));
        assert_eq!((p.weights[i].len(), p.biases[i].len()), (nw, nb));
        assert_eq!((zero.weights[i].len(), zero.biases[i].len()), (nw, nb));
        assert!(p.biases[i].iter().all(|&b| b == 0.0));
    }
    // conv2: fan-in 6*5*5 = 150.
    let w = &p.weights[3];
    let sd = (w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
    let want = 1.0 / 150f64.sqrt();
    assert!((sd / want - 1.0).abs() < 0.1, "sd {sd} vs {want}");
    let mut bad = p.clone();
    bad.weights[5][0] = f32::NAN;
    assert!(!bad.all_finite());

    // PyTorch's default: weights and biases U(±1/√fan_in), so sd = bound/√3.
    let p = GraphParams::init(&cnn, Init::Pytorch, 1);
    for (i, fan_in) in [(1, 25.0), (3, 150.0), (5, 1024.0), (6, 120.0)] {
        let bound = 1.0 / f64::sqrt(fan_in);
        let (w, b) = (&p.weights[i], &p.biases[i]);
        assert!(
            w.iter().chain(b).all(|&v| (v as f64).abs() <= bound),
            "node {i}"
        );
        assert!(
            b.iter().all(|&v| v != 0.0),
            "node {i}: biases are drawn too"
        );
        let sd = (w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
        let want = bound / 3f64.sqrt();
        assert!(
            (sd / want - 1.0).abs() < 0.15,
            "node {i}: sd {sd} vs {want}"
        );
    }
    assert_eq!("pytorch".parse::<Init>().unwrap(), Init::Pytorch);
    assert_eq!(Init::Pytorch.to_string(), "pytorch");
}

// ---------------------------------------------------------------------------------------------
// The MLP as a graph is the MLP

#[test]
fn mlp_graph_matches_the_mlp_reference() {
    for (act, loss) in [
        (Activation::Tanh, Loss::Mse),
        (Activation::Relu, Loss::Ce),
        (Activation::Sigmoid, Loss::Mse),
    ] {
        let spec = ModelSpec::new(vec![7, 5, 6, 3], act, loss).unwrap();
        let g = Graph::mlp(&spec);
        let mut params = Params::init(&spec, Init::FanIn, 3);
        let mut rng = Rng::new(5);
        for b in params.biases.iter_mut().flatten() {
            *b = (0.3 * rng.normal()) as f32;
        }
        let p = Params64::from(&params);
        let gp = GraphParams64::from(&GraphParams::from_mlp(&params));
        let b = 4;
        let (x, y) = batch(&g, b, 11);

        let f = cpu::forward(&spec, &p, &x, b);
        let gf = gref::forward(&g, &gp, &x, b);
        for l in 0..=spec.depth() {
            assert!(max_abs_diff(&f.x[l], &gf.x[l]) < 1e-12, "x{l}");
        }
        for l in 0..spec.depth() {
            assert!(max_abs_diff(&f.fp[l], &gf.fp[l + 1]) < 1e-12, "fp{l}");
        }
        for red in [Reduction::Sum, Reduction::Mean] {
            let o = cpu::output_error(&spec, &f, &y, red);
            let go = gref::output_error(&g, &gf, &y, red);
            assert!(max_abs_diff(&o.loss, &go.loss) < 1e-12);
            assert!(max_abs_diff(&o.g, &go.g) < 1e-12);
            assert_eq!(o.correct, go.correct);
        }
        let o = cpu::output_error(&spec, &f, &y, Reduction::Sum);

        let r = cpu::backprop(&spec, &p, &f, &o.g);
        let gr = gref::backprop(&g, &gp, &gf, &o.g);
        for l in 1..=spec.depth() {
            assert!(max_abs_diff(&r[l], &gr[l]) < 1e-12, "r{l}");
        }
        let grads = cpu::gradients(&spec, &f, &r, true);
        let ggrads = gref::gradients(&g, &gf, &gr, true);
        assert!(ggrads.weights[0].is_empty() && ggrads.biases[0].is_empty());
        for l in 0..spec.depth() {
            assert!(max_abs_diff(&grads.weights[l], &ggrads.weights[l + 1]) < 1e-12);
            assert!(max_abs_diff(&grads.biases[l], &ggrads.biases[l + 1]) < 1e-12);
        }

        // A few relaxation steps agree too, with and without the derivative.
        for deriv in [true, false] {
            let mut s = cpu::relax_start(&spec, &f, &o.g, true);
            let mut gs = gref::relax_start(&g, &gf, &o.g, true);
            for _ in 0..5 {
                s = cpu::relax_step(&spec, &p, &f, &s, 0.3, deriv);
                gs = gref::relax_step(&g, &gp, &gf, &gs, 0.3, deriv);
            }
            for l in 1..=spec.depth() {
                assert!(max_abs_diff(&s[l], &gs[l]) < 1e-12, "relaxed r{l}");
            }
            let a = cpu::gradients(&spec, &f, &s, deriv);
            let ga = gref::gradients(&g, &gf, &gs, deriv);
            for l in 0..spec.depth() {
                assert!(max_abs_diff(&a.weights[l], &ga.weights[l + 1]) < 1e-12);
            }
            let a = cpu::relative_change(&s, &cpu::relax_step(&spec, &p, &f, &s, 0.3, deriv));
            let ga =
                gref::relative_change(&g, &gs, &gref::relax_step(&g, &gp, &gf, &gs, 0.3, deriv));
            assert!((a - ga).abs() <= 1e-9 * a, "relative change {a} vs {ga}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backprop against finite differences

fn objective(g: &Graph, p: &GraphParams64, x: &[f64], y: &[f64], b: usize, red: Reduction) -> f64 {
    let f = gref::forward(g, p, x, b);
    let loss: f64 = gref::output_error(g, &f, y, red).loss.iter().sum();
    loss * red.scale(b)
}

/// Every weight and bias gradient from backprop against central differences of the loss.
fn check_finite_differences(g: &Graph, b: usize, red: Reduction, seed: u64) {
    let p = params(g, seed);
    let (x, y) = batch(g, b, seed + 1);
    let f = gref::forward(g, &p, &x, b);
    let out = gref::output_error(g, &f, &y, red);
    let grads = gref::gradients(g, &f, &gref::backprop(g, &p, &f, &out.g), true);
    let h = 1e-6;
    let mut checked = 0;
    for i in 0..g.nodes.len() {
        for bias in [false, true] {
            let n = if bias {
                p.biases[i].len()
            } else {
                p.weights[i].len()
            };
            for j in 0..n {
                let perturbed = |d: f64| {
                    let mut q = p.clone();
                    if bias {
                        q.biases[i][j] += d;
                    } else {
                        q.weights[i][j] += d;
                    }
                    objective(g, &q, &x, &y, b, red)
                };
                let numeric = (perturbed(h) - perturbed(-h)) / (2.0 * h);
                let analytic = if bias {
                    grads.biases[i][j]
                } else {
                    grads.weights[i][j]
                };
                assert!(
                    (numeric - analytic).abs() < 1e-7 * (1.0 + numeric.abs()),
                    "{} {} {}[{j}]: numeric {numeric} vs backprop {analytic}",
                    g.loss,
                    g.nodes[i].id,
                    if bias { "b" } else { "W" }
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, g.param_count());
}

#[test]
fn backprop_matches_finite_differences_for_every_node_kind() {
    for (loss, red, b) in [
        (Loss::Mse, Reduction::Sum, 2),
        (Loss::Ce, Reduction::Sum, 3),
        (Loss::Ce, Reduction::Mean, 2),
    ] {
        check_finite_differences(&with_loss(loss, ALL_KINDS), b, red, 21);
        check_finite_differences(&with_loss(loss, POOLS), b, red, 31);
    }
}

// ---------------------------------------------------------------------------------------------
// AR: Jacobi relaxation converges to backprop

/// max over relaxing nodes of max|r − r*| / max|r*|.
fn worst_relative_error(g: &Graph, r: &gref::State, exact: &gref::State) -> f64 {
    (1..g.nodes.len())
        .map(|i| {
            let scale = exact[i].iter().map(|v| v.abs()).fold(0.0, f64::max);
            max_abs_diff(&r[i], &exact[i]) / scale.max(1e-300)
        })
        .fold(0.0, f64::max)
}

fn setup(text: &str, loss: Loss, seed: u64) -> (Graph, GraphParams64, GForward, Vec<f64>) {
    let g = with_loss(loss, text);
    let p = params(&g, seed);
    let (x, y) = batch(&g, 3, seed + 1);
    let f = gref::forward(&g, &p, &x, 3);
    let out = gref::output_error(&g, &f, &y, Reduction::Sum).g;
    (g, p, f, out)
}

#[test]
fn jacobi_relaxation_converges_to_backprop() {
    for text in [ALL_KINDS, POOLS] {
        let (g, p, f, out) = setup(text, Loss::Mse, 51);
        let exact = gref::backprop(&g, &p, &f, &out);
        for (rate, from_forward) in [(0.5, true), (0.8, true), (1.0, true), (0.7, false)] {
            let mut r = gref::relax_start(&g, &f, &out, from_forward);
            assert!(r[0].is_empty());
            assert_eq!(r[g.output], out);
            let mut steps = 0;
            while worst_relative_error(&g, &r, &exact) > 1e-9 {
                r = gref::relax_step(&g, &p, &f, &r, rate, true);
                assert_eq!(r[g.output], out, "the output stays clamped");
                steps += 1;
                assert!(steps <= 300, "rate {rate}: not converged after 300 steps");
            }
            // The weight gradients follow.
            let a = gref::gradients(&g, &f, &r, true);
            let bp = gref::gradients(&g, &f, &exact, true);
            for i in 0..g.nodes.len() {
                let scale = bp.weights[i].iter().map(|v| v.abs()).fold(0.0, f64::max);
                assert!(max_abs_diff(&a.weights[i], &bp.weights[i]) <= 1e-8 * scale);
            }
        }
    }
}

#[test]
fn jacobi_with_rate_one_is_exact_after_depth_steps() {
    for text in [ALL_KINDS, POOLS] {
        let (g, p, f, out) = setup(text, Loss::Ce, 61);
        let exact = gref::backprop(&g, &p, &f, &out);
        let mut r = gref::relax_start(&g, &f, &out, true);
        for _ in 0..g.depth() {
            r = gref::relax_step(&g, &p, &f, &r, 1.0, true);
        }
        for i in 1..g.nodes.len() {
            assert_eq!(r[i], exact[i], "node {} after depth() steps", g.nodes[i].id);
        }
        // A further step changes nothing: backprop is the fixed point.
        let again = gref::relax_step(&g, &p, &f, &r, 1.0, true);
        assert_eq!(gref::relative_change(&g, &again, &r), 0.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Dropping the derivative

/// The forward pass with every f' replaced by 1: what "no derivative" must be equivalent to.
fn without_derivative(f: &GForward) -> GForward {
    let mut f = f.clone();
    for fp in &mut f.fp {
        fp.iter_mut().for_each(|v| *v = 1.0);
    }
    f
}

#[test]
fn dropping_the_derivative_drops_exactly_f_prime() {
    let (g, p, f, _) = setup(ALL_KINDS, Loss::Mse, 71);
    let ones = without_derivative(&f);
    let b = f.batch;
    let mut rng = Rng::new(72);
    let r: gref::State = (0..g.nodes.len())
        .map(|i| {
            if i == 0 {
                Vec::new()
            } else {
                (0..f.x[i].len()).map(|_| rng.normal()).collect()
            }
        })
        .collect();
    for (c, rc) in r.iter().enumerate().skip(1) {
        for k in 0..g.nodes[c].inputs.len() {
            let plain = gref::vjp(&g, &p, &f, rc, c, k, false);
            assert_eq!(plain, gref::vjp(&g, &p, &ones, rc, c, k, true));
            let with = gref::vjp(&g, &p, &f, rc, c, k, true);
            let linear = g.activation(c) == Some(Activation::Linear);
            if g.nodes[c].kind.has_params() && !linear {
                assert!(
                    max_abs_diff(&plain, &with) > 1e-3,
                    "{}: f' matters",
                    g.nodes[c].id
                );
            } else {
                assert_eq!(plain, with, "{}: no f' to drop (or f' = 1)", g.nodes[c].id);
            }
        }
    }
    let plain = gref::gradients(&g, &f, &r, false);
    assert_eq!(plain, gref::gradients(&g, &ones, &r, true));

    // By hand, dense "d1" (input "cat", 60 wide): v = r W and G = rᵀ x̄.
    let d1 = g.index_of("d1").unwrap();
    let cat = g.nodes[d1].inputs[0];
    let (units, n_in) = (5, 60);
    let v = gref::vjp(&g, &p, &f, &r[d1], d1, 0, false);
    for s in 0..b {
        for i in 0..n_in {
            let want: f64 = (0..units)
                .map(|o| r[d1][s * units + o] * p.weights[d1][o * n_in + i])
                .sum();
            assert!((v[s * n_in + i] - want).abs() < 1e-12);
        }
    }
    for o in 0..units {
        for i in 0..n_in {
            let want: f64 = (0..b)
                .map(|s| r[d1][s * units + o] * f.x[cat][s * n_in + i])
                .sum();
            assert!((plain.weights[d1][o * n_in + i] - want).abs() < 1e-12);
        }
        let want: f64 = (0..b).map(|s| r[d1][s * units + o]).sum();
        assert!((plain.biases[d1][o] - want).abs() < 1e-12);
    }

    // By hand, conv "c1" (3x3, stride 2, padding 1, 2x9x7 -> 3x5x4), written as a gather over
    // each input pixel: the output positions whose window covers it.
    let c1 = g.index_of("c1").unwrap();
    let x = g.index_of("x").unwrap();
    let (ci_n, h, w, co_n, oh_n, ow_n, k, s_, pad) = (2, 9, 7, 3, 5, 4, 3, 2, 1);
    let v = gref::vjp(&g, &p, &f, &r[c1], c1, 0, false);
    for s in 0..b {
        for ci in 0..ci_n {
            for ih in 0..h {
                for iw in 0..w {
                    let mut want = 0.0;
                    for co in 0..co_n {
                        for kh in 0..k {
                            for kw in 0..k {
                                let (th, tw) = (ih + pad, iw + pad);
                                if th < kh || tw < kw || (th - kh) % s_ != 0 || (tw - kw) % s_ != 0
                                {
                                    continue;
                                }
                                let (oh, ow) = ((th - kh) / s_, (tw - kw) / s_);
                                if oh >= oh_n || ow >= ow_n {
                                    continue;
                                }
                                want += r[c1][((s * co_n + co) * oh_n + oh) * ow_n + ow]
                                    * p.weights[c1][((co * ci_n + ci) * k + kh) * k + kw];
                            }
                        }
                    }
                    let got = v[((s * ci_n + ci) * h + ih) * w + iw];
                    assert!((got - want).abs() < 1e-12, "conv vjp at {s},{ci},{ih},{iw}");
                }
            }
        }
    }
    // And its weight gradient: Σ r[b,co,oh,ow] x̄[b,ci,oh*s+kh-p,ow*s+kw-p].
    for co in 0..co_n {
        for ci in 0..ci_n {
            for kh in 0..k {
                for kw in 0..k {
                    let mut want = 0.0;
                    for s in 0..b {
                        for oh in 0..oh_n {
                            for ow in 0..ow_n {
                                let (ih, iw) = (oh * s_ + kh, ow * s_ + kw);
                                if ih < pad || iw < pad || ih - pad >= h || iw - pad >= w {
                                    continue;
                                }
                                want += r[c1][((s * co_n + co) * oh_n + oh) * ow_n + ow]
                                    * f.x[x][((s * ci_n + ci) * h + ih - pad) * w + iw - pad];
                            }
                        }
                    }
                    let got = plain.weights[c1][((co * ci_n + ci) * k + kh) * k + kw];
                    assert!(
                        (got - want).abs() < 1e-12,
                        "conv grad at {co},{ci},{kh},{kw}"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Node kinds in isolation

#[test]
fn pooling_and_joining_by_hand() {
    // A 1x3x3 input through max-pool 2/1 (ties to the first), avg-pool 2/1, and concat.
    let g = parse(
        r#"
[[node]]
id = "x"
kind = "input"
shape = [1, 3, 3]
[[node]]
id = "m"
kind = "max-pool"
inputs = ["x"]
kernel = 2
stride = 1
[[node]]
id = "a"
kind = "avg-pool"
inputs = ["x"]
kernel = 2
stride = 1
[[node]]
id = "j"
kind = "concat"
inputs = ["m", "a"]
[[node]]
id = "out"
kind = "dense"
inputs = ["j"]
units = 1
"#,
    );
    let p = GraphParams64::from(&GraphParams::zeros_like(&g));
    let x = [1.0, 5.0, 2.0, 5.0, 0.0, 3.0, 4.0, 4.0, 6.0];
    let f = gref::forward(&g, &p, &x, 1);
    assert_eq!(f.x[1], [5.0, 5.0, 5.0, 6.0]);
    assert_eq!(
        f.argmax[1],
        [1, 1, 3, 8],
        "ties go to the first in row-major order"
    );
    assert_eq!(f.x[2], [2.75, 2.5, 3.25, 3.25]);
    assert_eq!(f.x[3], [5.0, 5.0, 5.0, 6.0, 2.75, 2.5, 3.25, 3.25]);
    let r = [1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0];
    assert_eq!(gref::vjp(&g, &p, &f, &r, 3, 0, true), [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(
        gref::vjp(&g, &p, &f, &r, 3, 1, true),
        [10.0, 20.0, 30.0, 40.0]
    );
    // Max: the overlapping windows that chose pixel 1 both send their r there.
    assert_eq!(
        gref::vjp(&g, &p, &f, &[1.0, 2.0, 3.0, 4.0], 1, 0, true),
        [0.0, 3.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 4.0]
    );
    // Avg: each window spreads r/4; the centre is in all four.
    assert_eq!(
        gref::vjp(&g, &p, &f, &[4.0, 8.0, 12.0, 16.0], 2, 0, true),
        [1.0, 3.0, 2.0, 4.0, 10.0, 6.0, 3.0, 7.0, 4.0]
    );
    assert!(f.fp[1].is_empty() && f.fp[4].len() == 1 && f.argmax[2].is_empty());
}

// ---------------------------------------------------------------------------------------------
// Malformed model files

/// A model file from compact node bodies: fields separated by "; ", TOML literal strings in
/// single quotes (so nothing needs escaping here).
fn model(nodes: &[&str]) -> String {
    nodes
        .iter()
        .map(|n| format!("[[node]]\n{}\n", n.replace("; ", "\n")))
        .collect()
}

const X: &str = "id = 'x'; kind = 'input'; size = 4";
const IMG: &str = "id = 'x'; kind = 'input'; shape = [1, 4, 4]";
const OUT: &str = "id = 'out'; kind = 'dense'; inputs = ['h']; units = 2";
const FLAT_H: &str = "id = 'h'; kind = 'flatten'; inputs = ['x']";

#[test]
fn malformed_files_are_rejected_with_a_clear_message() {
    let with = |top: &str| format!("{top}\n{}", model(&[X, FLAT_H, OUT]));
    #[rustfmt::skip]
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("not toml", "[[node]\nid = 1".into(), &["TOML", "line 1"]),
        ("empty", String::new(), &["no [[node]]"]),
        ("unknown top key", with("layers = 3"), &["unknown top-level key 'layers'"]),
        ("node not array", "node = 3".into(), &["array of tables"]),
        ("bad loss", with("loss = 'hinge'"), &["unknown loss 'hinge'", "mse or ce"]),
        ("loss not string", with("loss = 1"), &["'loss' must be a string"]),
        // Ids and kinds.
        ("missing id", model(&[X, "kind = 'flatten'; inputs = ['x']", OUT]), &["2nd [[node]]", "no 'id'"]),
        ("id not string", model(&[X, "id = 5; kind = 'flatten'", OUT]), &["2nd [[node]]", "'id' must be a string"]),
        ("bad id", model(&[X, "id = 'h h'; kind = 'flatten'", OUT]), &["'h h'", "letters"]),
        ("missing kind", model(&[X, "id = 'h'; inputs = ['x']", OUT]), &["node 'h'", "no 'kind'", "max-pool"]),
        ("unknown kind", model(&[X, "id = 'h'; kind = 'pool'; inputs = ['x']", OUT]), &["node 'h'", "unknown kind 'pool'", "max-pool", "concat"]),
        ("unknown key", model(&[X, "id = 'h'; kind = 'dense'; inputs = ['x']; units = 3; kernal = 2", OUT]), &["node 'h'", "unknown key 'kernal'", "units"]),
        ("key of another kind", model(&[X, "id = 'h'; kind = 'flatten'; inputs = ['x']; activation = 'relu'", OUT]), &["node 'h'", "unknown key 'activation'"]),
        ("input with activation", model(&["id = 'x'; kind = 'input'; size = 4; activation = 'relu'", FLAT_H, OUT]), &["node 'x'", "unknown key 'activation'"]),
        ("duplicate id", model(&[X, FLAT_H, FLAT_H, OUT]), &["node 'h'", "duplicate id"]),
        // Inputs and the graph's structure.
        ("missing input node", model(&[X, "id = 'h'; kind = 'flatten'; inputs = ['nope']", OUT]), &["node 'h'", "'nope'", "names no node"]),
        ("duplicate inputs", model(&[X, "id = 'h'; kind = 'add'; inputs = ['x', 'x']", OUT]), &["node 'h'", "'x'", "twice"]),
        ("inputs not a list", model(&[X, "id = 'h'; kind = 'flatten'; inputs = 'x'", OUT]), &["node 'h'", "'inputs'"]),
        ("inputs not strings", model(&[X, "id = 'h'; kind = 'flatten'; inputs = [1]", OUT]), &["node 'h'", "'inputs'"]),
        ("cycle", model(&[X, "id = 'a'; kind = 'add'; inputs = ['x', 'h']", "id = 'h'; kind = 'dense'; inputs = ['a']; units = 4", OUT]), &["node 'a'", "cycle", "a -> h -> a"]),
        ("self loop", model(&[X, "id = 'h'; kind = 'add'; inputs = ['x', 'h']", OUT]), &["node 'h'", "cycle"]),
        ("no input node", model(&["id = 'h'; kind = 'dense'; units = 3", OUT]), &["no input node"]),
        ("two input nodes", model(&[X, "id = 'x2'; kind = 'input'; size = 4", "id = 'h'; kind = 'add'; inputs = ['x', 'x2']", OUT]), &["node 'x2'", "second input node", "'x'"]),
        ("two outputs", model(&[X, FLAT_H, OUT, "id = 'out2'; kind = 'dense'; inputs = ['h']; units = 2"]), &["'out'", "'out2'", "exactly one output"]),
        // Arity.
        ("input with inputs", model(&["id = 'x'; kind = 'input'; size = 4; inputs = ['h']", FLAT_H, OUT]), &["node 'x'", "takes no inputs"]),
        ("dense two inputs", model(&[X, "id = 'y'; kind = 'flatten'; inputs = ['x']", "id = 'h'; kind = 'dense'; inputs = ['x', 'y']; units = 2"]), &["node 'h'", "exactly 1 input", "got 2"]),
        ("dense no input", model(&[X, "id = 'h'; kind = 'dense'; units = 2"]), &["node 'h'", "exactly 1 input", "got 0"]),
        ("conv no input", model(&[IMG, "id = 'h'; kind = 'conv2d'; channels = 2; kernel = 2", OUT]), &["node 'h'", "exactly 1 input"]),
        ("pool no input", model(&[X, "id = 'h'; kind = 'max-pool'; kernel = 1", OUT]), &["node 'h'", "exactly 1 input"]),
        ("flatten two inputs", model(&[X, "id = 'y'; kind = 'flatten'; inputs = ['x']", "id = 'h'; kind = 'flatten'; inputs = ['x', 'y']", OUT]), &["node 'h'", "exactly 1 input"]),
        ("add one input", model(&[X, "id = 'h'; kind = 'add'; inputs = ['x']", OUT]), &["node 'h'", "an add node needs at least 2 inputs"]),
        ("concat one input", model(&[X, "id = 'h'; kind = 'concat'; inputs = ['x']", OUT]), &["node 'h'", "at least 2 inputs"]),
        // Shapes.
        ("add shapes", model(&[X, "id = 'y'; kind = 'dense'; inputs = ['x']; units = 3", "id = 'h'; kind = 'add'; inputs = ['x', 'y']", OUT]), &["node 'h'", "shape mismatch", "'y' is 3", "'x' is 4"]),
        ("add flat and image", model(&["id = 'x'; kind = 'input'; shape = [1, 2, 2]", "id = 'y'; kind = 'flatten'; inputs = ['x']", "id = 'h'; kind = 'add'; inputs = ['x', 'y']", OUT]), &["node 'h'", "shape mismatch"]),
        ("concat hw", model(&[IMG, "id = 'y'; kind = 'max-pool'; inputs = ['x']; kernel = 2", "id = 'h'; kind = 'concat'; inputs = ['x', 'y']", OUT]), &["node 'h'", "shape mismatch", "1x2x2", "height and width"]),
        ("conv window too large", model(&[IMG, "id = 'h'; kind = 'conv2d'; inputs = ['x']; channels = 2; kernel = 5", OUT]), &["node 'h'", "larger than its input 'x'", "1x4x4"]),
        ("conv window too large padded", model(&[IMG, "id = 'h'; kind = 'conv2d'; inputs = ['x']; channels = 2; kernel = 7; padding = 1", OUT]), &["node 'h'", "larger", "padded by 1 to 6x6"]),
        ("conv window too wide", model(&["id = 'x'; kind = 'input'; shape = [1, 9, 2]", "id = 'h'; kind = 'conv2d'; inputs = ['x']; channels = 2; kernel = 3", OUT]), &["node 'h'", "larger"]),
        ("pool window too large", model(&["id = 'x'; kind = 'input'; shape = [3, 2, 2]", "id = 'h'; kind = 'avg-pool'; inputs = ['x']; kernel = 3", OUT]), &["node 'h'", "larger"]),
        ("pool on a flat input", model(&[X, "id = 'h'; kind = 'max-pool'; inputs = ['x']; kernel = 2", OUT]), &["node 'h'", "larger", "'x', which is 4"]),
        ("huge dense weights", model(&[X, "id = 'y'; kind = 'dense'; inputs = ['x']; units = 16000000", "id = 'h'; kind = 'dense'; inputs = ['y']; units = 16000000", OUT]), &["node 'h'", "too large"]),
        // Settings.
        ("conv stride 0", model(&[IMG, "id = 'h'; kind = 'conv2d'; inputs = ['x']; channels = 2; kernel = 3; stride = 0", OUT]), &["node 'h'", "'stride' is 0"]),
        ("pool stride 0", model(&[IMG, "id = 'h'; kind = 'max-pool'; inputs = ['x']; kernel = 2; stride = 0", OUT]), &["node 'h'", "'stride' is 0"]),
        ("kernel 0", model(&[IMG, "id = 'h'; kind = 'avg-pool'; inputs = ['x']; kernel = 0", OUT]), &["node 'h'", "'kernel' is 0"]),
        ("kernel missing", model(&[IMG, "id = 'h'; kind = 'conv2d'; inputs = ['x']; channels = 2", OUT]), &["node 'h'", "a conv2d node needs 'kernel'"]),
        ("channels 0", model(&[IMG, "id = 'h'; kind = 'conv2d'; inputs = ['x']; channels = 0; kernel = 2", OUT]), &["node 'h'", "'channels' is 0"]),
        ("units 0", model(&[X, "id = 'h'; kind = 'dense'; inputs = ['x']; units = 0", OUT]), &["node 'h'", "'units' is 0"]),
        ("units missing", model(&[X, "id = 'h'; kind = 'dense'; inputs = ['x']", OUT]), &["node 'h'", "needs 'units'"]),
        ("huge units", model(&[X, "id = 'h'; kind = 'dense'; inputs = ['x']; units = 99999999999", OUT]), &["node 'h'", "too large"]),
        ("negative padding", model(&[IMG, "id = 'h'; kind = 'conv2d'; inputs = ['x']; channels = 2; kernel = 2; padding = -1", OUT]), &["node 'h'", "'padding' is -1"]),
        ("kernel as string", model(&[IMG, "id = 'h'; kind = 'max-pool'; inputs = ['x']; kernel = '2'", OUT]), &["node 'h'", "'kernel' must be a positive integer"]),
        ("kernel as float", model(&[IMG, "id = 'h'; kind = 'max-pool'; inputs = ['x']; kernel = 2.0", OUT]), &["node 'h'", "'kernel' must be a positive integer"]),
        ("unknown activation", model(&[X, "id = 'h'; kind = 'dense'; inputs = ['x']; units = 3; activation = 'swish'", OUT]), &["node 'h'", "unknown activation 'swish'"]),
        ("activation not string", model(&[X, "id = 'h'; kind = 'dense'; inputs = ['x']; units = 3; activation = 1", OUT]), &["node 'h'", "'activation' must be a string"]),
        ("input size 0", model(&["id = 'x'; kind = 'input'; size = 0", FLAT_H, OUT]), &["node 'x'", "'size' is 0"]),
        ("input shape zero", model(&["id = 'x'; kind = 'input'; shape = [1, 0, 3]", FLAT_H, OUT]), &["node 'x'", "'shape'", "positive"]),
        ("input shape rank", model(&["id = 'x'; kind = 'input'; shape = [28, 28]", FLAT_H, OUT]), &["node 'x'", "[channels, height, width]"]),
        ("input shape and size", model(&["id = 'x'; kind = 'input'; shape = [1, 2, 2]; size = 4", FLAT_H, OUT]), &["node 'x'", "not both"]),
        ("input no shape", model(&["id = 'x'; kind = 'input'", FLAT_H, OUT]), &["node 'x'", "needs 'shape"]),
        // The output.
        ("output not dense", model(&[X, "id = 'f'; kind = 'flatten'; inputs = ['x']"]), &["node 'f'", "output", "must be a dense node", "flatten"]),
        ("output conv", model(&[IMG, "id = 'h'; kind = 'conv2d'; inputs = ['x']; channels = 2; kernel = 2"]), &["node 'h'", "output", "conv2d"]),
        ("output only the input", model(&[X]), &["node 'x'", "output", "dense"]),
        ("output not linear", model(&[X, FLAT_H, "id = 'out'; kind = 'dense'; inputs = ['h']; units = 2; activation = 'tanh'"]), &["node 'out'", "\"linear\"", "tanh"]),
    ];
    let path = Path::new("/tmp/models/bad-model.toml");
    let mut names = std::collections::HashSet::new();
    for (name, text, needles) in &cases {
        assert!(names.insert(*name), "duplicate case name {name}");
        let message = match Graph::parse(path, text) {
            Ok(_) => panic!("case '{name}' parsed but should fail:\n{text}"),
            Err(e) => e.to_string(),
        };
        assert!(
            message.starts_with("/tmp/models/bad-model.toml: "),
            "case '{name}': {message}"
        );
        assert!(
            !message.contains('\n'),
            "case '{name}': one line: {message}"
        );
        for needle in needles.iter() {
            assert!(
                message.contains(needle),
                "case '{name}': '{needle}' not in: {message}"
            );
        }
    }
    // The base of the mutations above is itself fine.
    let g = parse(&with("loss = 'ce'"));
    assert_eq!((g.loss, g.nodes.len()), (Loss::Ce, 3));
}

#[test]
fn windows_that_just_fit_are_accepted() {
    // Padding makes a 6x6 kernel fit a 4x4 input; a 1x1 pool fits a flat input.
    let g = parse(&model(&[
        IMG,
        "id = 'h'; kind = 'conv2d'; inputs = ['x']; channels = 2; kernel = 6; padding = 1",
        OUT,
    ]));
    assert_eq!(g.nodes[1].shape, Shape::new(2, 1, 1));
    let g = parse(&model(&[
        X,
        "id = 'h'; kind = 'max-pool'; inputs = ['x']; kernel = 1",
        OUT,
    ]));
    assert_eq!(g.nodes[1].shape, Shape::flat(4));
}

#[test]
fn loading_a_missing_file_names_it() {
    let e = Graph::load(Path::new("/nonexistent/dir/model-404.toml")).unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("model-404.toml") && m.contains("cannot read"),
        "{m}"
    );
}
