//! Every GPU kernel against its float64 CPU twin, on sizes that are not multiples of the 64-wide
//! tile (and cross several tiles), for every activation, loss and reduction.

#![allow(clippy::needless_range_loop)] // index loops mirror the maths

mod common;

use arelax::engine::Ops as _;
use arelax::engine::{EngineOptions, Feedback, RelaxStart};
use arelax::model::{Activation, Init, Loss, Params, Reduction};
use arelax::reference::{self as cpu, Params64};
use common::*;

const ODD: [usize; 4] = [70, 67, 33, 5];
const ODD_BATCH: usize = 66;

/// Every layer's weight and bias gradient within `tol` (relative error) of the CPU twin's.
fn assert_grads_close(gpu: &Params, cpu: &Params64, tol: f64, what: &str) {
    for l in 0..gpu.weights.len() {
        let e = rel_err(&gpu.weights[l], &cpu.weights[l]);
        assert!(e < tol, "{what}: weight grad {l} rel. error {e}");
        let e = rel_err(&gpu.biases[l], &cpu.biases[l]);
        assert!(e < tol, "{what}: bias grad {l} rel. error {e}");
    }
}

/// The CPU twin's forward pass, output error, and the state after `steps` Jacobi steps (η 0.1,
/// with f', from the forward state) of problem `p` at batch `b`.
fn reference_relaxation(
    s: &arelax::model::ModelSpec,
    p: &Problem,
    b: usize,
    steps: usize,
) -> (cpu::Forward, cpu::OutputError, cpu::State) {
    let w = Params64::from(&p.params);
    let fwd = cpu::forward(s, &w, &to64(&p.input), b);
    let out = cpu::output_error(s, &fwd, &to64(&p.target), Reduction::Sum);
    let mut r = cpu::relax_start(s, &fwd, &out.g, true);
    for _ in 0..steps {
        r = cpu::relax_step(s, &w, &fwd, &r, 0.1, true);
    }
    (fwd, out, r)
}

fn encode(
    engine: &mut arelax::engine::Engine,
    f: impl FnOnce(&mut arelax::engine::Engine, &mut wgpu::CommandEncoder),
) {
    let mut enc = ctx().device.create_command_encoder(&Default::default());
    f(engine, &mut enc);
    ctx().queue.submit([enc.finish()]);
    engine.finish().unwrap();
}

#[test]
fn forward_matches_reference_for_every_activation() {
    for act in [
        Activation::Relu,
        Activation::LeakyRelu,
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::Linear,
    ] {
        let s = spec(&ODD, act, Loss::Mse);
        let mut p = problem(&s, EngineOptions::new(ODD_BATCH), Init::FanIn, 3);
        encode(&mut p.engine, |e, enc| e.encode_forward(enc));
        let fwd = cpu::forward(&s, &Params64::from(&p.params), &to64(&p.input), ODD_BATCH);
        let x = p.engine.activities().unwrap();
        let fp = p.engine.derivatives().unwrap();
        for l in 1..=s.depth() {
            let e = rel_err(&x[l], &fwd.x[l]);
            assert!(e < 1e-5, "{act}: x_{l} rel. error {e}");
        }
        for l in 0..s.depth() {
            let e = rel_err(&fp[l], &fwd.fp[l]);
            assert!(e < 1e-5, "{act}: f'_{l} rel. error {e}");
        }
    }
}

/// The output error in the output layer's forward dispatch (the automatic tile spans the 7
/// outputs; a forced 16x16 tile spans 16 exactly) and in a dispatch of its own (20 outputs are
/// wider than a 16x16 tile), for each loss and reduction; and the relaxation start the forward
/// pass leaves in every hidden layer, or zeros.
#[test]
fn output_error_matches_reference_for_each_loss_and_reduction() {
    use arelax::gpu::tile::{TileChoice, TileShape};
    let cases = [
        (7, TileChoice::Auto, true, RelaxStart::Forward),
        (
            16,
            TileChoice::Fixed(TileShape::T16),
            true,
            RelaxStart::Zero,
        ),
        (
            20,
            TileChoice::Fixed(TileShape::T16),
            false,
            RelaxStart::Forward,
        ),
    ];
    for (width, tile, fused, start) in cases {
        for loss in [Loss::Mse, Loss::Ce] {
            for reduction in [Reduction::Sum, Reduction::Mean] {
                let what = format!("{width} outputs, {tile}, {loss}/{reduction}");
                let s = spec(&[9, 13, 6, width], Activation::Tanh, loss);
                let mut opts = EngineOptions::new(11);
                opts.reduction = reduction;
                opts.tile = tile;
                opts.start = start;
                let mut p = problem(&s, opts, Init::Normal(0.5), 4);
                assert_eq!(p.engine.fuses_output_error(), fused, "{what}");
                encode(&mut p.engine, |e, enc| {
                    e.encode_forward(enc);
                    e.encode_relax_start(enc);
                });
                let fwd = cpu::forward(&s, &Params64::from(&p.params), &to64(&p.input), 11);
                let out = cpu::output_error(&s, &fwd, &to64(&p.target), reduction);
                let (loss_gpu, correct) = p.engine.batch_stats().unwrap();
                let e = rel_err(&loss_gpu, &out.loss);
                assert!(e < 1e-5, "{what}: loss rel. error {e}");
                assert_eq!(correct, out.correct, "{what}: accuracy flags");
                let state = p.engine.state().unwrap();
                let e = rel_err(&state[s.depth()], &out.g);
                assert!(e < 1e-5, "{what}: output clamp rel. error {e}");
                let x = p.engine.activities().unwrap();
                for l in 1..s.depth() {
                    match start {
                        RelaxStart::Forward => assert_eq!(state[l], x[l], "{what}: layer {l}"),
                        RelaxStart::Zero => {
                            assert!(state[l].iter().all(|&v| v == 0.0), "{what}: layer {l}")
                        }
                    }
                }
            }
        }
    }
}

