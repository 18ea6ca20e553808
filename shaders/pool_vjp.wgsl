// The VJP of every pooling edge at once, one thread per parent element (b, c, ih, iw): the sum over
// the windows that cover it of r_c routed to the stored argmax (max-pool) or spread evenly
// (average-pool). Pooling has no parameters and no activation.

//!include common.wgsl
//!include graph_common.wgsl

@group(0) @binding(0) var<uniform> pass_: Pass;
@group(0) @binding(1) var<storage, read> ops: array<Op>;
@group(0) @binding(2) var<storage, read> argmax: array<u32>;
@group(0) @binding(3) var<storage, read> r_src: array<f32>;
@group(0) @binding(4) var<storage, read_write> slots: array<f32>;

@compute @workgroup_size(256)
fn pool_vjp(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let work = claim(gid, nwg);
    if (!work.found) {
        return;
    }
    let o = ops[work.op];
    let local = work.local;
    let in_size = o.c_in * o.h_in * o.w_in;
    let out_size = o.c_out * o.h_out * o.w_out;
    let e = local % in_size; // the element within the sample, as argmax records it
    let at = unflatten(local, o.c_in, o.h_in, o.w_in);
    let b = at.x;
    let c = at.y;
    let ih = at.z;
    let iw = at.w;
    // Windows oh with oh*s <= ih < oh*s + k.
    let oh_hi = min(ih / o.stride, o.h_out - 1u);
    let ow_hi = min(iw / o.stride, o.w_out - 1u);
    let oh_lo = select(0u, (ih + o.stride - o.k) / o.stride, ih + 1u > o.k);
    let ow_lo = select(0u, (iw + o.stride - o.k) / o.stride, iw + 1u > o.k);
    var v = 0.0;
    for (var oh = oh_lo; oh <= oh_hi; oh++) {
        for (var ow = ow_lo; ow <= ow_hi; ow++) {
            if (oh * o.stride + o.k <= ih || ow * o.stride + o.k <= iw) {
                continue;
            }
            let oi = b * out_size + (c * o.h_out + oh) * o.w_out + ow;
            if (o.kind == KIND_MAXPOOL) {
                if (argmax[o.aux + oi] == e) {
                    v += r_src[o.r_self + oi];
                }
            } else {
                v += r_src[o.r_self + oi] / f32(o.k * o.k);
            }
        }
    }
    slots[o.slot + local] = v;
}
