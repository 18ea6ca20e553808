//! The float64 CPU twin of every kernel: forward, output error, one Jacobi relaxation step,
//! exact backprop, the local gradients and SGD. Tests hold the GPU to these; they follow the same
//! conventions and the same formulas (e.g. the relaxation as `(1 − η) r + η v`).

// Index loops here mirror the equations term by term, which is the point of a reference.
#![allow(clippy::needless_range_loop)]

use crate::model::{Loss, ModelSpec, Params, Reduction};

/// Parameters (or gradients, or feedback weights) in float64, `weights[l]` is [n_{l+1}, n_l].
#[derive(Clone, Debug, PartialEq)]
pub struct Params64 {
    pub weights: Vec<Vec<f64>>,
    pub biases: Vec<Vec<f64>>,
}

/// f32 tensors to f64.
pub fn widen(v: &[Vec<f32>]) -> Vec<Vec<f64>> {
    v.iter()
        .map(|l| l.iter().map(|&x| x as f64).collect())
        .collect()
}

impl From<&Params> for Params64 {
    fn from(p: &Params) -> Self {
        Self {
            weights: widen(&p.weights),
            biases: widen(&p.biases),
        }
    }
}

/// What the forward pass keeps: activities x_0 … x_L and derivatives f'_l(a_l), each [B, n].
#[derive(Clone, Debug)]
pub struct Forward {
    pub batch: usize,
    pub x: Vec<Vec<f64>>,
    pub fp: Vec<Vec<f64>>,
}

/// a_l = x_l W_lᵀ + b_l, x_{l+1} = f_l(a_l).
pub fn forward(spec: &ModelSpec, p: &Params64, input: &[f64], batch: usize) -> Forward {
    let mut x = vec![input.to_vec()];
    let mut fp = Vec::new();
    for l in 0..spec.depth() {
        let (n_in, n_out) = (spec.widths[l], spec.widths[l + 1]);
        let act = spec.activation(l);
        let mut xo = vec![0.0; batch * n_out];
        let mut fo = vec![0.0; batch * n_out];
        for b in 0..batch {
            for o in 0..n_out {
                let mut a = p.biases[l][o];
                for i in 0..n_in {
                    a += x[l][b * n_in + i] * p.weights[l][o * n_in + i];
                }
                xo[b * n_out + o] = act.f(a);
                fo[b * n_out + o] = act.df(a);
            }
        }
        x.push(xo);
        fp.push(fo);
    }
    Forward { batch, x, fp }
}

/// The output of the loss: per-sample loss, the clamp g = dLoss/dx_L (scaled by the reduction),
/// and whether each sample's argmax matches the target's.
#[derive(Clone, Debug)]
pub struct OutputError {
    pub loss: Vec<f64>,
    pub g: Vec<f64>,
    pub correct: Vec<bool>,
}

pub fn output_error(
    spec: &ModelSpec,
    fwd: &Forward,
    target: &[f64],
    reduction: Reduction,
) -> OutputError {
    let out = &fwd.x[spec.depth()];
    loss_on_outputs(spec.loss, out, target, fwd.batch, reduction)
}

/// The loss formulas on output activities `out` [B, n] (shared by the MLP and graph references):
/// mse `Σ(x − y)²`, `g = 2(x − y)`; ce on the logits, `g = softmax(x) − y`; g scaled by the
/// reduction.
pub fn loss_on_outputs(
    kind: Loss,
    out: &[f64],
    target: &[f64],
    batch: usize,
    reduction: Reduction,
) -> OutputError {
    let n = out.len() / batch.max(1);
    let scale = reduction.scale(batch);
    let mut loss = vec![0.0; batch];
    let mut g = vec![0.0; batch * n];
    let mut correct = vec![false; batch];
    for b in 0..batch {
        let row = &out[b * n..(b + 1) * n];
        let y = &target[b * n..(b + 1) * n];
        correct[b] = argmax(row) == argmax(y);
        match kind {
            Loss::Mse => {
                for j in 0..n {
                    let d = row[j] - y[j];
                    loss[b] += d * d;
                    g[b * n + j] = 2.0 * d * scale;
                }
            }
            Loss::Ce => {
                let top = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let log_z = row.iter().map(|v| (v - top).exp()).sum::<f64>().ln();
                for j in 0..n {
                    let lp = row[j] - top - log_z;
                    loss[b] -= y[j] * lp;
                    g[b * n + j] = (lp.exp() - y[j]) * scale;
                }
            }
        }
    }
    OutputError { loss, g, correct }
}

