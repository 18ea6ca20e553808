// f' at the current relaxing state instead of the frozen forward pass (the second AR paper's
// "no frozen forward pass"): for every layer in [first, first + count) (layers from 1; the input
// never relaxes, so layer 0's derivative stays the forward one)
//   fp_cur_l = f_l'(r_l W_l^T + b_l)
// As a product: A = r_l [B, n_in], B(k, n) = W_l[n, k]; M = B, N = n_out, K = n_in.

//!include common.wgsl

@group(0) @binding(0) var<uniform> pass_: Pass;
@group(0) @binding(1) var<storage, read> layers: array<Layer>;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read> r_src: array<f32>;
@group(0) @binding(4) var<storage, read_write> fp_cur: array<f32>;

const A_K_CONTIGUOUS: bool = true;
const B_K_CONTIGUOUS: bool = true;

fn dims(l: u32) -> vec3<u32> {
    return vec3<u32>(pass_.batch, layers[l].n_out, layers[l].n_in);
}

fn load_a(l: u32, m: u32, k: u32) -> f32 {
    return r_src[layers[l].r_in + m * layers[l].n_in + k];
}

fn load_b(l: u32, k: u32, n: u32) -> f32 {
    return params[layers[l].w + n * layers[l].n_in + k];
}

//!include gemm_tile.wgsl

@compute @workgroup_size(THREADS)
fn derivative(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let t = locate_tile(pass_.first, pass_.count, linear_group(wid, nwg));
    if (t.layer >= pass_.first + pass_.count) {
        return;
    }
    let acc = gemm_tile(t, lid);
    let L = layers[t.layer];
    for (var i = 0u; i < RM; i++) {
        let m = t.m0 + out_row(lid, i);
        for (var j = 0u; j < RN; j++) {
            let n = t.n0 + out_col(lid, j);
            if (owns_output(lid) && m < t.m && n < t.n) {
                let a = acc[i][j / 4u][j % 4u] + params[L.b + n];
                fp_cur[L.fp + m * L.n_out + n] = act_df(L.act, a);
            }
        }
    }
}
