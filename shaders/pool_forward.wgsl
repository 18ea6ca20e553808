// Max- and average-pooling forward, one thread per output element (b, c, oh, ow), no padding.
// Max-pool keeps the argmax (flat index within the input sample, first maximum in window order)
// so that its VJP routes through the stored choice: the Jacobian frozen at the forward pass.

//!include common.wgsl
//!include graph_common.wgsl

@group(0) @binding(0) var<uniform> pass_: Pass;
@group(0) @binding(1) var<storage, read> ops: array<Op>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;

@compute @workgroup_size(256)
fn pool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let work = claim(gid, nwg);
    if (!work.found) {
        return;
    }
    let o = ops[work.op];
    let local = work.local;
    let out_at = unflatten(local, o.c_out, o.h_out, o.w_out);
    let b = out_at.x;
    let c = out_at.y;
    let oh = out_at.z;
    let ow = out_at.w;
    let in_size = o.c_in * o.h_in * o.w_in;
    var best = 0.0;
    var best_at = 0u;
    var sum = 0.0;
    for (var kh = 0u; kh < o.k; kh++) {
        for (var kw = 0u; kw < o.k; kw++) {
            let at = (c * o.h_in + oh * o.stride + kh) * o.w_in + ow * o.stride + kw;
            let v = x[o.x_in + b * in_size + at];
            if ((kh == 0u && kw == 0u) || v > best) {
                best = v;
                best_at = at;
            }
            sum += v;
        }
    }
    if (o.kind == KIND_MAXPOOL) {
        x[o.x_out + local] = best;
        argmax[o.aux + local] = best_at;
    } else {
        x[o.x_out + local] = sum / f32(o.k * o.k);
    }
}