/// The forward pass writes the relaxation start, so a start needs no copy, but only while
/// nothing has changed it: a start asked for after some steps (or after backprop's signals)
/// copies it again, and the relaxation from it matches the reference.
#[test]
fn a_restarted_relaxation_starts_from_the_forward_pass_again() {
    let s = spec(&ODD, Activation::Relu, Loss::Mse);
    let b = 9;
    let mut p = problem(&s, EngineOptions::new(b), Init::FanIn, 12);
    let (_, _, want) = reference_relaxation(&s, &p, b, 3);
    for detour in ["relaxation", "backprop"] {
        encode(&mut p.engine, |e, enc| {
            e.encode_forward(enc);
            if detour == "relaxation" {
                // From the start the forward pass wrote, without asking for it.
                e.encode_relax(enc, 5);
            } else {
                e.encode_backprop_signals(enc);
            }
            e.encode_relax_start(enc);
            e.encode_relax(enc, 3);
        });
        let got = p.engine.state().unwrap();
        for l in 1..s.depth() {
            let e = rel_err(&got[l], &want[l]);
            assert!(e < 1e-5, "after {detour}: layer {l} rel. error {e}");
        }
    }
}

/// The GPU after T steps equals T exact Jacobi steps on the CPU, for the variants of the step.
#[test]
fn relaxation_equals_t_jacobi_steps() {
    let s = spec(&ODD, Activation::Relu, Loss::Mse);
    let cases = [
        (RelaxStart::Forward, true, 0.1f32, 7usize),
        (RelaxStart::Zero, true, 0.3, 5),
        (RelaxStart::Forward, false, 0.2, 6),
        (RelaxStart::Forward, true, 1.0, 3),
    ];
    for (start, deriv, rate, steps) in cases {
        let mut opts = EngineOptions::new(ODD_BATCH);
        opts.start = start;
        opts.relax_derivative = deriv;
        opts.relax_rate = rate;
        let mut p = problem(&s, opts, Init::FanIn, 5);
        encode(&mut p.engine, |e, enc| {
            e.encode_forward(enc);
            e.encode_relax_start(enc);
            e.encode_relax(enc, steps);
        });
        let w = Params64::from(&p.params);
        let fwd = cpu::forward(&s, &w, &to64(&p.input), ODD_BATCH);
        let out = cpu::output_error(&s, &fwd, &to64(&p.target), Reduction::Sum);
        let mut r = cpu::relax_start(&s, &fwd, &out.g, start == RelaxStart::Forward);
        for _ in 0..steps {
            r = cpu::relax_step(&s, &w, &fwd, &r, rate as f64, deriv);
        }
        let gpu = p.engine.state().unwrap();
        for l in 1..=s.depth() {
            let e = rel_err(&gpu[l], &r[l]);
            assert!(
                e < 1e-4,
                "{start:?} deriv={deriv} eta={rate}: r_{l} rel. error {e}"
            );
        }
    }
}

#[test]
fn local_gradients_match_reference() {
    let s = spec(&ODD, Activation::Tanh, Loss::Ce);
    for update_derivative in [true, false] {
        let mut opts = EngineOptions::new(ODD_BATCH);
        opts.update_derivative = update_derivative;
        let mut p = problem(&s, opts, Init::FanIn, 6);
        let g_gpu = p.engine.ar_gradients(9).unwrap();
        let (fwd, _, r) = reference_relaxation(&s, &p, ODD_BATCH, 9);
        let g = cpu::gradients(&s, &fwd, &r, update_derivative);
        assert_grads_close(&g_gpu, &g, 1e-4, &format!("deriv={update_derivative}"));
    }
}

