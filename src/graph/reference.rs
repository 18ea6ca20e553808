//! The float64 CPU truth for graphs: forward, output error, every node kind's vector–Jacobian
//! product, one Jacobi relaxation step, exact backprop and the local gradients. The GPU kernels
//! are tested against these; the formulas and conventions are those of [`crate::reference`]
//! (the relaxation written `(1 − η) r + η v`, `f'` at the pre-activation including the bias).

use super::{Graph, GraphParams, NodeKind, Shape};
use crate::model::Reduction;
use crate::reference::OutputError;

/// Parameters (or gradients, or feedback weights ψ) in float64, per node like [`GraphParams`]:
/// the same container as the MLP reference's, indexed by node instead of layer.
pub use crate::reference::Params64 as GraphParams64;

impl From<&GraphParams> for GraphParams64 {
    fn from(p: &GraphParams) -> Self {
        Self {
            weights: crate::reference::widen(&p.weights),
            biases: crate::reference::widen(&p.biases),
        }
    }
}

/// What the forward pass keeps, per node, each `[B, size]` row-major.
#[derive(Clone, Debug)]
pub struct GForward {
    pub batch: usize,
    /// Activities; `x[0]` is the input.
    pub x: Vec<Vec<f64>>,
    /// `f'(a)` for dense and conv2d nodes, empty for the others.
    pub fp: Vec<Vec<f64>>,
    /// For max-pool nodes: for each output element `(b, c, oh, ow)`, the index within the input
    /// sample (`c*H*W + ih*W + iw`) of the chosen maximum. Empty for the others.
    pub argmax: Vec<Vec<usize>>,
}

/// Calls `f(o, t, i)` for every window position `o = oh*OW + ow` of a `k×k` window sliding with
/// stride `s` over one zero-padded (by `p`) `H×W` plane, every tap `t = kh*k + kw` in row-major
/// window order, and the input position `i = ih*W + iw` the tap reads. Taps in the padding are
/// skipped, which is what zero padding means for the forward pass and every derivative.
fn for_each_tap(
    inp: Shape,
    out: Shape,
    k: usize,
    s: usize,
    p: usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    for oh in 0..out.h {
        for ow in 0..out.w {
            let o = oh * out.w + ow;
            for kh in 0..k {
                let Some(ih) = (oh * s + kh).checked_sub(p).filter(|&v| v < inp.h) else {
                    continue;
                };
                for kw in 0..k {
                    let Some(iw) = (ow * s + kw).checked_sub(p).filter(|&v| v < inp.w) else {
                        continue;
                    };
                    f(o, kh * k + kw, ih * inp.w + iw);
                }
            }
        }
    }
}

