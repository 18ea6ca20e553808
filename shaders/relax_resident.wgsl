// Several Jacobi relaxation steps in one dispatch. While the weights are frozen, a sample's
// relaxation depends on that sample alone, so a workgroup that owns R samples runs step after
// step with workgroup barriers only. Each step is relax.wgsl's, for every relaxed layer at once:
//   r_l <- (1 - eta) r_l + eta (r_{l+1} * f'_l) W_l
//
// The state never leaves the chip between steps: each column (l, j) of the relaxed layers has an
// owner thread that keeps r_l[.., j] of the workgroup's rows in registers, and the product's
// input r_{l+1} * f'_l lives in workgroup memory (`post`). W is streamed from memory every step,
// as loads that are independent of one another: a thread's column is split into K slices (its
// owner does the first, other threads the rest, "extra" items whose sums meet in `partial`), so
// no thread walks a long K alone, and the constants below are chosen by the host
// (engine/resident.rs, `ResidentPlan`) to spread the loads evenly over the workgroup.
//
// Host-generated constants (see ResidentPlan::constants): R rows per workgroup, kept as RB = R / RV
// values of type RowVec (f32, vec2 or vec4: RV rows each), T threads, OWN columns and ITEMS
// work items per thread at most, POST_LEN = sum of the relaxed layers' K, EXTRA_LEN extra items
// (at least 1), EXTRA_ITEMS = ITEMS - OWN, and rv_at / rv_with to read and replace one row of
// a RowVec.
//
// State ping-pongs between r_a and r_b like the tiled kernel's: the dispatch reads buffer `src`
// and leaves the state after `steps` steps in buffer (src + steps) % 2. With replicas (see
// engine/layout.rs) the workgroups of each replica follow one another, and layer l of replica k
// is table entry l * replicas + k.

//!include common.wgsl

struct ResidentPass {
    first: u32,
    count: u32,
    batch: u32,
    flags: u32,
    rate: f32,
    steps: u32,
    src: u32,   // which of r_a (0) or r_b (1) holds the state the first step reads
    replicas: u32,
    canary: u32, // 2 (see loop_budget_spent)
    n_cols: u32, // columns of all relaxed layers
    n_extra: u32, // extra items (K slices after the first)
    pad0: u32,
}

