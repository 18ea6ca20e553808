// The VJP of every convolution edge at once, one thread per parent element (b, ci, ih, iw): the
// transposed convolution of e = r_c * f'_c with the same stride and padding,
//   slot[b, ci, ih, iw] = sum over (co, kh, kw) with ih = oh*s + kh - p, iw = ow*s + kw - p of
//                         e[b, co, oh, ow] W[co, ci, kh, kw]

//!include common.wgsl
//!include graph_common.wgsl

@group(0) @binding(0) var<uniform> pass_: Pass;
@group(0) @binding(1) var<storage, read> ops: array<Op>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<storage, read> fprime: array<f32>;
@group(0) @binding(4) var<storage, read> r_src: array<f32>;
@group(0) @binding(5) var<storage, read_write> slots: array<f32>;

@compute @workgroup_size(256)
fn conv_vjp(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let work = claim(gid, nwg);
    if (!work.found) {
        return;
    }
    let o = ops[work.op];
    let local = work.local;
    let out_size = o.c_out * o.h_out * o.w_out;
    let at = unflatten(local, o.c_in, o.h_in, o.w_in);
    let b = at.x;
    let ci = at.y;
    let ih = at.z;
    let iw = at.w;
    let deriv = (pass_.flags & FLAG_NO_RELAX_DERIV) == 0u;
    var v = 0.0;
    for (var kh = 0u; kh < o.k; kh++) {
        let sh = i32(ih + o.pad) - i32(kh);
        if (sh < 0 || sh % i32(o.stride) != 0) {
            continue;
        }
        let oh = u32(sh) / o.stride;
        if (oh >= o.h_out) {
            continue;
        }
        for (var kw = 0u; kw < o.k; kw++) {
            let sw = i32(iw + o.pad) - i32(kw);
            if (sw < 0 || sw % i32(o.stride) != 0) {
                continue;
            }
            let ow = u32(sw) / o.stride;
            if (ow >= o.w_out) {
                continue;
            }
            for (var co = 0u; co < o.c_out; co++) {
                let oi = b * out_size + (co * o.h_out + oh) * o.w_out + ow;
                var g = r_src[o.r_self + oi];
                if (deriv) {
                    g *= fprime[o.fp + oi];
                }
                v += g * weights[o.w + ((co * o.c_in + ci) * o.k + kh) * o.k + kw];
            }
        }
    }
    slots[o.slot + local] = v;
}