/// The forward pass of every node in topological order. `input` is `[batch, input_size]`.
pub fn forward(g: &Graph, p: &GraphParams64, input: &[f64], batch: usize) -> GForward {
    assert_eq!(
        input.len(),
        batch * g.input_size(),
        "input must be [batch, input_size]"
    );
    let n = g.nodes.len();
    let mut x = vec![input.to_vec()];
    let mut fp = vec![Vec::new()];
    let mut argmax = vec![Vec::new()];
    for i in 1..n {
        let node = &g.nodes[i];
        let out = node.shape;
        let osz = out.size();
        let mut xo = vec![0.0; batch * osz];
        let mut fo = Vec::new();
        let mut am = Vec::new();
        // Single-input kinds read their one parent; add and concat read them all below.
        let parent = node.inputs[0];
        let ins = g.nodes[parent].shape;
        let isz = ins.size();
        let xin = &x[parent];
        match node.kind {
            NodeKind::Input => unreachable!("only nodes[0] is an input"),
            NodeKind::Dense { units, activation } => {
                fo = vec![0.0; batch * units];
                let (w, bias) = (&p.weights[i], &p.biases[i]);
                for b in 0..batch {
                    let xb = &xin[b * isz..(b + 1) * isz];
                    for o in 0..units {
                        let row = &w[o * isz..(o + 1) * isz];
                        let a = bias[o] + row.iter().zip(xb).map(|(w, x)| w * x).sum::<f64>();
                        xo[b * units + o] = activation.f(a);
                        fo[b * units + o] = activation.df(a);
                    }
                }
            }
            NodeKind::Conv2d {
                channels,
                kernel,
                stride,
                padding,
                activation,
            } => {
                let (w, bias) = (&p.weights[i], &p.biases[i]);
                let (pin, pout, kk) = (ins.h * ins.w, out.h * out.w, kernel * kernel);
                // Pre-activations, starting from the bias of each output channel.
                let mut a = vec![0.0; batch * osz];
                for b in 0..batch {
                    for co in 0..channels {
                        let ab = &mut a[(b * channels + co) * pout..][..pout];
                        ab.fill(bias[co]);
                        for ci in 0..ins.c {
                            let xb = &xin[(b * ins.c + ci) * pin..][..pin];
                            let wk = &w[(co * ins.c + ci) * kk..][..kk];
                            for_each_tap(ins, out, kernel, stride, padding, |o, t, ip| {
                                ab[o] += wk[t] * xb[ip];
                            });
                        }
                    }
                }
                fo = a.iter().map(|&v| activation.df(v)).collect();
                xo = a.iter().map(|&v| activation.f(v)).collect();
            }
            NodeKind::MaxPool { kernel, stride } => {
                am = vec![0; batch * osz];
                let (pin, pout) = (ins.h * ins.w, out.h * out.w);
                for b in 0..batch {
                    for c in 0..ins.c {
                        let xb = &xin[(b * ins.c + c) * pin..][..pin];
                        // Strictly greater replaces, so ties keep the first in window order.
                        let mut best: Vec<Option<(f64, usize)>> = vec![None; pout];
                        for_each_tap(ins, out, kernel, stride, 0, |o, _, ip| {
                            if best[o].is_none_or(|(v, _)| xb[ip] > v) {
                                best[o] = Some((xb[ip], ip));
                            }
                        });
                        for (o, m) in best.into_iter().enumerate() {
                            let (v, ip) = m.expect("a pooling window is never empty");
                            xo[(b * ins.c + c) * pout + o] = v;
                            am[(b * ins.c + c) * pout + o] = c * pin + ip;
                        }
                    }
                }
            }
            NodeKind::AvgPool { kernel, stride } => {
                let (pin, pout) = (ins.h * ins.w, out.h * out.w);
                let scale = 1.0 / (kernel * kernel) as f64;
                for b in 0..batch {
                    for c in 0..ins.c {
                        let xb = &xin[(b * ins.c + c) * pin..][..pin];
                        let ob = &mut xo[(b * ins.c + c) * pout..][..pout];
                        for_each_tap(ins, out, kernel, stride, 0, |o, _, ip| ob[o] += xb[ip]);
                        for v in ob.iter_mut() {
                            *v *= scale;
                        }
                    }
                }
            }
            NodeKind::Flatten => xo.copy_from_slice(xin),
            NodeKind::Add => {
                for &q in &node.inputs {
                    for (o, v) in xo.iter_mut().zip(&x[q]) {
                        *o += v;
                    }
                }
            }
            NodeKind::Concat => {
                // Channels are outermost, so joining channels joins each sample's blocks.
                let mut offset = 0;
                for &q in &node.inputs {
                    let qs = g.nodes[q].shape.size();
                    for b in 0..batch {
                        xo[b * osz + offset..][..qs].copy_from_slice(&x[q][b * qs..][..qs]);
                    }
                    offset += qs;
                }
            }
        }
        x.push(xo);
        fp.push(fo);
        argmax.push(am);
    }
    GForward {
        batch,
        x,
        fp,
        argmax,
    }
}

