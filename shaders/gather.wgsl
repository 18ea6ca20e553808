// Batches gathered on the GPU from images kept there as u8 (four per u32): no per-batch
// host-to-device copies, only a dynamic offset selecting the batch's entry.

//!include batch.wgsl

@group(0) @binding(0) var<uniform> bp: BatchPass;
@group(0) @binding(1) var<storage, read> images: array<u32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read> order: array<u32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> target_: array<f32>;

// x_0[k, b, p] = pixel / 255 and the one-hot target, for sample order[k * len + start + b] of
// replica k. Rows past `count` are zeroed so that a partial batch computes on defined values.
@compute @workgroup_size(256)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * 256u;
    if (id >= bp.replicas * bp.batch * bp.pixels) {
        return;
    }
    let row = id / bp.pixels; // k * B + b
    let replica = row / bp.batch;
    let b = row % bp.batch;
    let p = id % bp.pixels;
    var value = 0.0;
    var label = 0xffffffffu;
    if (b < bp.count) {
        let s = order[replica * bp.len + bp.start + b];
        let byte_index = s * bp.pixels + p;
        let word = images[byte_index / 4u];
        value = f32((word >> (8u * (byte_index % 4u))) & 0xffu) / 255.0;
        label = labels[s];
    }
    x[id] = value;
    if (p < bp.classes) {
        target_[row * bp.classes + p] = select(0.0, 1.0, p == label);
    }
}
