// Forward pass of one dense layer (dispatched once per layer, since layers depend on each other):
//   a_l = x_l W_l^T + b_l,   x_{l+1} = f_l(a_l),   f'_l(a_l) kept for relaxation and update.
// As a product: A = x_l [B, n_in], B(k, n) = W_l[n, k], so M = B, N = n_out, K = n_in.
//
// Two entry points. `forward` is the product alone (the graph engine's dense nodes, and the
// derivative below). `forward_fused`, the MLP's, also does in the same dispatch what would
// otherwise be a dispatch or a copy of its own:
// - FLAG_WRITE_START (hidden layers): the tile's x_{l+1} is also the relaxation's start r_{l+1},
//   written into r_a (relaxation buffer 0);
// - FLAG_OUTPUT_ERROR (the output layer, when a tile spans its whole width): each tile's rows
//   get their output error (output_error.wgsl) with loss scale Pass.rate, cross-entropy when
//   FLAG_LOSS_CE. A row's outputs are then all this workgroup's, so a storage barrier is the
//   only wait between the product and the loss.
//
// With FLAG_FPRIME_ONLY `forward` gives f' at the current relaxing state instead (the second AR
// paper's "no frozen forward pass"), for every layer of the dispatch at once:
//   fprime_l = f_l'(r_l W_l^T + b_l)
// reading r_l from binding 3 (a relaxation buffer) and writing only binding 4.

//!include common.wgsl

@group(0) @binding(0) var<uniform> pass_: Pass;
@group(0) @binding(1) var<storage, read> layers: array<Layer>;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> fprime: array<f32>;
// forward_fused only.
@group(0) @binding(5) var<storage, read> target_: array<f32>;
@group(0) @binding(6) var<storage, read_write> r_a: array<f32>;
@group(0) @binding(7) var<storage, read_write> r_b: array<f32>;
@group(0) @binding(8) var<storage, read_write> stats: array<f32>;

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
//!include output_error.wgsl

// The tile's product, and x_{l+1} and f' (or f' alone) from it.
fn layer_tile(t: Tile, lid: u32) {
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

@compute @workgroup_size(THREADS)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let t = locate_tile(pass_.first, pass_.count, linear_group(wid, nwg));
    if (t.layer >= pass_.first + pass_.count) {
        return;
    }
    layer_tile(t, lid);
}

@compute @workgroup_size(THREADS)
fn forward_fused(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let t = locate_tile(pass_.first, pass_.count, linear_group(wid, nwg));
    if (t.layer >= pass_.first + pass_.count) {
        return;
    }
    layer_tile(t, lid);
    let flags = pass_.flags;
    if ((flags & (FLAG_WRITE_START | FLAG_OUTPUT_ERROR)) == 0u) {
        return;
    }
    // The tile's outputs, written by every thread of the workgroup, are now readable by all.
    storageBarrier();
    let L = layers[t.layer];
    if ((flags & FLAG_WRITE_START) != 0u) {
        let rows = min(TM, t.m - t.m0);
        let cols = min(TN, t.n - t.n0);
        for (var e = lid; e < rows * cols; e += THREADS) {
            let at = (t.m0 + e / cols) * L.n_out + t.n0 + e % cols;
            r_a[L.r_out + at] = x[L.x_out + at];
        }
    }
    if ((flags & FLAG_OUTPUT_ERROR) != 0u && lid < TM && t.m0 + lid < t.m) {
        // The sample's index among every replica's rows (the table is layer-major and each
        // layer's replicas are consecutive in x, see src/engine/layout.rs).
        let m = t.m0 + lid;
        let row = (L.x_out - layers[pass_.first].x_out) / L.n_out + m;
        let kind = select(LOSS_MSE, LOSS_CE, (flags & FLAG_LOSS_CE) != 0u);
        output_error_row(row, pass_.batch * pass_.count, L.x_out + m * L.n_out,
                         L.r_out + m * L.n_out, L.n_out, kind, pass_.rate);
    }
}