/// Weight gradients split into K chunks (the batch cut among workgroups, their partial sums added
/// by a second dispatch) match the CPU twin: for AR and backprop, with the adapter's tile and
/// with 32x32 (whose K groups make a chunk 32 long), with chunks that do not divide the batch and
/// more chunks than there are slices of it (the last ones empty); and a training step through
/// them moves the weights by −lr·G.
#[test]
fn split_weight_gradients_match_reference() {
    use arelax::gpu::tile::{TileChoice, TileShape};
    let s = spec(&ODD, Activation::Tanh, Loss::Ce);
    for tile in [TileChoice::Auto, TileChoice::Fixed(TileShape::T32)] {
        for split in [2, 3, 40] {
            let what = format!("{tile:?}, {split} chunks");
            let mut opts = EngineOptions::new(ODD_BATCH);
            opts.tile = tile;
            opts.grad_split = split;
            let mut p = problem(&s, opts, Init::FanIn, 6);
            let w = Params64::from(&p.params);
            let (fwd, out, r) = reference_relaxation(&s, &p, ODD_BATCH, 9);
            let g = cpu::gradients(&s, &fwd, &r, true);
            let g_gpu = p.engine.ar_gradients(9).unwrap();
            assert_grads_close(&g_gpu, &g, 1e-4, &format!("{what}: AR"));
            let g_gpu = p.engine.bp_gradients().unwrap();
            let g = cpu::gradients(&s, &fwd, &cpu::backprop(&s, &w, &fwd, &out.g), true);
            assert_grads_close(&g_gpu, &g, 1e-5, &format!("{what}: backprop"));
            // A backprop step: the update reads the chunks' sum.
            p.engine.set_lr(0.05);
            p.engine.train_step(arelax::engine::Algorithm::Bp, 0);
            p.engine.finish().unwrap();
            let after = p.engine.params().unwrap();
            for l in 0..s.depth() {
                let step: Vec<f32> = after.weights[l]
                    .iter()
                    .zip(&p.params.weights[l])
                    .map(|(a, b)| (b - a) / 0.05)
                    .collect();
                let e = rel_err(&step, &g.weights[l]);
                assert!(e < 1e-3, "{what}: SGD step of W_{l}, rel. error {e}");
            }
        }
    }
}

#[test]
fn gpu_backprop_matches_cpu_backprop() {
    for (act, loss) in [
        (Activation::Relu, Loss::Mse),
        (Activation::Sigmoid, Loss::Ce),
    ] {
        let s = spec(&ODD, act, loss);
        let mut p = problem(&s, EngineOptions::new(ODD_BATCH), Init::FanIn, 7);
        let g_gpu = p.engine.bp_gradients().unwrap();
        let w = Params64::from(&p.params);
        let fwd = cpu::forward(&s, &w, &to64(&p.input), ODD_BATCH);
        let out = cpu::output_error(&s, &fwd, &to64(&p.target), Reduction::Sum);
        let g = cpu::gradients(&s, &fwd, &cpu::backprop(&s, &w, &fwd, &out.g), true);
        assert_grads_close(&g_gpu, &g, 1e-5, &format!("{act}/{loss}"));
    }
}

/// One SGD step of AR and of backprop changes the weights by exactly −lr·G of the CPU.
#[test]
fn one_sgd_step_matches_reference() {
    let s = spec(&[12, 10, 8, 4], Activation::Relu, Loss::Mse);
    for algorithm in [arelax::engine::Algorithm::Ar, arelax::engine::Algorithm::Bp] {
        let mut opts = EngineOptions::new(6);
        opts.lr = 0.05;
        let mut p = problem(&s, opts, Init::FanIn, 8);
        p.engine.train_step(algorithm, 15);
        p.engine.finish().unwrap();
        let after = p.engine.params().unwrap();
        let w = Params64::from(&p.params);
        let fwd = cpu::forward(&s, &w, &to64(&p.input), 6);
        let out = cpu::output_error(&s, &fwd, &to64(&p.target), Reduction::Sum);
        let r = match algorithm {
            arelax::engine::Algorithm::Bp => cpu::backprop(&s, &w, &fwd, &out.g),
            arelax::engine::Algorithm::Ar => {
                let mut r = cpu::relax_start(&s, &fwd, &out.g, true);
                for _ in 0..15 {
                    r = cpu::relax_step(&s, &w, &fwd, &r, 0.1, true);
                }
                r
            }
        };
        let mut expect = w.clone();
        cpu::sgd(&mut expect, &cpu::gradients(&s, &fwd, &r, true), 0.05, 0.0);
        for l in 0..s.depth() {
            let delta_gpu: Vec<f32> = after.weights[l]
                .iter()
                .zip(&p.params.weights[l])
                .map(|(a, b)| a - b)
                .collect();
            let delta_cpu: Vec<f64> = expect.weights[l]
                .iter()
                .zip(&w.weights[l])
                .map(|(a, b)| a - b)
                .collect();
            let e = rel_err(&delta_gpu, &delta_cpu);
            assert!(e < 1e-3, "{algorithm:?}: weight update {l} rel. error {e}");
            let e = rel_err(&after.biases[l], &expect.biases[l]);
            assert!(e < 1e-4, "{algorithm:?}: bias {l} rel. error {e}");
        }
    }
}