/// First index of the largest value (ties go to the lower index, as in the kernel).
pub fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Relaxation state r_0 … r_L; r_0 is unused (the input does not relax) and kept empty.
pub type State = Vec<Vec<f64>>;

/// The start of relaxation: hidden layers at their forward values (or zero), the top clamped to g.
pub fn relax_start(spec: &ModelSpec, fwd: &Forward, g: &[f64], from_forward: bool) -> State {
    let depth = spec.depth();
    let mut r = vec![Vec::new()];
    for l in 1..depth {
        r.push(if from_forward {
            fwd.x[l].clone()
        } else {
            vec![0.0; fwd.x[l].len()]
        });
    }
    r.push(g.to_vec());
    r
}

/// The vector–Jacobian product of layer l: (r_{l+1} ⊙ f'_l) W_l, with W_l from `w`.
fn vjp(
    spec: &ModelSpec,
    w: &Params64,
    fp: &[f64],
    batch: usize,
    r_next: &[f64],
    l: usize,
    deriv: bool,
) -> Vec<f64> {
    let (n_in, n_out) = (spec.widths[l], spec.widths[l + 1]);
    let mut v = vec![0.0; batch * n_in];
    for b in 0..batch {
        for o in 0..n_out {
            let mut e = r_next[b * n_out + o];
            if deriv {
                e *= fp[b * n_out + o];
            }
            if e == 0.0 {
                continue;
            }
            for i in 0..n_in {
                v[b * n_in + i] += e * w.weights[l][o * n_in + i];
            }
        }
    }
    v
}

/// One Jacobi step for all hidden layers from the previous state:
/// r_l ← (1 − η) r_l + η (r_{l+1} ⊙ f'_l) W_l. `w` is W, or the feedback weights ψ.
pub fn relax_step(
    spec: &ModelSpec,
    w: &Params64,
    fwd: &Forward,
    r: &State,
    rate: f64,
    relax_derivative: bool,
) -> State {
    relax_step_fp(spec, w, &fwd.fp, fwd.batch, r, rate, relax_derivative)
}

/// [`relax_step`] with the derivatives `fp` given (frozen, or [`current_derivatives`]).
pub fn relax_step_fp(
    spec: &ModelSpec,
    w: &Params64,
    fp: &[Vec<f64>],
    batch: usize,
    r: &State,
    rate: f64,
    relax_derivative: bool,
) -> State {
    let mut next = r.clone();
    for l in 1..spec.depth() {
        let v = vjp(spec, w, &fp[l], batch, &r[l + 1], l, relax_derivative);
        for (dst, (old, new)) in next[l].iter_mut().zip(r[l].iter().zip(&v)) {
            *dst = (1.0 - rate) * old + rate * new;
        }
    }
    next
}

/// f' at the current state (no frozen forward pass): layer 0 keeps the forward derivative (its
/// input never relaxes); layer l ≥ 1 uses a_l = r_l W_lᵀ + b_l with the forward weights `p`.
pub fn current_derivatives(
    spec: &ModelSpec,
    p: &Params64,
    fwd: &Forward,
    r: &State,
) -> Vec<Vec<f64>> {
    let mut fp = vec![fwd.fp[0].clone()];
    for l in 1..spec.depth() {
        let (n_in, n_out) = (spec.widths[l], spec.widths[l + 1]);
        let act = spec.activation(l);
        let mut out = vec![0.0; fwd.batch * n_out];
        for b in 0..fwd.batch {
            for o in 0..n_out {
                let mut a = p.biases[l][o];
                for i in 0..n_in {
                    a += r[l][b * n_in + i] * p.weights[l][o * n_in + i];
                }
                out[b * n_out + o] = act.df(a);
            }
        }
        fp.push(out);
    }
    fp
}