/// The loss, the clamp `g = dLoss/dx_output` (scaled by the reduction) and per-sample
/// correctness, with the formulas of [`crate::reference::output_error`] applied to the output
/// node: mse `Σ(x − y)²`, `g = 2(x − y)`; ce on the logits, `g = softmax(x) − y`.
pub fn output_error(g: &Graph, f: &GForward, target: &[f64], reduction: Reduction) -> OutputError {
    crate::reference::loss_on_outputs(g.loss, &f.x[g.output], target, f.batch, reduction)
}

/// Relaxation state: `r` per node; `r[0]` (the input, which does not relax) is empty.
pub type State = Vec<Vec<f64>>;

/// `r ⊙ f'` of a dense or conv2d node, or `r` itself when the derivative is dropped.
fn error_signal(f: &GForward, r: &[f64], i: usize, deriv: bool) -> Vec<f64> {
    if deriv {
        r.iter().zip(&f.fp[i]).map(|(r, d)| r * d).collect()
    } else {
        r.to_vec()
    }
}

/// The contribution of child `c` to its input slot `k` (the parent is `g.nodes[c].inputs[k]`)
/// given the child's state `r_c`, with the Jacobian frozen at the forward pass; `[B, parent
/// size]`. Dense and conv2d push `r_c ⊙ f'_c` (or `r_c` when `!deriv`) back through `w` (the
/// forward weights, or the feedback weights ψ): dense `e·W`, conv2d the transposed convolution
/// with the same stride and padding. Max-pool routes `r_c` to the argmax positions and avg-pool
/// spreads `r_c/(k*k)` over each window (both summing where windows overlap); flatten and add pass
/// `r_c` through; concat takes the channels that came from input `k`.
pub fn vjp(
    g: &Graph,
    w: &GraphParams64,
    f: &GForward,
    r_c: &[f64],
    c: usize,
    k: usize,
    deriv: bool,
) -> Vec<f64> {
    let node = &g.nodes[c];
    let parent = node.inputs[k];
    let ins = g.nodes[parent].shape;
    let out = node.shape;
    let (isz, osz) = (ins.size(), out.size());
    let batch = f.batch;
    assert_eq!(
        r_c.len(),
        batch * osz,
        "r_c must be [batch, size of node {c}]"
    );
    let mut v = vec![0.0; batch * isz];
    match node.kind {
        NodeKind::Input => unreachable!("the input node has no inputs"),
        NodeKind::Dense { units, .. } => {
            let e = error_signal(f, r_c, c, deriv);
            let wc = &w.weights[c];
            for b in 0..batch {
                let vb = &mut v[b * isz..(b + 1) * isz];
                for o in 0..units {
                    let eo = e[b * units + o];
                    for (vi, wi) in vb.iter_mut().zip(&wc[o * isz..(o + 1) * isz]) {
                        *vi += eo * wi;
                    }
                }
            }
        }
        NodeKind::Conv2d {
            channels,
            kernel,
            stride,
            padding,
            ..
        } => {
            let e = error_signal(f, r_c, c, deriv);
            let wc = &w.weights[c];
            let (pin, pout, kk) = (ins.h * ins.w, out.h * out.w, kernel * kernel);
            for b in 0..batch {
                for co in 0..channels {
                    let eb = &e[(b * channels + co) * pout..][..pout];
                    for ci in 0..ins.c {
                        let vb = &mut v[(b * ins.c + ci) * pin..][..pin];
                        let wk = &wc[(co * ins.c + ci) * kk..][..kk];
                        for_each_tap(ins, out, kernel, stride, padding, |o, t, ip| {
                            vb[ip] += eb[o] * wk[t];
                        });
                    }
                }
            }
        }
        NodeKind::MaxPool { .. } => {
            for b in 0..batch {
                for j in 0..osz {
                    v[b * isz + f.argmax[c][b * osz + j]] += r_c[b * osz + j];
                }
            }
        }
        NodeKind::AvgPool { kernel, stride } => {
            let (pin, pout) = (ins.h * ins.w, out.h * out.w);
            let scale = 1.0 / (kernel * kernel) as f64;
            for b in 0..batch {
                for ch in 0..ins.c {
                    let rb = &r_c[(b * ins.c + ch) * pout..][..pout];
                    let vb = &mut v[(b * ins.c + ch) * pin..][..pin];
                    for_each_tap(ins, out, kernel, stride, 0, |o, _, ip| {
                        vb[ip] += rb[o] * scale
                    });
                }
            }
        }
        NodeKind::Flatten | NodeKind::Add => v.copy_from_slice(r_c),
        NodeKind::Concat => {
            let offset: usize = node.inputs[..k]
                .iter()
                .map(|&q| g.nodes[q].shape.size())
                .sum();
            for b in 0..batch {
                v[b * isz..][..isz].copy_from_slice(&r_c[b * osz + offset..][..isz]);
            }
        }
    }
    v
}