/// With `fused_update` a training step applies SGD inside its gradient dispatch (or the split
/// gradients' sum), and that is the same arithmetic as the gradients followed by the SGD
/// kernel: W, ψ and the gradients come out bit for bit the same, for AR and backprop, exact and
/// learned feedback, split or not, after the learning rate was changed.
#[test]
fn a_training_step_updates_in_its_gradient_dispatch_exactly_as_sgd_after_it() {
    use arelax::engine::Algorithm;
    let s = spec(&[12, 10, 8, 4], Activation::Tanh, Loss::Ce);
    let cases = [
        (Algorithm::Ar, Feedback::Transpose, 1),
        (Algorithm::Ar, Feedback::Learned, 1),
        (Algorithm::Ar, Feedback::Transpose, 3),
        (Algorithm::Ar, Feedback::Learned, 3),
        (Algorithm::Bp, Feedback::Transpose, 1),
        (Algorithm::Bp, Feedback::Transpose, 2),
    ];
    for (algorithm, feedback, split) in cases {
        let what = format!("{algorithm:?}, {feedback:?} feedback, split {split}");
        let engines = [true, false].map(|fused| {
            let mut opts = EngineOptions::new(7);
            opts.feedback = feedback;
            opts.feedback_decay = 0.25;
            opts.grad_split = split;
            opts.fused_update = fused;
            let mut p = problem(&s, opts, Init::FanIn, 21);
            if feedback == Feedback::Learned {
                let psi = Params::init(&s, Init::FanIn, 22);
                p.engine.set_feedback(&psi).unwrap();
            }
            p.engine.set_lr(0.07);
            p
        });
        let [mut fused, mut apart] = engines;
        fused.engine.train_step(algorithm, 6);
        encode(&mut apart.engine, |e, enc| {
            e.encode_forward(enc);
            match algorithm {
                Algorithm::Ar => {
                    e.encode_relax_start(enc);
                    e.encode_relax(enc, 6);
                    e.encode_grads(enc);
                }
                Algorithm::Bp => {
                    e.encode_backprop_signals(enc);
                    e.encode_exact_grads(enc);
                }
            }
            e.encode_sgd(enc);
        });
        fused.engine.finish().unwrap();
        let (a, b) = (&fused.engine, &apart.engine);
        let before = &fused.params;
        assert!(a.params().unwrap() != *before, "{what}: no step was taken");
        // Compared whole, bit for bit (a failure names what differs, not every value).
        assert!(
            a.params().unwrap() == b.params().unwrap(),
            "{what}: W differs"
        );
        assert!(
            a.grads().unwrap() == b.grads().unwrap(),
            "{what}: gradients differ"
        );
        assert!(
            a.feedback().unwrap() == b.feedback().unwrap(),
            "{what}: ψ differs"
        );
        if feedback == Feedback::Learned {
            let psi = Params::init(&s, Init::FanIn, 22);
            assert!(
                a.feedback().unwrap().unwrap() != psi,
                "{what}: ψ did not learn"
            );
        }
    }
}

/// Random feedback relaxes through ψ, not W; learned feedback also takes the SGD step (with decay).
#[test]
fn feedback_weights_are_used_and_learned() {
    let s = spec(&[10, 9, 7, 3], Activation::Relu, Loss::Mse);
    let mut rng = arelax::rng::Rng::new(77);
    let psi = Params::random(&s, Init::Normal(0.3), &mut rng);
    for feedback in [Feedback::Random, Feedback::Learned] {
        let mut opts = EngineOptions::new(5);
        opts.feedback = feedback;
        opts.lr = 0.05;
        opts.feedback_decay = 0.1;
        let mut p = problem(&s, opts, Init::FanIn, 9);
        p.engine.set_feedback(&psi).unwrap();
        let g_gpu = p.engine.ar_gradients(4).unwrap();
        let w = Params64::from(&p.params);
        let fwd = cpu::forward(&s, &w, &to64(&p.input), 5);
        let out = cpu::output_error(&s, &fwd, &to64(&p.target), Reduction::Sum);
        let mut r = cpu::relax_start(&s, &fwd, &out.g, true);
        for _ in 0..4 {
            r = cpu::relax_step(&s, &Params64::from(&psi), &fwd, &r, 0.1, true);
        }
        let g = cpu::gradients(&s, &fwd, &r, true);
        for l in 0..s.depth() {
            let e = rel_err(&g_gpu.weights[l], &g.weights[l]);
            assert!(e < 1e-4, "{feedback:?}: grad {l} rel. error {e}");
        }
        p.engine.train_step(arelax::engine::Algorithm::Ar, 4);
        p.engine.finish().unwrap();
        let psi_after = p.engine.feedback().unwrap().unwrap();
        let mut expect = Params64::from(&psi);
        if feedback == Feedback::Learned {
            cpu::sgd(&mut expect, &g, 0.05, 0.1);
        }
        for l in 0..s.depth() {
            let e = rel_err(&psi_after.weights[l], &expect.weights[l]);
            assert!(e < 1e-5, "{feedback:?}: psi {l} rel. error {e}");
        }
    }
}

#[test]
fn impossible_settings_are_rejected() {
    let s = spec(&[4, 3, 2], Activation::Relu, Loss::Mse);
    for (batch, rate, lr) in [
        (0, 0.1, 0.1),
        (4, 0.0, 0.1),
        (4, 2.5, 0.1),
        (4, f32::NAN, 0.1),
        (4, 0.1, f32::INFINITY),
    ] {
        let mut o = EngineOptions::new(batch);
        o.relax_rate = rate;
        o.lr = lr;
        let err = arelax::engine::Engine::new(ctx(), &s, o)
            .err()
            .expect("should be rejected");
        assert!(matches!(err, arelax::Error::Config(_)), "{err}");
    } // The weight gradients' K chunks: 1 to 64.
    for split in [0, 65] {
        let mut o = EngineOptions::new(4);
        o.grad_split = split;
        let err = arelax::engine::Engine::new(ctx(), &s, o)
            .err()
            .expect("should be rejected");
        assert!(err.to_string().contains("grad split"), "{err}");
    }
}

