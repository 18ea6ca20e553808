// Convolution forward, one thread per output element (b, co, oh, ow):
//   a = b[co] + sum_{ci,kh,kw} W[co,ci,kh,kw] x[b, ci, oh*s + kh - p, ow*s + kw - p]  (zero outside)
//   x_out = f(a), f'(a) kept. Covers every conv node of the section in one dispatch.

//!include common.wgsl
//!include graph_common.wgsl

@group(0) @binding(0) var<uniform> pass_: Pass;
@group(0) @binding(1) var<storage, read> ops: array<Op>;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> fprime: array<f32>;

@compute @workgroup_size(256)
fn conv_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let work = claim(gid, nwg);
    if (!work.found) {
        return;
    }
    let o = ops[work.op];
    let local = work.local;
    let at = unflatten(local, o.c_out, o.h_out, o.w_out);
    let b = at.x;
    let co = at.y;
    let oh = at.z;
    let ow = at.w;
    let in_size = o.c_in * o.h_in * o.w_in;
    var a = params[o.b + co];
    for (var ci = 0u; ci < o.c_in; ci++) {
        for (var kh = 0u; kh < o.k; kh++) {
            let ih = i32(oh * o.stride + kh) - i32(o.pad);
            if (ih < 0 || ih >= i32(o.h_in)) {
                continue;
            }
            for (var kw = 0u; kw < o.k; kw++) {
                let iw = i32(ow * o.stride + kw) - i32(o.pad);
                if (iw < 0 || iw >= i32(o.w_in)) {
                    continue;
                }
                let wi = ((co * o.c_in + ci) * o.k + kh) * o.k + kw;
                let xi = b * in_size + (ci * o.h_in + u32(ih)) * o.w_in + u32(iw);
                a += params[o.w + wi] * x[o.x_in + xi];
            }
        }
    }
    x[o.x_out + local] = act_f(o.act, a);
    fprime[o.fp + local] = act_df(o.act, a);
}
