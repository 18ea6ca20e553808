// The output error of one sample: its loss (unscaled) and whether its output's argmax is the
// target's, into `stats`, and the clamp r_L = dLoss/d(output), scaled by `scale`, into both
// relaxation buffers (the output stays clamped whichever buffer a step reads).
//   mse: loss = sum_j (x_L - y)^2,            g = 2 (x_L - y)
//   ce:  loss = -sum_j y log softmax(a_{L-1}), g = softmax(a_{L-1}) - y   (x_L holds the logits)
// The including kernel declares x, target_, r_a, r_b and stats; `row` indexes the sample among
// all `rows` (target_ and stats), x_at and r_at are its outputs' offsets in x and in r_a / r_b.

const LOSS_MSE: u32 = 0u;
const LOSS_CE: u32 = 1u;

fn output_error_row(row: u32, rows: u32, x_at: u32, r_at: u32, width: u32, kind: u32,
                    scale: f32) {
    let y_at = row * width;
    var best_out = 0u;
    var best_tgt = 0u;
    var top = x[x_at];
    for (var j = 1u; j < width; j++) {
        let v = x[x_at + j];
        if (v > top) {
            top = v;
            best_out = j;
        }
        if (target_[y_at + j] > target_[y_at + best_tgt]) {
            best_tgt = j;
        }
    }
    var loss = 0.0;
    if (kind == LOSS_MSE) {
        for (var j = 0u; j < width; j++) {
            let d = x[x_at + j] - target_[y_at + j];
            loss += d * d;
            let g = 2.0 * d * scale;
            r_a[r_at + j] = g;
            r_b[r_at + j] = g;
        }
    } else {
        var z = 0.0;
        for (var j = 0u; j < width; j++) {
            z += exp(x[x_at + j] - top);
        }
        let log_z = log(z);
        for (var j = 0u; j < width; j++) {
            let logit = x[x_at + j] - top;
            let y = target_[y_at + j];
            loss -= y * (logit - log_z);
            let g = (exp(logit - log_z) - y) * scale;
            r_a[r_at + j] = g;
            r_b[r_at + j] = g;
        }
    }
    stats[row] = loss;
    stats[rows + row] = select(0.0, 1.0, best_out == best_tgt);
}