/// The second paper's "no frozen forward pass": f' at the current state in the relaxation
/// and/or the update, and the relaxed state as the update's pre-synaptic activity.
#[test]
fn no_frozen_forward_pass_options_match_the_reference() {
    let s = spec(&[15, 13, 11, 9, 4], Activation::Tanh, Loss::Mse);
    for (relax_cur, update_cur, relaxed_input) in [
        (true, false, false),
        (false, true, true),
        (true, true, true),
    ] {
        let mut opts = EngineOptions::new(7);
        opts.relax_fprime_current = relax_cur;
        opts.update_fprime_current = update_cur;
        opts.update_input_relaxed = relaxed_input;
        opts.relax_rate = 0.3;
        let mut p = problem(&s, opts, Init::FanIn, 31);
        let g_gpu = p.engine.ar_gradients(6).unwrap();
        let w = Params64::from(&p.params);
        let fwd = cpu::forward(&s, &w, &to64(&p.input), 7);
        let out = cpu::output_error(&s, &fwd, &to64(&p.target), Reduction::Sum);
        let mut r = cpu::relax_start(&s, &fwd, &out.g, true);
        for _ in 0..6 {
            let fp = if relax_cur {
                cpu::current_derivatives(&s, &w, &fwd, &r)
            } else {
                fwd.fp.clone()
            };
            r = cpu::relax_step_fp(&s, &w, &fp, 7, &r, 0.3, true);
        }
        let fp = if update_cur {
            cpu::current_derivatives(&s, &w, &fwd, &r)
        } else {
            fwd.fp.clone()
        };
        let mut x = fwd.x.clone();
        if relaxed_input {
            x[1..s.depth()].clone_from_slice(&r[1..s.depth()]);
        }
        let g = cpu::gradients_from(&s, &x, &fp, 7, &r, true);
        let what = format!("({relax_cur}, {update_cur}, {relaxed_input})");
        assert_grads_close(&g_gpu, &g, 1e-4, &what);
    }
}

/// Every tile shape of the matrix-product family, forced on every tiled kernel (forward, relax,
/// f' at the current state, weight gradient, single-layer backprop), on sizes that cross several
/// tiles of even the largest shape and are multiples of none.
#[test]
fn every_tile_shape_matches_reference() {
    for shape in arelax::gpu::tile::TileShape::ALL {
        tile_shape_matches_reference(shape);
    }
}

