// After each adaptive relaxation step: if the batch has not converged yet, count the step and
// mark it converged once max over layers of max|delta r_l| / max|r_l| is below the tolerance.
// Clears the per-layer slots for the next step. One thread; no host round trip.

struct CheckPass {
    tol: f32,
    first: u32, // first relaxing layer (1)
    count: u32, // relaxing layers (L - 1)
    pad0: u32,
}

@group(0) @binding(0) var<uniform> cp: CheckPass;
// Same layout as in relax.wgsl.
@group(0) @binding(1) var<storage, read_write> conv: array<u32>;

@compute @workgroup_size(1)
fn relax_check() {
    if (conv[0] == 0u) {
        conv[1] += 1u;
        conv[2] += 1u;
        var worst = 0.0;
        for (var i = 0u; i < cp.count; i++) {
            let l = cp.first + i;
            let delta = bitcast<f32>(conv[4u + 2u * l]);
            let size = bitcast<f32>(conv[5u + 2u * l]);
            if (size > 0.0) {
                worst = max(worst, delta / size);
            } else if (delta > 0.0) {
                worst = max(worst, 1.0);
            }
        }
        if (worst < cp.tol) {
            conv[0] = 1u;
        }
    }
    for (var i = 0u; i < cp.count; i++) {
        let l = cp.first + i;
        conv[4u + 2u * l] = 0u;
        conv[5u + 2u * l] = 0u;
    }
}