// One relaxed layer's share of the work.
struct PlanLayer {
    col_base: u32,   // its first column among all relaxed layers' columns
    extra_base: u32, // its first extra item
    slices: u32,     // K slices per column
    slice_len: u32,
    post_base: u32,  // its product's input r_{l+1} * f'_l in `post`, in rows of RB values
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

// One work item: the slice [k0, k1) of column j of a relaxed layer's product.
struct Item {
    w: u32,  // W_l[0, j] in `weights`
    n: u32,  // W_l's row stride (n_in)
    k0: u32,
    k1: u32,
    p: u32,  // the layer's input in `post`
}

// U (host-generated): weights loaded before any of them is used, so that U loads per thread
// are in flight at once. ZIGZAG (host-generated, 0 or 1): odd steps walk each item's K from
// the top, so that a step starts on the weights the previous one read last, which may still be
// in the cache (W is too big for it in one piece: 484 KB for the paper's MLP).

@group(0) @binding(0) var<uniform> pass_: ResidentPass;
@group(0) @binding(1) var<storage, read> layers: array<Layer>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<storage, read> fprime: array<f32>;
@group(0) @binding(4) var<storage, read_write> r_a: array<f32>;
@group(0) @binding(5) var<storage, read_write> r_b: array<f32>;
// [0]: nonzero once a dispatch's loops were cut short (below).
@group(0) @binding(6) var<storage, read_write> flag: array<atomic<u32>>;
@group(0) @binding(7) var<storage, read> plan: array<PlanLayer>;

// r_{l+1} * f'_l of every relaxed layer l for this workgroup's rows: [POST_LEN][RB].
var<workgroup> post: array<RowVec, POST_LEN * RB>;
// The sums of the extra items: [EXTRA_LEN][RB].
var<workgroup> partial: array<RowVec, EXTRA_LEN * RB>;

fn read_r(which: u32, i: u32) -> f32 {
    if (which == 0u) {
        return r_a[i];
    }
    return r_b[i];
}

fn write_r(which: u32, i: u32, v: f32) {
    if (which == 0u) {
        r_a[i] = v;
    } else {
        r_b[i] = v;
    }
}

// Relaxed layer i (0 for layer `first`) of `replica`.
fn entry(i: u32, replica: u32) -> Layer {
    return layers[(pass_.first + i) * pass_.replicas + replica];
}

// The relaxed layer that column c (or, with `extra`, extra item c) belongs to.
fn layer_of(c: u32, extra: bool) -> u32 {
    var i = 0u;
    for (; i + 1u < pass_.count; i++) {
        let next = select(plan[i + 1u].col_base, plan[i + 1u].extra_base, extra);
        if (c < next) {
            break;
        }
    }
    return i;
}

// The relaxed layer and column of column index c (c < n_cols).
fn column(c: u32) -> vec2<u32> {
    let i = layer_of(c, false);
    return vec2<u32>(i, c - plan[i].col_base);
}

// Work item g: columns first (K slice 0, done by the column's owner), then the extra items.
// Past the last item: an empty slice.
fn decode(g: u32, replica: u32) -> Item {
    var it = Item(0u, 0u, 0u, 0u, 0u);
    if (g < pass_.n_cols) {
        let c = column(g);
        let P = plan[c.x];
        let L = entry(c.x, replica);
        it = Item(L.w + c.y, L.n_in, 0u, min(P.slice_len, L.n_out), P.post_base);
    } else if (g < pass_.n_cols + pass_.n_extra) {
        let e = g - pass_.n_cols;
        let i = layer_of(e, true);
        let P = plan[i];
        let L = entry(i, replica);
        let t = e - P.extra_base;
        let k0 = (1u + t / L.n_in) * P.slice_len;
        it = Item(L.w + t % L.n_in, L.n_in, k0, min(k0 + P.slice_len, L.n_out), P.post_base);
    }
    return it;
}

// sum over k in [k0, k1) of post[p + k] * W[k, j], for every row of the block; `down` walks
// the chunks of U from the top (see ZIGZAG).
fn product(it: Item, down: bool) -> array<RowVec, RB> {
    var acc: array<RowVec, RB>;
    let full = (it.k1 - it.k0) / U;
    let tail = it.k0 + full * U;
    if (down) {
        for (var k = it.k1; k > tail; k--) {
            let w = weights[it.w + (k - 1u) * it.n];
//!unroll b < RB
            acc[{b}] = fma(post[(it.p + k - 1u) * RB + {b}], RowVec(w), acc[{b}]);
//!end
        }
    }
    for (var c = 0u; c < full; c++) {
        let k = it.k0 + select(c, full - 1u - c, down) * U;
        var w: array<f32, U>;
//!unroll u < U
        w[{u}] = weights[it.w + (k + {u}) * it.n];
//!end
//!unroll u < U
//!unroll b < RB
        acc[{b}] = fma(post[(it.p + k + {u}) * RB + {b}], RowVec(w[{u}]), acc[{b}]);
//!end
//!end
    }
    if (!down) {
        for (var k = tail; k < it.k1; k++) {
            let w = weights[it.w + k * it.n];
//!unroll b < RB
            acc[{b}] = fma(post[(it.p + k) * RB + {b}], RowVec(w), acc[{b}]);
//!end
        }
    }
    return acc;
}

fn store_partial(e: u32, acc: array<RowVec, RB>) {
//!unroll b < RB
    partial[e * RB + {b}] = acc[{b}];
//!end
}

@compute @workgroup_size(T)
fn relax_resident(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let per_replica = (pass_.batch + R - 1u) / R;
    let group = linear_group(wid, nwg);
    let replica = group / per_replica;
    if (replica >= pass_.replicas) {
        return;
    }
    let row0 = (group % per_replica) * R;
    let rows = min(R, pass_.batch - row0);
    let eta = pass_.rate;
    let deriv = (pass_.flags & FLAG_NO_RELAX_DERIV) == 0u;
    let src = pass_.src;
    let n_cols = pass_.n_cols;
    let n_items = n_cols + pass_.n_extra;

    // This thread's items (lid, lid + T, ...), decoded once for every step.
    var items: array<Item, ITEMS>;
//!unroll q < ITEMS
    items[{q}] = decode(lid + {q} * T, replica);
//!end

    // The owned columns' state, and f'_{l-1} there (what turns r_l into the input of the
    // product of the layer below; zero for the first relaxed layer, which feeds none).
    var own: array<vec2<u32>, OWN>;
    var r_own: array<array<RowVec, RB>, OWN>;
    var f_own: array<array<RowVec, RB>, OWN>;
    var s_own: array<array<RowVec, RB>, OWN>;
//!unroll q < OWN
    if (lid + {q} * T < n_cols) {
        let c = column(lid + {q} * T);
        own[{q}] = c;
        let L = entry(c.x, replica);
        let below = entry(max(c.x, 1u) - 1u, replica);
//!unroll row < R
        if ({row} < rows) {
            let r = read_r(src, L.r_in + (row0 + {row}) * L.n_in + c.y);
            r_own[{q}][{row} / RV] = rv_with(r_own[{q}][{row} / RV], {row} % RV, r);
            if (c.x > 0u) {
                var f = 1.0;
                if (deriv) {
                    f = fprime[below.fp + (row0 + {row}) * below.n_out + c.y];
                }
                f_own[{q}][{row} / RV] = rv_with(f_own[{q}][{row} / RV], {row} % RV, f);
            }
        }
//!end
        if (c.x > 0u) {
            let pb = plan[c.x - 1u].post_base;
//!unroll b < RB
            post[(pb + c.y) * RB + {b}] = r_own[{q}][{b}] * f_own[{q}][{b}];
//!end
        }
    }
//!end
    // The top layer's input (the clamped output, or a layer this dispatch does not relax)
    // stays fixed.
    {
        let top = pass_.count - 1u;
        let L = entry(top, replica);
        let pb = plan[top].post_base;
        for (var e = lid; e < L.n_out * RB; e += T) {
            let k = e / RB;
            let b = e % RB;
            var v = RowVec();
            for (var c = 0u; c < RV; c++) {
                let row = b * RV + c;
                if (row < rows) {
                    let at = (row0 + row) * L.n_out + k;
                    var x = read_r(src, L.r_out + at);
                    if (deriv) {
                        x *= fprime[L.fp + at];
                    }
                    v = rv_with(v, c, x);
                }
            }
            post[(pb + k) * RB + b] = v;
        }
    }
    workgroupBarrier();

    for (var s = 0u; s < pass_.steps; s++) {
        // Every item's product from the previous step's post.
        let down = ZIGZAG == 1u && (s & 1u) == 1u;
//!unroll q < OWN
        {
            let g = lid + {q} * T;
            let acc = product(items[{q}], down);
            if (g < n_cols) {
                s_own[{q}] = acc;
            } else if (g < n_items) {
                store_partial(g - n_cols, acc);
            }
        }
//!end
//!unroll q < EXTRA_ITEMS
        {
            let g = lid + (OWN + {q}) * T;
            if (g < n_items) {
                store_partial(g - n_cols, product(items[OWN + {q}], down));
            }
        }
//!end
        workgroupBarrier();
        // Each owner adds its column's other slices, updates its state and posts it below.
//!unroll q < OWN
        if (lid + {q} * T < n_cols) {
            let c = own[{q}];
            let P = plan[c.x];
            let n = entry(c.x, replica).n_in;
            var sum = s_own[{q}];
            for (var sl = 1u; sl < P.slices; sl++) {
                let e = P.extra_base + (sl - 1u) * n + c.y;
//!unroll b < RB
                sum[{b}] += partial[e * RB + {b}];
//!end
            }
//!unroll b < RB
            r_own[{q}][{b}] = (1.0 - eta) * r_own[{q}][{b}] + eta * sum[{b}];
//!end
            if (c.x > 0u) {
                let pb = plan[c.x - 1u].post_base;
//!unroll b < RB
                post[(pb + c.y) * RB + {b}] = r_own[{q}][{b}] * f_own[{q}][{b}];
//!end
            }
        }
//!end
        workgroupBarrier();
    }

    let dst = (src + pass_.steps) % 2u;
//!unroll q < OWN
    if (lid + {q} * T < n_cols) {
        let c = own[{q}];
        let L = entry(c.x, replica);
//!unroll row < R
        if ({row} < rows) {
            let v = rv_at(r_own[{q}][{row} / RV], {row} % RV);
            write_r(dst, L.r_in + (row0 + {row}) * L.n_in + c.y, v);
        }
//!end
    }
//!end
    // Lavapipe's loop budget (common.wgsl).
    if (loop_budget_spent(pass_.canary)) {
        atomicMax(&flag[0], 1u);
    }
}