/// The shapes `scripts/gpu-check.sh tiles` sweeps beside the named ones
/// (`scripts/tile-specs.txt`): the same check, so whatever a GPU measures is also right. (The
/// test device is opened for 512 invocations and 32 KiB per workgroup, see `common::new_ctx`.)
#[test]
fn swept_tile_specs_match_reference() {
    let specs: Vec<&str> = include_str!("../scripts/tile-specs.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(specs.len(), 11, "{specs:?}");
    for spec in specs {
        tile_shape_matches_reference(spec.parse().unwrap());
    }
}

fn tile_shape_matches_reference(shape: arelax::gpu::tile::TileShape) {
    use arelax::gpu::tile::TileChoice;
    let s = spec(&[150, 131, 67, 5], Activation::Tanh, Loss::Mse);
    let b = 133;
    let mut opts = EngineOptions::new(b);
    opts.tile = TileChoice::Fixed(shape);
    opts.relax_fprime_current = true;
    opts.update_fprime_current = true;
    opts.relax_rate = 0.3;
    let mut p = problem(&s, opts, Init::FanIn, 41);
    let w = Params64::from(&p.params);
    let fwd = cpu::forward(&s, &w, &to64(&p.input), b);
    let out = cpu::output_error(&s, &fwd, &to64(&p.target), Reduction::Sum);

    let g_gpu = p.engine.ar_gradients(4).unwrap();
    let x = p.engine.activities().unwrap();
    for l in 1..=s.depth() {
        let e = rel_err(&x[l], &fwd.x[l]);
        assert!(e < 1e-5, "{shape}: x_{l} rel. error {e}");
    }
    let mut r = cpu::relax_start(&s, &fwd, &out.g, true);
    for _ in 0..4 {
        let fp = cpu::current_derivatives(&s, &w, &fwd, &r);
        r = cpu::relax_step_fp(&s, &w, &fp, b, &r, 0.3, true);
    }
    let fp = cpu::current_derivatives(&s, &w, &fwd, &r);
    let g = cpu::gradients_from(&s, &fwd.x, &fp, b, &r, true);
    assert_grads_close(&g_gpu, &g, 1e-4, &format!("{shape}: AR"));

    let g_gpu = p.engine.bp_gradients().unwrap();
    let g = cpu::gradients(&s, &fwd, &cpu::backprop(&s, &w, &fwd, &out.g), true);
    assert_grads_close(&g_gpu, &g, 1e-5, &format!("{shape}: backprop"));
}

/// The bias gradient is the weight-gradient product's extra column (`[G | g] = eᵀ [x | 1]`):
/// with input widths that are multiples of the tile width, that column is alone in its tile
/// (128 for the 128-wide shapes, 64, 32 and 16 for the others), and must still be right.
#[test]
fn bias_gradient_column_alone_in_its_tile() {
    use arelax::gpu::tile::{TileChoice, TileShape};
    let s = spec(&[128, 64, 32, 16, 5], Activation::Tanh, Loss::Mse);
    let b = 21;
    for shape in TileShape::ALL {
        let mut opts = EngineOptions::new(b);
        opts.tile = TileChoice::Fixed(shape);
        let mut p = problem(&s, opts, Init::FanIn, 47);
        let w = Params64::from(&p.params);
        let fwd = cpu::forward(&s, &w, &to64(&p.input), b);
        let out = cpu::output_error(&s, &fwd, &to64(&p.target), Reduction::Sum);
        let g_gpu = p.engine.bp_gradients().unwrap();
        let g = cpu::gradients(&s, &fwd, &cpu::backprop(&s, &w, &fwd, &out.g), true);
        assert_grads_close(&g_gpu, &g, 1e-5, &shape.to_string());
    }
}

/// Unrolling the tiled product's register loops (`//!unroll`) changes no bit: every tile shape
/// gives the same activities and AR and backprop gradients with the loops left rolled
/// (`ARELAX_UNROLL=0`), on odd sizes.
#[test]
fn unrolled_and_rolled_tiles_agree_bit_for_bit() {
    use arelax::gpu::tile::{TileChoice, TileShape};
    let mut rolled = new_ctx();
    rolled.unroll = false;
    let rolled = std::sync::Arc::new(rolled);
    assert!(ctx().unroll, "the test device unrolls by default");
    let s = spec(&[150, 131, 67, 5], Activation::Tanh, Loss::Mse);
    let b = 37;
    for shape in TileShape::ALL {
        let mut opts = EngineOptions::new(b);
        opts.tile = TileChoice::Fixed(shape);
        let mut unrolled = problem(&s, opts.clone(), Init::FanIn, 43);
        let mut other = arelax::engine::Engine::new(rolled.clone(), &s, opts).unwrap();
        other.set_params(&unrolled.params).unwrap();
        other.set_batch(&unrolled.input, &unrolled.target).unwrap();
        let a = unrolled.engine.ar_gradients(9).unwrap();
        let o = other.ar_gradients(9).unwrap();
        assert_eq!(a.weights, o.weights, "{shape}: AR gradients");
        assert_eq!(a.biases, o.biases, "{shape}: AR bias gradients");
        assert_eq!(
            unrolled.engine.activities().unwrap(),
            other.activities().unwrap(),
            "{shape}: activities"
        );
        let a = unrolled.engine.bp_gradients().unwrap();
        let o = other.bp_gradients().unwrap();
        assert_eq!(a.weights, o.weights, "{shape}: backprop gradients");
    }
}

/// The resident kernel (several steps per dispatch, a workgroup per few samples) equals T exact
/// Jacobi steps, for step counts of one dispatch and of several (lavapipe runs at most 16 steps
/// per dispatch, the last one fewer: 100 = 6 × 16 + 4), batches that are not a
/// multiple of its rows per workgroup, and every way of holding rows (f32, vec2, one and two
/// vec4s): with threads enough for one column each, and with few threads, so that a thread owns
/// several columns and runs several K slices; 4 to 32 loads in flight per thread; K walked
/// upwards every step, or down on odd steps (zigzag); in one workgroup per row block, or in
/// parts (an upper part posting the lowest layer's input every step for the lower ones); with
/// weights loaded every step, or kept in registers (c); with units of 1 to 4 columns (w), the last
/// of a layer narrower; with extra items dealt round robin or packed by the host (b); with 16 and
/// 24 rows (4 and 6 vec4s), in parts too (each workgroup holding only its own layers' inputs);
/// and 8 rows in parts with weights in registers (what `tune` tries at large batches).
#[test]
fn resident_relaxation_equals_t_jacobi_steps() {
    for shape in [
        "auto",
        "r1-t128-u4",
        "r2-t512-z",
        "r4-t160-u32",
        "r8-t128-z",
        "r1-p2",
        "r2-t128-p4-z",
        "r4-t96-u4-p3",
        "r2-t512-p4-c",
        "r4-t96-w2",
        "r8-t64-u4-w3-z",
        "r1-t256-w4",
        "r2-t96-p3-w2-b-z",
        "r2-t256-p1-b-z",
        "r1-t256-p1-w2-b",
        "r16-t64-u4-w2",
        "r24-t128-p3-z",
        "r8-t512-p4-c",
    ] {
        resident_relaxation_cases(shape.parse().unwrap());
    }
}

fn resident_relaxation_cases(shape: arelax::gpu::resident::ResidentShape) {
    use arelax::engine::RelaxKernel;
    // (widths, batch, start, derivative, eta, steps)
    type Case<'a> = (&'a [usize], usize, RelaxStart, bool, f32, usize);
    let cases: [Case; 5] = [
        (&ODD, ODD_BATCH, RelaxStart::Forward, true, 0.1, 7),
        (&ODD, ODD_BATCH, RelaxStart::Zero, false, 0.3, 5),
        (&ODD, 3, RelaxStart::Forward, true, 1.0, 3),
        (&[20, 300, 270, 7], 9, RelaxStart::Forward, true, 0.1, 100),
        (
            &[12, 40, 30, 20, 4],
            6,
            RelaxStart::Forward,
            true,
            0.05,
            300,
        ),
    ];
    for (widths, b, start, deriv, rate, steps) in cases {
        let s = spec(widths, Activation::Tanh, Loss::Mse);
        let mut opts = EngineOptions::new(b);
        opts.relax_kernel = RelaxKernel::Resident;
        opts.resident = shape;
        opts.start = start;
        opts.relax_derivative = deriv;
        opts.relax_rate = rate;
        let mut p = problem(&s, opts, Init::FanIn, 13);
        let g_gpu = p.engine.ar_gradients(steps).unwrap();
        p.engine.check_relaxation().unwrap();
        let plan = p.engine.resident_plan().unwrap().clone();
        let w = Params64::from(&p.params);
        let fwd = cpu::forward(&s, &w, &to64(&p.input), b);
        let out = cpu::output_error(&s, &fwd, &to64(&p.target), Reduction::Sum);
        let mut r = cpu::relax_start(&s, &fwd, &out.g, start == RelaxStart::Forward);
        for _ in 0..steps {
            r = cpu::relax_step(&s, &w, &fwd, &r, rate as f64, deriv);
        }
        let gpu = p.engine.state().unwrap();
        let what = format!(
            "{shape} (r{}-t{}, {} extra items) {widths:?} B={b} T={steps} deriv={deriv} eta={rate}",
            plan.rows, plan.threads, plan.n_extra
        );
        for l in 1..=s.depth() {
            let e = rel_err(&gpu[l], &r[l]);
            assert!(e < 1e-4, "{what}: r_{l} rel. error {e}");
        }
        let g = cpu::gradients(&s, &fwd, &r, true);
        for l in 0..s.depth() {
            let e = rel_err(&g_gpu.weights[l], &g.weights[l]);
            assert!(e < 1e-4, "{what}: weight grad {l} rel. error {e}");
        }
    }
}

