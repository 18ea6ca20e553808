// Output error: the loss per sample and the clamp r_L = dLoss/d(output), one thread per sample.
//   mse: loss = sum_j (x_L - y)^2,            g = 2 (x_L - y)
//   ce:  loss = -sum_j y log softmax(a_{L-1}), g = softmax(a_{L-1}) - y   (x_L holds the logits)
// g is scaled by `scale` (1 for sum reduction, 1/B for mean) and written into both relaxation
// buffers, since the output stays clamped whichever buffer a step reads.

struct LossPass {
    x_off: u32,  // x_L in the activity buffer
    r_off: u32,  // r_L in the relaxation buffers
    width: u32,  // n_L
    batch: u32,
    kind: u32,   // 0 mse, 1 ce
    scale: f32,
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

@compute @workgroup_size(64)
fn output_error(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    if (b >= lp.batch) {
        return;
    }
    let row = b * lp.width;
    var best_out = 0u;
    var best_tgt = 0u;
    var top = x[lp.x_off + row];
    for (var j = 1u; j < lp.width; j++) {
        let v = x[lp.x_off + row + j];
        if (v > top) {
            top = v;
            best_out = j;
        }
        if (target_[row + j] > target_[row + best_tgt]) {
            best_tgt = j;
        }
    }
    var loss = 0.0;
    if (lp.kind == 0u) {
        for (var j = 0u; j < lp.width; j++) {
            let d = x[lp.x_off + row + j] - target_[row + j];
            loss += d * d;
            let g = 2.0 * d * lp.scale;
            r_a[lp.r_off + row + j] = g;
            r_b[lp.r_off + row + j] = g;
        }
    } else {
        var z = 0.0;
        for (var j = 0u; j < lp.width; j++) {
            z += exp(x[lp.x_off + row + j] - top);
        }
        let log_z = log(z);
        for (var j = 0u; j < lp.width; j++) {
            let logit = x[lp.x_off + row + j] - top;
            let y = target_[row + j];
            loss -= y * (logit - log_z);
            let g = (exp(logit - log_z) - y) * lp.scale;
            r_a[lp.r_off + row + j] = g;
            r_b[lp.r_off + row + j] = g;
        }
    }
    stats[b] = loss;
    stats[lp.batch + b] = select(0.0, 1.0, best_out == best_tgt);
}
