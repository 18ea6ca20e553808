// The VJP of every dense edge at once (a tiled product per edge): for child c with parent p,
//   slot = (r_c * f'_c) W_c   [B, n_in]   (r_c alone without the derivative)
// written into the edge's slot; combine.wgsl then sums a node's slots into its relaxation.
// As a product: A = r_c * f'_c [B, units], B = W_c [units, n_in]; M = B, N = n_in, K = units.

//!include common.wgsl
//!include graph_common.wgsl

@group(0) @binding(0) var<uniform> pass_: Pass;
@group(0) @binding(1) var<storage, read> ops: array<Op>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<storage, read> fprime: array<f32>;
@group(0) @binding(4) var<storage, read> r_src: array<f32>;
@group(0) @binding(5) var<storage, read_write> slots: array<f32>;

const A_K_CONTIGUOUS: bool = true;
const B_K_CONTIGUOUS: bool = false;

fn dims(l: u32) -> vec3<u32> {
    return vec3<u32>(pass_.batch, ops[l].c_in, ops[l].c_out);
}

fn load_a(l: u32, m: u32, k: u32) -> f32 {
    let i = m * ops[l].c_out + k;
    let r = r_src[ops[l].r_self + i];
    if ((pass_.flags & FLAG_NO_RELAX_DERIV) != 0u) {
        return r;
    }
    return r * fprime[ops[l].fp + i];
}

fn load_b(l: u32, k: u32, n: u32) -> f32 {
    return weights[ops[l].w + k * ops[l].c_in + n];
}

//!include gemm_tile.wgsl

@compute @workgroup_size(THREADS)
fn dense_vjp(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let t = locate_tile(pass_.first, pass_.count, linear_group(wid, nwg));
    if (t.layer >= pass_.first + pass_.count) {
        return;
    }
    let acc = gemm_tile(t, lid);
    let o = ops[t.layer];
//!unroll i < RM
    {
        let m = t.m0 + out_row(lid, {i});
//!unroll j < RN
        {
            let n = t.n0 + out_col(lid, {j});
            if (owns_output(lid) && m < t.m && n < t.n) {
                slots[o.slot + m * o.c_in + n] = acc[{i}][{j} / 4u][{j} % 4u];
            }
        }
//!end
    }
//!end
}