/// Wide layers make the resident kernel's loops long: on lavapipe, past the driver's budget of
/// loop iterations per invocation (see `shaders/relax_resident.wgsl`). The kernel must then
/// report it, never return a wrong relaxation as if it were right; elsewhere it must be exact.
#[test]
fn resident_kernel_reports_loops_cut_short_or_is_exact() {
    use arelax::engine::RelaxKernel;
    let s = spec(&[16, 1000, 1000, 4], Activation::Tanh, Loss::Mse);
    let (b, steps) = (2, 16);
    let mut opts = EngineOptions::new(b);
    opts.relax_kernel = RelaxKernel::Resident;
    let mut p = problem(&s, opts, Init::FanIn, 21);
    p.engine.ar_gradients(steps).unwrap();
    if let Err(e) = p.engine.check_relaxation() {
        let e = e.to_string();
        assert!(
            e.contains("loops short") && e.contains("tiled kernel"),
            "{e}"
        );
        return;
    }
    let w = Params64::from(&p.params);
    let fwd = cpu::forward(&s, &w, &to64(&p.input), b);
    let out = cpu::output_error(&s, &fwd, &to64(&p.target), Reduction::Sum);
    let mut r = cpu::relax_start(&s, &fwd, &out.g, true);
    for _ in 0..steps {
        r = cpu::relax_step(&s, &w, &fwd, &r, 0.1, true);
    }
    let gpu = p.engine.state().unwrap();
    for l in 1..=s.depth() {
        let e = rel_err(&gpu[l], &r[l]);
        assert!(e < 1e-4, "r_{l} rel. error {e}");
    }
}

#[test]
fn resident_kernel_refuses_what_it_cannot_do() {
    use arelax::engine::{Engine, RelaxKernel};
    // 5000 units for 512 threads: 10 columns' state per thread, over the 8 it may keep.
    let s = spec(&[8, 5000, 4], Activation::Relu, Loss::Mse);
    let mut opts = EngineOptions::new(2);
    opts.relax_kernel = RelaxKernel::Resident;
    let e = Engine::new(ctx(), &s, opts.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("units per thread"), "{e}");
    let s = spec(&[8, 6, 4], Activation::Relu, Loss::Mse);
    opts.resident = "r4-t2048".parse().unwrap();
    let e = Engine::new(ctx(), &s, opts.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("device allows 1 to 512"), "{e}");
    opts.resident = arelax::gpu::resident::ResidentShape {
        rows: Some(3),
        ..Default::default()
    };
    let e = Engine::new(ctx(), &s, opts.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("multiple of 4"), "{e}");
    opts.resident = Default::default();
    let s = spec(&[8, 6, 4], Activation::Relu, Loss::Mse);
    opts.relax_tol = Some(1e-3);
    let e = Engine::new(ctx(), &s, opts).err().unwrap().to_string();
    assert!(e.contains("tiled kernel"), "{e}");
}

