// Forward pass of one dense layer (dispatched once per layer, since layers depend on each other):
//   a_l = x_l W_l^T + b_l,   x_{l+1} = f_l(a_l),   f'_l(a_l) kept for relaxation and update.
// As a product: A = x_l [B, n_in], B(k, n) = W_l[n, k], so M = B, N = n_out, K = n_in.
//
// With FLAG_FPRIME_ONLY the same product gives f' at the current relaxing state instead (the
// second AR paper's "no frozen forward pass"), for every layer of the dispatch at once:
//   fprime_l = f_l'(r_l W_l^T + b_l)
// reading r_l from binding 3 (a relaxation buffer) and writing only binding 4.

//!include common.wgsl

@group(0) @binding(0) var<uniform> pass_: Pass;
@group(0) @binding(1) var<storage, read> layers: array<Layer>;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> fprime: array<f32>;

const A_K_CONTIGUOUS: bool = true;
const B_K_CONTIGUOUS: bool = true;

fn dims(l: u32) -> vec3<u32> {
    return vec3<u32>(pass_.batch, layers[l].n_out, layers[l].n_in);
}

fn fprime_only() -> bool {
    return (pass_.flags & FLAG_FPRIME_ONLY) != 0u;
}

fn load_a(l: u32, m: u32, k: u32) -> f32 {
    let at = select(layers[l].x_in, layers[l].r_in, fprime_only());
    return x[at + m * layers[l].n_in + k];
}

fn load_b(l: u32, k: u32, n: u32) -> f32 {
    return params[layers[l].w + n * layers[l].n_in + k];
}

//!include gemm_tile.wgsl

@compute @workgroup_size(THREADS)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let t = locate_tile(pass_.first, pass_.count, linear_group(wid, nwg));
    if (t.layer >= pass_.first + pass_.count) {
        return;
    }
    let acc = gemm_tile(t, lid);
    let L = layers[t.layer];
//!unroll i < RM
    {
        let m = t.m0 + out_row(lid, {i});
//!unroll j < RN
        {
            let n = t.n0 + out_col(lid, {j});
            if (owns_output(lid) && m < t.m && n < t.n) {
                let a = acc[{i}][{j} / 4u][{j} % 4u] + params[L.b + n];
                if (!fprime_only()) {
                    x[L.x_out + m * L.n_out + n] = act_f(L.act, a);
                }
                fprime[L.fp + m * L.n_out + n] = act_df(L.act, a);
            }
        }
//!end
    }
//!end
}