/// `Σ` over the children `c` of node `i` of `vjp(c, k)` with `inputs[k] == i`, each child's state
/// taken from `r`: the target every hidden node relaxes towards, and backprop's `dLoss/dx_i`
/// once the children's states are exact.
pub fn children_vjp(
    g: &Graph,
    w: &GraphParams64,
    f: &GForward,
    r: &State,
    i: usize,
    deriv: bool,
) -> Vec<f64> {
    let mut v = vec![0.0; f.batch * g.nodes[i].shape.size()];
    for c in g.children(i) {
        // Validation forbids duplicate inputs, so the slot is unique.
        let k = g.nodes[c]
            .inputs
            .iter()
            .position(|&q| q == i)
            .expect("a child lists its parent");
        for (a, d) in v.iter_mut().zip(vjp(g, w, f, &r[c], c, k, deriv)) {
            *a += d;
        }
    }
    v
}

/// One Jacobi step for every node except the input and the output, all from the previous state:
/// `r_i ← (1 − η) r_i + η Σ_c vjp(c)`. The output's `r` stays clamped. `w` is W, or ψ.
pub fn relax_step(
    g: &Graph,
    w: &GraphParams64,
    f: &GForward,
    r: &State,
    rate: f64,
    deriv: bool,
) -> State {
    let mut next = r.clone();
    for i in 1..g.nodes.len() {
        if i == g.output {
            continue;
        }
        let v = children_vjp(g, w, f, r, i, deriv);
        for (dst, (old, new)) in next[i].iter_mut().zip(r[i].iter().zip(&v)) {
            *dst = (1.0 - rate) * old + rate * new;
        }
    }
    next
}

/// The start of relaxation: hidden nodes at their forward values (or zero), the output clamped
/// to `g_out`, the input empty.
pub fn relax_start(g: &Graph, f: &GForward, g_out: &[f64], from_forward: bool) -> State {
    let mut r: State = vec![Vec::new()];
    for i in 1..g.nodes.len() {
        r.push(if i == g.output {
            g_out.to_vec()
        } else if from_forward {
            f.x[i].clone()
        } else {
            vec![0.0; f.x[i].len()]
        });
    }
    r
}

/// Exact backprop: `r_i = dLoss/dx_i` for every node but the input (left empty), in reverse
/// topological order so that every child is final before its parents read it.
pub fn backprop(g: &Graph, p: &GraphParams64, f: &GForward, g_out: &[f64]) -> State {
    fixed_point(g, p, f, g_out, true)
}

/// The fixed point of the relaxation with the Jacobians frozen: one sweep in reverse topological
/// order, each node the sum of its children's VJPs through `w` (W, or ψ), with or without `f'`.
/// With W and `f'` it is [`backprop`].
pub fn fixed_point(
    g: &Graph,
    w: &GraphParams64,
    f: &GForward,
    g_out: &[f64],
    deriv: bool,
) -> State {
    let mut r: State = vec![Vec::new(); g.nodes.len()];
    r[g.output] = g_out.to_vec();
    for i in (1..g.nodes.len()).rev() {
        if i != g.output {
            r[i] = children_vjp(g, w, f, &r, i, deriv);
        }
    }
    r
}

