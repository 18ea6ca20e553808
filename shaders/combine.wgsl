// The relaxation of every hidden graph node at once, one thread per element (b, e):
//   r_i <- (1 - eta) r_i + eta * sum of the contributions of i's children
// A contribution is one child's VJP into i, at this element:
//   - dense child: a slot that dense_vjp.wgsl filled this step (a tiled product);
//   - convolution child: computed here, the transposed convolution of r_c * f'_c;
//   - pooling child: computed here, r_c routed to the stored argmax (max) or spread (average);
//   - add / flatten child: the child's own state, same element; concat: the channels i fed.
// Computing the convolution and pooling VJPs here, as gathers, makes a relaxation step two
// dispatches (dense VJPs, then this) however many nodes of each kind the graph has.

//!include common.wgsl
//!include graph_common.wgsl

@group(0) @binding(0) var<uniform> pass_: Pass;
@group(0) @binding(1) var<storage, read> ops: array<Op>;
@group(0) @binding(2) var<storage, read> slots: array<f32>;
@group(0) @binding(3) var<storage, read> r_src: array<f32>;
@group(0) @binding(4) var<storage, read_write> r_dst: array<f32>;
@group(0) @binding(5) var<storage, read> weights: array<f32>;
@group(0) @binding(6) var<storage, read> fprime: array<f32>;
@group(0) @binding(7) var<storage, read> argmax: array<u32>;

// First and last output position whose window (kernel k, stride s, padding p) covers input
// position i, clipped to [0, n); empty when lo > hi.
fn covering(i: u32, k: u32, s: u32, p: u32, n: u32) -> vec2<i32> {
    let top = i32(i + p);
    let lo = max(0, (top - i32(k) + i32(s)) / i32(s));
    let hi = min(i32(n) - 1, top / i32(s));
    return vec2<i32>(lo, hi);
}

// Convolution child c (entry ct) into parent element (b, ci, ih, iw):
//   sum over (co, oh, ow) with ih = oh*s + kh - p, iw = ow*s + kw - p of
//   r_c[b, co, oh, ow] f'_c[b, co, oh, ow] W_c[co, ci, kh, kw]
fn conv_vjp(ct: Op, b: u32, ci: u32, ih: u32, iw: u32) -> f32 {
    let out_size = ct.c_out * ct.h_out * ct.w_out;
    let deriv = (pass_.flags & FLAG_NO_RELAX_DERIV) == 0u;
    let rows = covering(ih, ct.k, ct.stride, ct.pad, ct.h_out);
    let cols = covering(iw, ct.k, ct.stride, ct.pad, ct.w_out);
    // Consecutive output channels are a plane apart in r and f', a filter apart in W.
    let plane = ct.h_out * ct.w_out;
    let w_step = ct.c_in * ct.k * ct.k;
    var v = 0.0;
    for (var oh = rows.x; oh <= rows.y; oh++) {
        let kh = ih + ct.pad - u32(oh) * ct.stride;
        for (var ow = cols.x; ow <= cols.y; ow++) {
            let kw = iw + ct.pad - u32(ow) * ct.stride;
            let at = b * out_size + u32(oh) * ct.w_out + u32(ow);
            let w_at = ct.w + (ci * ct.k + kh) * ct.k + kw;
            for (var co = 0u; co < ct.c_out; co++) {
                let oi = at + co * plane;
                var g = r_src[ct.r_self + oi];
                if (deriv) {
                    g *= fprime[ct.fp + oi];
                }
                v += g * weights[w_at + co * w_step];
            }
        }
    }
    return v;
}

// Pooling child c (entry ct) into parent element (b, ch, ih, iw), `e` its index in the sample.
fn pool_vjp(ct: Op, b: u32, ch: u32, ih: u32, iw: u32, e: u32) -> f32 {
    let out_size = ct.c_out * ct.h_out * ct.w_out;
    let rows = covering(ih, ct.k, ct.stride, 0u, ct.h_out);
    let cols = covering(iw, ct.k, ct.stride, 0u, ct.w_out);
    var v = 0.0;
    for (var oh = rows.x; oh <= rows.y; oh++) {
        for (var ow = cols.x; ow <= cols.y; ow++) {
            let oi = b * out_size + (ch * ct.h_out + u32(oh)) * ct.w_out + u32(ow);
            if (ct.kind == CONTRIB_MAXPOOL) {
                if (argmax[ct.aux + oi] == e) {
                    v += r_src[ct.r_self + oi];
                }
            } else {
                v += r_src[ct.r_self + oi] / f32(ct.k * ct.k);
            }
        }
    }
    return v;
}

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
    let at = unflatten(local, o.c_out, o.h_out, o.w_out);
    var v = 0.0;
    for (var t = o.aux; t < o.aux + o.aux2; t++) {
        let ct = ops[t];
        if (ct.kind == CONTRIB_SLOT) {
            v += slots[ct.slot + local];
        } else if (ct.kind == CONTRIB_SAME) {
            v += r_src[ct.x_in + local];
        } else if (ct.kind == CONTRIB_CONV) {
            v += conv_vjp(ct, b, at.y, at.z, at.w);
        } else if (ct.kind == CONTRIB_MAXPOOL || ct.kind == CONTRIB_AVGPOOL) {
            v += pool_vjp(ct, b, at.y, at.z, at.w, e);
        } else {
            // Concat child of shape [c_in, h, w]; this node's channels start at aux.
            let child_size = ct.c_in * o.h_out * o.w_out;
            v += r_src[ct.x_in + b * child_size + ct.aux * o.h_out * o.w_out + e];
        }
    }
    let idx = o.r_self + local;
    r_dst[idx] = (1.0 - pass_.rate) * r_src[idx] + pass_.rate * v;
}
