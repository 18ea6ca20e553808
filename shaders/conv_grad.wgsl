// Local gradients of every convolution node at once, one thread per weight or bias element,
// summing in a fixed order (deterministic):
//   G[co,ci,kh,kw] = sum_{b,oh,ow} e[b,co,oh,ow] x[b, ci, oh*s + kh - p, ow*s + kw - p]
//   g[co]          = sum_{b,oh,ow} e[b,co,oh,ow],      e = r * f' (r alone without derivative)

//!include common.wgsl
//!include graph_common.wgsl

@group(0) @binding(0) var<uniform> pass_: Pass;
@group(0) @binding(1) var<storage, read> ops: array<Op>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> fprime: array<f32>;
@group(0) @binding(4) var<storage, read> r: array<f32>;
@group(0) @binding(5) var<storage, read_write> grads: array<f32>;

fn post(o: Op, oi: u32) -> f32 {
    if ((pass_.flags & FLAG_NO_UPDATE_DERIV) != 0u) {
        return r[o.r_self + oi];
    }
    return r[o.r_self + oi] * fprime[o.fp + oi];
}

@compute @workgroup_size(256)
fn conv_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let work = claim(gid, nwg);
    if (!work.found) {
        return;
    }
    let o = ops[work.op];
    let local = work.local;
    let n_w = o.c_out * o.c_in * o.k * o.k;
    let in_size = o.c_in * o.h_in * o.w_in;
    let out_size = o.c_out * o.h_out * o.w_out;
    var s = 0.0;
    if (local >= n_w) {
        let co = local - n_w;
        for (var b = 0u; b < pass_.batch; b++) {
            for (var p = 0u; p < o.h_out * o.w_out; p++) {
                s += post(o, b * out_size + co * o.h_out * o.w_out + p);
            }
        }
        grads[o.b + co] = s;
        return;
    }
    let co = local / (o.c_in * o.k * o.k);
    let ci = (local / (o.k * o.k)) % o.c_in;
    let kh = (local / o.k) % o.k;
    let kw = local % o.k;
    for (var b = 0u; b < pass_.batch; b++) {
        for (var oh = 0u; oh < o.h_out; oh++) {
            let ih = i32(oh * o.stride + kh) - i32(o.pad);
            if (ih < 0 || ih >= i32(o.h_in)) {
                continue;
            }
            for (var ow = 0u; ow < o.w_out; ow++) {
                let iw = i32(ow * o.stride + kw) - i32(o.pad);
                if (iw < 0 || iw >= i32(o.w_in)) {
                    continue;
                }
                let e = post(o, b * out_size + (co * o.h_out + oh) * o.w_out + ow);
                s += e * x[o.x_in + b * in_size + (ci * o.h_in + u32(ih)) * o.w_in + u32(iw)];
            }
        }
    }
    grads[o.w + local] = s;
}
