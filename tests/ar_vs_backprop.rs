//! AR's fixed point is backprop's gradient: on a 4-layer MLP at the paper's η = 0.1, every layer's
//! weight gradient reaches cosine ≥ 0.999 after 100 steps and relative error ≤ 1e-4 after 200.
//! And a tiny network trained with AR on a synthetic task lowers its loss.

mod common;

use arelax::engine::Ops as _;
use arelax::engine::{Algorithm, EngineOptions};
use arelax::metrics::compare;
use arelax::model::{Activation, Init, Loss};
use arelax::rng::Rng;
use common::*;

#[test]
fn ar_converges_to_backprop_on_a_four_layer_mlp() {
    let s = spec(&[40, 32, 24, 16, 10], Activation::Relu, Loss::Mse);
    let mut p = problem(&s, EngineOptions::new(16), Init::Normal(0.05), 11);
    let bp = p.engine.bp_gradients().unwrap();
    let series = p.engine.ar_gradient_series(&[1, 100, 200]).unwrap();
    let early = compare(&series[0], &bp);
    assert!(
        early[..3].iter().any(|l| l.weight.rel_error > 1e-2),
        "after one step AR should still be far from backprop: {early:?}"
    );
    for l in compare(&series[1], &bp) {
        assert!(
            l.weight.cosine >= 0.999,
            "100 steps: layer {} cosine {}",
            l.layer,
            l.weight.cosine
        );
    }
    for l in compare(&series[2], &bp) {
        assert!(
            l.weight.rel_error <= 1e-4,
            "200 steps: layer {} rel. error {}",
            l.layer,
            l.weight.rel_error
        );
        assert!(
            l.bias.rel_error <= 1e-4,
            "200 steps: layer {} bias rel. error {}",
            l.layer,
            l.bias.rel_error
        );
    }
}

/// Three Gaussian blobs in 8-D; an 8-16-3 MLP trained with AR for 60 steps.
#[test]
fn training_with_ar_lowers_the_loss() {
    let s = spec(&[8, 16, 3], Activation::Tanh, Loss::Mse);
    let b = 24;
    let mut opts = EngineOptions::new(b);
    opts.lr = 0.01;
    opts.relax_rate = 0.5;
    let mut p = problem(&s, opts, Init::FanIn, 12);
    let mut rng = Rng::new(5);
    let centres: Vec<Vec<f32>> = (0..3)
        .map(|_| (0..8).map(|_| rng.normal() as f32).collect())
        .collect();
    let make_batch = |rng: &mut Rng| {
        let mut input = Vec::new();
        let mut target = vec![0.0; b * 3];
        for i in 0..b {
            let c = rng.below(3);
            input.extend(centres[c].iter().map(|&m| m + 0.3 * rng.normal() as f32));
            target[i * 3 + c] = 1.0;
        }
        (input, target)
    };
    let mut eval = Rng::new(99);
    let (ei, et) = make_batch(&mut eval);
    let loss_on = |p: &mut Problem| {
        p.engine.set_batch(&ei, &et).unwrap();
        p.engine.ar_gradients(1).unwrap();
        let (l, _) = p.engine.batch_stats().unwrap();
        l.iter().map(|&x| x as f64).sum::<f64>()
    };
    let before = loss_on(&mut p);
    for _ in 0..60 {
        let (i, t) = make_batch(&mut rng);
        p.engine.set_batch(&i, &t).unwrap();
        p.engine.train_step(Algorithm::Ar, 20);
    }
    p.engine.finish().unwrap();
    let after = loss_on(&mut p);
    assert!(after < 0.3 * before, "loss {before} -> {after}");
}