/// The local gradients of dense and conv2d nodes from their own state `r_i` (`e = r_i ⊙ f'_i`,
/// or `r_i` when `!update_derivative`) and their stored input `x̄`. Dense: `G = eᵀ x̄` over the
/// flattened input, `[units, in]`; conv2d: `G[co,ci,kh,kw] = Σ_{b,oh,ow} e[b,co,oh,ow] ·
/// x̄[b,ci,oh·s+kh−p,ow·s+kw−p]` (zero outside); biases sum `e` over the batch (and positions).
/// Empty for the other nodes.
pub fn gradients(g: &Graph, f: &GForward, r: &State, update_derivative: bool) -> GraphParams64 {
    let mut weights = Vec::new();
    let mut biases = Vec::new();
    for (i, node) in g.nodes.iter().enumerate() {
        let (mut gw, mut gb) = (Vec::new(), Vec::new());
        if node.kind.has_params() {
            let parent = node.inputs[0];
            let ins = g.nodes[parent].shape;
            let xin = &f.x[parent];
            let e = error_signal(f, &r[i], i, update_derivative);
            match node.kind {
                NodeKind::Dense { units, .. } => {
                    let isz = ins.size();
                    gw = vec![0.0; units * isz];
                    gb = vec![0.0; units];
                    for b in 0..f.batch {
                        let xb = &xin[b * isz..(b + 1) * isz];
                        for o in 0..units {
                            let eo = e[b * units + o];
                            gb[o] += eo;
                            for (gi, xi) in gw[o * isz..(o + 1) * isz].iter_mut().zip(xb) {
                                *gi += eo * xi;
                            }
                        }
                    }
                }
                NodeKind::Conv2d {
                    channels,
                    kernel,
                    stride,
                    padding,
                    ..
                } => {
                    let out = node.shape;
                    let (pin, pout, kk) = (ins.h * ins.w, out.h * out.w, kernel * kernel);
                    gw = vec![0.0; channels * ins.c * kk];
                    gb = vec![0.0; channels];
                    for b in 0..f.batch {
                        for co in 0..channels {
                            let eb = &e[(b * channels + co) * pout..][..pout];
                            gb[co] += eb.iter().sum::<f64>();
                            for ci in 0..ins.c {
                                let xb = &xin[(b * ins.c + ci) * pin..][..pin];
                                let gk = &mut gw[(co * ins.c + ci) * kk..][..kk];
                                for_each_tap(ins, out, kernel, stride, padding, |o, t, ip| {
                                    gk[t] += eb[o] * xb[ip];
                                });
                            }
                        }
                    }
                }
                _ => unreachable!("has_params covers dense and conv2d"),
            }
        }
        weights.push(gw);
        biases.push(gb);
    }
    GraphParams64 { weights, biases }
}

/// `p ← p − lr (g + decay·p)`, elementwise (the SGD kernel's formula).
pub fn sgd(p: &mut GraphParams64, grad: &GraphParams64, lr: f64, decay: f64) {
    let pairs = p
        .weights
        .iter_mut()
        .zip(&grad.weights)
        .chain(p.biases.iter_mut().zip(&grad.biases));
    for (pv, gv) in pairs {
        for (x, d) in pv.iter_mut().zip(gv) {
            *x -= lr * (d + decay * *x);
        }
    }
}

/// The adaptive stop's criterion over the relaxing nodes (all but the input and the output):
/// `max_i max|a_i − b_i| / max|a_i|`, with `a` the newer state.
pub fn relative_change(g: &Graph, a: &State, b: &State) -> f64 {
    (1..g.nodes.len())
        .filter(|&i| i != g.output)
        .map(|i| crate::reference::tensor_change(&a[i], &b[i]))
        .fold(0.0, f64::max)
}
