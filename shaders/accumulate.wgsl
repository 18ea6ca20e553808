// Running sums of the loss and accuracy on the GPU, so that metrics are read once per epoch.
//
// Layout of `acc`: [0] loss, [1] its Kahan compensation, [2] correct, [3] samples,
// [4] 1 once any loss was not finite, [5] the first such batch's index.

//!include batch.wgsl

@group(0) @binding(0) var<uniform> ap: BatchPass;
@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> acc: array<f32>;

fn finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(1)
fn accumulate() {
    var sum = acc[0];
    var comp = acc[1];
    var correct = acc[2];
    var bad = false;
    for (var b = 0u; b < ap.count; b++) {
        let v = stats[b];
        if (!finite(v)) {
            bad = true;
        }
        // Kahan summation keeps an epoch's loss accurate in f32.
        let y = v - comp;
        let t = sum + y;
        comp = (t - sum) - y;
        sum = t;
        correct += stats[ap.batch + b];
    }
    acc[0] = sum;
    acc[1] = comp;
    acc[2] = correct;
    acc[3] += f32(ap.count);
    if (bad && acc[4] == 0.0) {
        acc[4] = 1.0;
        acc[5] = f32(ap.index);
    }
}
