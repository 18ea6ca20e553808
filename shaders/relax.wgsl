// One Jacobi relaxation step for every layer in [first, first + count) at once:
//   r_l <- (1 - eta) r_l + eta (r_{l+1} * f'_l) W_l
// which is r_l + eta (-r_l + vjp) written so that eta = 1 gives the vjp exactly (exact backprop
// uses this kernel one layer at a time with eta = 1). Reads r_src, writes r_dst (ping-pong).
// As a product: see relax_operands.wgsl (A = r_{l+1} * f'_l, B = W_l).
// `weights` is W itself, or the backward weights psi of the feedback variants.
//
// Adaptive relaxation (FLAG_ADAPTIVE): each workgroup also reduces max |r_new - r_old| and
// max |r_new| of its tile into per-layer slots of `conv` (atomicMax on the bits of non-negative
// floats, which order like integers, so the result is deterministic); relax_check.wgsl then
// decides whether the batch has converged. Once it has, steps only copy r_src to r_dst, which
// keeps the ping-pong parity the host encoded.

//!include common.wgsl

@group(0) @binding(0) var<uniform> pass_: Pass;
@group(0) @binding(1) var<storage, read> layers: array<Layer>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<storage, read> fprime: array<f32>;
@group(0) @binding(4) var<storage, read> r_src: array<f32>;
@group(0) @binding(5) var<storage, read_write> r_dst: array<f32>;
// [0] converged flag, [1] steps used by this batch, [2] steps used in total,
// [4 + 2l] max |delta r_l| bits, [5 + 2l] max |r_l| bits.
@group(0) @binding(6) var<storage, read_write> conv: array<atomic<u32>>;

var<workgroup> converged: u32;

fn read_state(i: u32) -> f32 {
    return r_src[i];
}

//!include relax_operands.wgsl
//!include gemm_tile.wgsl

@compute @workgroup_size(THREADS)
fn relax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let t = locate_tile(pass_.first, pass_.count, linear_group(wid, nwg));
    if (t.layer >= pass_.first + pass_.count) {
        return;
    }
    let L = layers[t.layer];
    let adaptive = (pass_.flags & FLAG_ADAPTIVE) != 0u;
    if (adaptive) {
        if (lid == 0u) {
            converged = atomicLoad(&conv[0]);
        }
        if (workgroupUniformLoad(&converged) != 0u) {
            for (var i = 0u; i < RM; i++) {
                let m = t.m0 + out_row(lid, i);
                for (var j = 0u; j < RN; j++) {
                    let n = t.n0 + out_col(lid, j);
                    if (owns_output(lid) && m < t.m && n < t.n) {
                        let idx = L.r_in + m * L.n_in + n;
                        r_dst[idx] = r_src[idx];
                    }
                }
            }
            return;
        }
    }
    let acc = gemm_tile(t, lid);
    let eta = pass_.rate;
    var max_delta = 0.0;
    var max_abs = 0.0;
//!unroll i < RM
    {
        let m = t.m0 + out_row(lid, {i});
//!unroll j < RN
        {
            let n = t.n0 + out_col(lid, {j});
            if (owns_output(lid) && m < t.m && n < t.n) {
                let idx = L.r_in + m * L.n_in + n;
                let old = r_src[idx];
                let next = (1.0 - eta) * old + eta * acc[{i}][{j} / 4u][{j} % 4u];
                r_dst[idx] = next;
                max_delta = max(max_delta, abs(next - old));
                max_abs = max(max_abs, abs(next));
            }
        }
//!end
    }
//!end
    if (adaptive) {
        let m = workgroup_max2(lid, max_delta, max_abs);
        if (lid == 0u) {
            atomicMax(&conv[4u + 2u * t.layer], bitcast<u32>(m.x));
            atomicMax(&conv[5u + 2u * t.layer], bitcast<u32>(m.y));
        }
    }
}
