// Running sums of the loss and accuracy on the GPU, so that metrics are read once per epoch.
//
// Layout of `acc`, 8 values per replica (one workgroup each): [0] loss, [1] its Kahan
// compensation, [2] correct, [3] samples, [4] 1 once any loss was not finite, [5] the first such
// batch's index. `stats` holds the loss of all K·B rows, then their correctness.

//!include batch.wgsl

@group(0) @binding(0) var<uniform> ap: BatchPass;
@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> acc: array<f32>;

fn finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(1)
fn accumulate(@builtin(workgroup_id) wid: vec3<u32>) {
    let a = 8u * wid.x;
    let rows = ap.replicas * ap.batch;
    let first = wid.x * ap.batch;
    var sum = acc[a];
    var comp = acc[a + 1u];
    var correct = acc[a + 2u];
    var bad = false;
    for (var b = 0u; b < ap.count; b++) {
        let v = stats[first + b];
        if (!finite(v)) {
            bad = true;
        }
        // Kahan summation keeps an epoch's loss accurate in f32.
        let y = v - comp;
        let t = sum + y;
        comp = (t - sum) - y;
        sum = t;
        correct += stats[rows + first + b];
    }
    acc[a] = sum;
    acc[a + 1u] = comp;
    acc[a + 2u] = correct;
    acc[a + 3u] += f32(ap.count);
    if (bad && acc[a + 4u] == 0.0) {
        acc[a + 4u] = 1.0;
        acc[a + 5u] = f32(ap.index);
    }
}
