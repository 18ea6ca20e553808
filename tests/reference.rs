//! The CPU reference checked on its own terms: backprop against finite differences of the loss,
//! and AR's Jacobi iteration converging to backprop in float64. No GPU needed.

use arelax::model::{Activation, Init, Loss, ModelSpec, Params, Reduction};
use arelax::reference::{self as cpu, Params64};
use arelax::rng::Rng;

fn setup(act: Activation, loss: Loss) -> (ModelSpec, Params64, Vec<f64>, Vec<f64>, usize) {
    let s = ModelSpec::new(vec![5, 6, 4, 3], act, loss).unwrap();
    let p = Params64::from(&Params::init(&s, Init::FanIn, 3));
    let mut rng = Rng::new(4);
    let b = 3;
    let x: Vec<f64> = (0..b * 5).map(|_| rng.normal()).collect();
    let mut y = vec![0.0; b * 3];
    for i in 0..b {
        y[i * 3 + rng.below(3)] = 1.0;
    }
    (s, p, x, y, b)
}

fn total_loss(s: &ModelSpec, p: &Params64, x: &[f64], y: &[f64], b: usize) -> f64 {
    let f = cpu::forward(s, p, x, b);
    cpu::output_error(s, &f, y, Reduction::Sum)
        .loss
        .iter()
        .sum()
}

#[test]
fn backprop_matches_finite_differences() {
    for (act, loss) in [
        (Activation::Tanh, Loss::Mse),
        (Activation::Sigmoid, Loss::Ce),
        (Activation::LeakyRelu, Loss::Mse),
    ] {
        let (s, p, x, y, b) = setup(act, loss);
        let f = cpu::forward(&s, &p, &x, b);
        let out = cpu::output_error(&s, &f, &y, Reduction::Sum);
        let g = cpu::gradients(&s, &f, &cpu::backprop(&s, &p, &f, &out.g), true);
        let h = 1e-6;
        for l in 0..s.depth() {
            for i in 0..p.weights[l].len() {
                let mut plus = p.clone();
                plus.weights[l][i] += h;
                let mut minus = p.clone();
                minus.weights[l][i] -= h;
                let numeric = (total_loss(&s, &plus, &x, &y, b)
                    - total_loss(&s, &minus, &x, &y, b))
                    / (2.0 * h);
                let err = (numeric - g.weights[l][i]).abs();
                assert!(
                    err < 1e-6 * (1.0 + numeric.abs()),
                    "{act}/{loss} W{l}[{i}]: {numeric} vs {}",
                    g.weights[l][i]
                );
            }
            for i in 0..p.biases[l].len() {
                let mut plus = p.clone();
                plus.biases[l][i] += h;
                let mut minus = p.clone();
                minus.biases[l][i] -= h;
                let numeric = (total_loss(&s, &plus, &x, &y, b)
                    - total_loss(&s, &minus, &x, &y, b))
                    / (2.0 * h);
                assert!(
                    (numeric - g.biases[l][i]).abs() < 1e-6 * (1.0 + numeric.abs()),
                    "{act}/{loss} b{l}[{i}]"
                );
            }
        }
    }
}

#[test]
fn jacobi_relaxation_converges_to_backprop_in_float64() {
    let (s, p, x, y, b) = setup(Activation::Tanh, Loss::Mse);
    let f = cpu::forward(&s, &p, &x, b);
    let out = cpu::output_error(&s, &f, &y, Reduction::Sum);
    let exact = cpu::backprop(&s, &p, &f, &out.g);
    let mut r = cpu::relax_start(&s, &f, &out.g, true);
    for _ in 0..600 {
        r = cpu::relax_step(&s, &p, &f, &r, 0.1, true);
    }
    for l in 1..s.depth() {
        for (a, e) in r[l].iter().zip(&exact[l]) {
            assert!((a - e).abs() < 1e-9 * (1.0 + e.abs()), "r_{l}: {a} vs {e}");
        }
    }
}

#[test]
fn mean_reduction_divides_the_gradient_by_the_batch() {
    let (s, p, x, y, b) = setup(Activation::Relu, Loss::Ce);
    let f = cpu::forward(&s, &p, &x, b);
    let sum = cpu::output_error(&s, &f, &y, Reduction::Sum);
    let mean = cpu::output_error(&s, &f, &y, Reduction::Mean);
    for (a, m) in sum.g.iter().zip(&mean.g) {
        assert!((a / b as f64 - m).abs() < 1e-15);
    }
}
