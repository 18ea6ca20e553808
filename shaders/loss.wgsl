// Output error: the loss per sample and the clamp r_L = dLoss/d(output), one thread per sample
// (see output_error.wgsl). For an MLP whose output layer fits one tile's width, forward.wgsl
// does the same in the output layer's dispatch instead.

struct LossPass {
    x_off: u32,  // x_L in the activity buffer
    r_off: u32,  // r_L in the relaxation buffers
    width: u32,  // n_L
    batch: u32,
    kind: u32,   // 0 mse, 1 ce
    scale: f32,  // 1 for sum reduction, 1/B for mean
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> lp: LossPass;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> target_: array<f32>;
@group(0) @binding(3) var<storage, read_write> r_a: array<f32>;
@group(0) @binding(4) var<storage, read_write> r_b: array<f32>;
// [0, B): loss of each sample (unscaled); [B, 2B): 1 where argmax(output) == argmax(target).
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;

//!include output_error.wgsl

@compute @workgroup_size(64)
fn output_error(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    if (b >= lp.batch) {
        return;
    }
    let at = b * lp.width;
    output_error_row(b, lp.batch, lp.x_off + at, lp.r_off + at, lp.width, lp.kind, lp.scale);
}
