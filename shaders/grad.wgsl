// Local weight and bias gradients for every layer in [first, first + count) at once:
//   G_l = (r_{l+1} * f'_l)^T x_l   [n_out, n_in],   g_l = sum over the batch of (r_{l+1} * f'_l)
// Pre-synaptic: the frozen forward activity x_l. Post-synaptic: the relaxed r_{l+1}.
// As a product: A(m, k) = e[k, m] with e = r_{l+1} * f'_l, B = [x_l | 1] [B, n_in + 1];
// M = n_out, N = n_in + 1, K = B. The column of ones makes the bias gradient the product's last
// output column, so it comes from the same tiles as G (split over the batch like them) instead
// of a serial sum over the batch per unit.
//
// Split (Pass.split = S > 1): K = B is long and the output small, so few workgroups would each
// walk all of K. Then workgroup g computes K chunk c = g % S of tile g / S and writes its partial
// sums c * part_len floats on (`grads` is then the partials buffer); grad_sum.wgsl adds the S
// chunks in order.
//
// SGD (entry param_grad_sgd, unsplit only; a split product's SGD is grad_sum's): each gradient,
// as it is written, also takes its parameter one step, W <- W - lr G (Pass.rate is the lr), and
// psi the same with decay Pass.decay when FLAG_SGD_FEEDBACK (learned feedback). Nothing in this
// dispatch reads W or psi, so a training step needs no dispatch of its own for the update.

//!include common.wgsl

@group(0) @binding(0) var<uniform> pass_: Pass;
@group(0) @binding(1) var<storage, read> layers: array<Layer>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> fprime: array<f32>;
@group(0) @binding(4) var<storage, read> r: array<f32>;
@group(0) @binding(5) var<storage, read_write> grads: array<f32>;
@group(0) @binding(6) var<storage, read_write> params: array<f32>;
@group(0) @binding(7) var<storage, read_write> feedback: array<f32>;

const A_K_CONTIGUOUS: bool = false;
const B_K_CONTIGUOUS: bool = false;

fn dims(l: u32) -> vec3<u32> {
    return vec3<u32>(layers[l].n_out, layers[l].n_in + 1u, pass_.batch);
}

// The post-synaptic signal e[b, o] = r_{l+1}[b, o] * f'_l[b, o] (or r alone without derivative).
fn post(l: u32, b: u32, o: u32) -> f32 {
    let i = b * layers[l].n_out + o;
    let v = r[layers[l].r_out + i];
    if ((pass_.flags & FLAG_NO_UPDATE_DERIV) != 0u) {
        return v;
    }
    return v * fprime[layers[l].fp + i];
}

fn load_a(l: u32, m: u32, k: u32) -> f32 {
    return post(l, k, m);
}

fn load_b(l: u32, k: u32, n: u32) -> f32 {
    let n_in = layers[l].n_in;
    if (n == n_in) {
        return 1.0;
    }
    return x[layers[l].x_in + k * n_in + n];
}

//!include gemm_tile.wgsl

// A tile of the gradients; with `sgd` (a constant at each call, so the entry that passes false
// keeps no trace of the update) each also takes its parameter's SGD step.
fn grad_tile(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, sgd: bool) {
    let split = max(pass_.split, 1u);
    let wg = linear_group(wid, nwg);
    var t = locate_tile(pass_.first, pass_.count, wg / split);
    if (t.layer >= pass_.first + pass_.count) {
        return;
    }
    // K chunk g % split: whole rounds of the K groups' slices (the last chunks may be empty).
    let round = KT * KS;
    let chunk = ((t.k + round - 1u) / round + split - 1u) / split * round;
    t.kb = (wg % split) * chunk;
    t.k = min(t.k, t.kb + chunk);
    let out = (wg % split) * pass_.part_len;
    let acc = gemm_tile(t, lid);
    let L = layers[t.layer];
//!unroll i < RM
    {
        let m = t.m0 + out_row(lid, {i});
//!unroll j < RN
        {
            let n = t.n0 + out_col(lid, {j});
            if (owns_output(lid) && m < t.m && n < t.n) {
                let g = acc[{i}][{j} / 4u][{j} % 4u];
                let at = select(L.b + m, L.w + m * L.n_in + n, n < L.n_in);
                grads[out + at] = g;
                if (sgd) {
                    params[at] = sgd_step(params[at], g, pass_.rate, 0.0);
                    if ((pass_.flags & FLAG_SGD_FEEDBACK) != 0u) {
                        feedback[at] = sgd_step(feedback[at], g, pass_.rate, pass_.decay);
                    }
                }
            }
        }
//!end
    }
//!end
}

@compute @workgroup_size(THREADS)
fn param_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    grad_tile(wid, nwg, lid, false);
}

@compute @workgroup_size(THREADS)
fn param_grad_sgd(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    grad_tile(wid, nwg, lid, true);
}
