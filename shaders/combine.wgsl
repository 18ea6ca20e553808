// The relaxation of every hidden graph node at once, one thread per element (b, e):
//   r_i <- (1 - eta) r_i + eta * sum of the contributions of i's children
// where a contribution is a VJP slot (dense, conv, pool children) or a child's own state read
// directly (add and flatten pass it through; concat passes back the channels i fed).

//!include common.wgsl
//!include graph_common.wgsl

@group(0) @binding(0) var<uniform> pass_: Pass;
@group(0) @binding(1) var<storage, read> ops: array<Op>;
@group(0) @binding(2) var<storage, read> slots: array<f32>;
@group(0) @binding(3) var<storage, read> r_src: array<f32>;
@group(0) @binding(4) var<storage, read_write> r_dst: array<f32>;

@compute @workgroup_size(256)
fn combine(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let work = claim(gid, nwg);
    if (!work.found) {
        return;
    }
    let o = ops[work.op];
    let local = work.local;
    let size = o.c_out * o.h_out * o.w_out;
    let b = local / size;
    let e = local % size;
    var v = 0.0;
    for (var t = o.aux; t < o.aux + o.aux2; t++) {
        let ct = ops[t];
        if (ct.kind == CONTRIB_SLOT) {
            v += slots[ct.slot + local];
        } else if (ct.kind == CONTRIB_SAME) {
            v += r_src[ct.x_in + local];
        } else {
            // Concat child of shape [c_in, h, w]; this node's channels start at aux.
            let child_size = ct.c_in * o.h_out * o.w_out;
            v += r_src[ct.x_in + b * child_size + ct.aux * o.h_out * o.w_out + e];
        }
    }
    let idx = o.r_self + local;
    r_dst[idx] = (1.0 - pass_.rate) * r_src[idx] + pass_.rate * v;
}