/// Exact backprop: r_l = dLoss/dx_l for every layer, top-down.
pub fn backprop(spec: &ModelSpec, p: &Params64, fwd: &Forward, g: &[f64]) -> State {
    let depth = spec.depth();
    let mut r: State = vec![Vec::new(); depth + 1];
    r[depth] = g.to_vec();
    for l in (1..depth).rev() {
        r[l] = vjp(spec, p, &fwd.fp[l], fwd.batch, &r[l + 1], l, true);
    }
    r
}

/// The local gradients G_l = (r_{l+1} ⊙ f'_l)ᵀ x_l and g_l = Σ_b r_{l+1} ⊙ f'_l.
pub fn gradients(spec: &ModelSpec, fwd: &Forward, r: &State, update_derivative: bool) -> Params64 {
    gradients_from(spec, &fwd.x, &fwd.fp, fwd.batch, r, update_derivative)
}

/// [`gradients`] with the pre-synaptic activities `x` and derivatives `fp` given (frozen, or
/// the relaxed state and [`current_derivatives`]).
pub fn gradients_from(
    spec: &ModelSpec,
    x: &[Vec<f64>],
    fp: &[Vec<f64>],
    batch: usize,
    r: &State,
    update_derivative: bool,
) -> Params64 {
    let mut weights = Vec::new();
    let mut biases = Vec::new();
    for l in 0..spec.depth() {
        let (n_in, n_out) = (spec.widths[l], spec.widths[l + 1]);
        let mut gw = vec![0.0; n_out * n_in];
        let mut gb = vec![0.0; n_out];
        for b in 0..batch {
            for o in 0..n_out {
                let mut e = r[l + 1][b * n_out + o];
                if update_derivative {
                    e *= fp[l][b * n_out + o];
                }
                gb[o] += e;
                for i in 0..n_in {
                    gw[o * n_in + i] += e * x[l][b * n_in + i];
                }
            }
        }
        weights.push(gw);
        biases.push(gb);
    }
    Params64 { weights, biases }
}

/// p ← p − lr (g + decay p), elementwise.
pub fn sgd(p: &mut Params64, g: &Params64, lr: f64, decay: f64) {
    let pairs = p
        .weights
        .iter_mut()
        .zip(&g.weights)
        .chain(p.biases.iter_mut().zip(&g.biases));
    for (pv, gv) in pairs {
        for (x, d) in pv.iter_mut().zip(gv) {
            *x -= lr * (d + decay * *x);
        }
    }
}

/// One sweep step (the authors' schedule): layers top-down, in place, so layer l already sees
/// the new r_{l+1}.
pub fn relax_sweep_step(
    spec: &ModelSpec,
    w: &Params64,
    fwd: &Forward,
    r: &State,
    rate: f64,
    relax_derivative: bool,
) -> State {
    let mut next = r.clone();
    for l in (1..spec.depth()).rev() {
        let v = vjp(
            spec,
            w,
            &fwd.fp[l],
            fwd.batch,
            &next[l + 1],
            l,
            relax_derivative,
        );
        for (dst, new) in next[l].iter_mut().zip(&v) {
            *dst = (1.0 - rate) * *dst + rate * new;
        }
    }
    next
}

/// max over hidden layers of max|a_l − b_l| / max|a_l| (the adaptive relaxation's criterion,
/// with `a` the newer state).
pub fn relative_change(a: &State, b: &State) -> f64 {
    (1..a.len().saturating_sub(1))
        .map(|l| tensor_change(&a[l], &b[l]))
        .fold(0.0, f64::max)
}

/// max|a − b| / max|a| for one tensor (1 when a is zero but b is not).
pub fn tensor_change(a: &[f64], b: &[f64]) -> f64 {
    let delta = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let size = a.iter().map(|x| x.abs()).fold(0.0, f64::max);
    if size > 0.0 {
        delta / size
    } else if delta > 0.0 {
        1.0
    } else {
        0.0
    }
}