/// Equal bit for bit; the first difference otherwise (not two whole vectors).
fn assert_bits_eq(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
        panic!(
            "{what}: element {i} of {} differs: {} against {}",
            a.len(),
            a[i],
            b[i]
        );
    }
}

/// The cooperative kernel (the tiled kernel's steps with a grid barrier between them instead of
/// a dispatch boundary) leaves the tiled kernel's state and gradients bit for bit with the same
/// tile shape, and so the CPU reference's: odd sizes, several tiles per workgroup, step counts
/// made of several chunks, replicas, no derivative.
///
/// With one workgroup the barrier never waits. With two, lavapipe runs them on two threads, but
/// a wait there can spend an invocation's loop budget (see `shaders/relax_cooperative.wgsl`), so
/// the kernel may report that instead; what it must never do is return a different state
/// without an error.
#[test]
fn cooperative_relaxation_equals_the_tiled_kernel_bit_for_bit() {
    use arelax::engine::{Engine, RelaxKernel};
    use arelax::gpu::tile::{TileChoice, TileShape};
    // (widths, batch, replicas, derivative, eta, steps)
    type Case<'a> = (&'a [usize], usize, usize, bool, f32, usize);
    let cases: [Case; 4] = [
        (&ODD, ODD_BATCH, 1, true, 0.1, 7),
        (&ODD, 5, 3, false, 0.3, 13),
        (&[20, 50, 37, 7], 9, 1, true, 0.2, 100),
        (&[12, 40, 30, 20, 4], 6, 2, true, 0.05, 300),
    ];
    for shape in [TileShape::T16, TileShape::T32] {
        for groups in [1, 2] {
            for (widths, b, replicas, deriv, rate, steps) in cases {
                let s = spec(widths, Activation::Tanh, Loss::Mse);
                let mut opts = EngineOptions::new(b);
                opts.tile = TileChoice::Fixed(shape);
                opts.replicas = replicas;
                opts.relax_derivative = deriv;
                opts.relax_rate = rate;
                let run = |kernel: RelaxKernel| {
                    let mut o = opts.clone();
                    o.relax_kernel = kernel;
                    o.cooperative_groups = Some(groups);
                    let mut e = Engine::new(ctx(), &s, o).unwrap();
                    let (input, target) = batch(&s, b * replicas, 77);
                    for r in 0..replicas {
                        e.set_replica_params(r, &Params::init(&s, Init::FanIn, 30 + r as u64))
                            .unwrap();
                    }
                    e.set_batch(&input, &target).unwrap();
                    e.ar_gradients(steps).unwrap();
                    let checked = e.check_relaxation();
                    let grads: Vec<Params> =
                        (0..replicas).map(|r| e.replica_grads(r).unwrap()).collect();
                    (checked, e.state().unwrap(), grads, e.cooperative_size())
                };
                let (_, tiled_r, tiled_g, _) = run(RelaxKernel::Tiled);
                let (checked, coop_r, coop_g, size) = run(RelaxKernel::Cooperative);
                let (g, tiles) = size.expect("the cooperative kernel is in use");
                let what = format!(
                    "{shape} {g} workgroups for {tiles} tiles, {widths:?} B={b}×{replicas} T={steps}"
                );
                assert_eq!(g as usize, groups.min(tiles as usize), "{what}");
                if let Err(e) = checked {
                    let e = e.to_string();
                    assert!(g > 1, "{what}: one workgroup never waits, yet: {e}");
                    assert!(e.contains("gave up") || e.contains("loops short"), "{e}");
                    eprintln!("{what}: reported instead of a result: {e}");
                    continue;
                }
                for l in 1..coop_r.len() {
                    assert_bits_eq(&coop_r[l], &tiled_r[l], &format!("{what}: r_{l}"));
                }
                for (c, t) in coop_g.iter().zip(&tiled_g) {
                    for l in 0..s.depth() {
                        assert_bits_eq(&c.weights[l], &t.weights[l], &format!("{what}: dW_{l}"));
                        assert_bits_eq(&c.biases[l], &t.biases[l], &format!("{what}: db_{l}"));
                    }
                }
            }
        }
    }
}

/// The grid barrier needs every workgroup running at once; when they cannot be (more workgroups
/// than lavapipe has threads), the engine reports an error instead of hanging or returning a
/// wrong relaxation as if it were right.
#[test]
fn a_cooperative_barrier_that_cannot_meet_is_an_error_not_a_hang() {
    use arelax::engine::RelaxKernel;
    use arelax::gpu::tile::{TileChoice, TileShape};
    let s = spec(&[4, 64, 64, 64, 4], Activation::Relu, Loss::Mse);
    let mut opts = EngineOptions::new(128);
    opts.tile = TileChoice::Fixed(TileShape::T16);
    opts.relax_kernel = RelaxKernel::Cooperative;
    opts.cooperative_groups = Some(64);
    let mut p = problem(&s, opts, Init::FanIn, 5);
    assert_eq!(p.engine.cooperative_size(), Some((64, 96)));
    p.engine.ar_gradients(3).unwrap();
    let e = p.engine.check_relaxation().unwrap_err().to_string();
    assert!(
        e.contains("64 workgroups") && e.contains("tiled kernel"),
        "{e}"
    );
}
