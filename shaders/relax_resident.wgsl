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
// values of type RowVec (f32, vec2 or vec4: RV rows each), T threads, OWN units and ITEMS
// work items per thread at most, POST_LEN = sum of the relaxed layers' K, EXTRA_LEN extra items
// (at least 1), EXTRA_ITEMS = ITEMS - OWN, and rv_at / rv_with to read and replace one row of
// a RowVec.
//
// Units (CW, host-generated, `wN` in a shape): a thread's item covers CW adjacent columns, so
// that each input value it reads from `post` feeds CW products, not one (RBW = RB * CW
// accumulators, OWNW = OWN * CW owned columns). A layer's last unit may be narrower (`m`
// columns); its missing columns read a real column's weights and are never stored.
//
// Parts (PARTS > 1, host-generated): a row block's work is split among PARTS workgroups, so each
// streams only part of W every step. Part 0 (the upper part) relaxes every relaxed layer but the
// lowest, and posts that layer's input r_1 * f'_0 for every step to `flag` (step s's input at
// posted_at(s, ...)); parts 1 ... (the lower parts) each relax a range of the lowest layer's
// columns, taking their input from there. The dependency is one way, from the upper part down, and the upper
// parts have the lower workgroup indices, so a lower part only ever waits for a workgroup that
// started before it. Which part does what is the `roles` table (one entry per part).
// Crossing workgroups goes through atomics (relaxed loads and stores of the f32 bits, which read
// the device's coherent level): the upper part stores a step's inputs, passes a storage barrier
// (device-scope acquire-release on Vulkan) and then stores the count of steps posted
// (flag[1 + block]); a lower part's poller thread waits for that count before a workgroup barrier
// lets the others load them (a step ahead: a step's input is loaded while the one before
// computes). A wait that never ends raises flag[0] (never a hang).
//
// Which thread runs which item: round robin (item g on thread g % T), or with PACKED
// (host-generated, `b` in a shape) the host's table `roles.slot` (per part, per slot q < ITEMS,
// per thread; past the last item for none), which keeps every unit with its owner (unit g in
// slot g / T of thread g % T) and packs the extra items, 32 adjacent ones at a time, onto the
// least-loaded warps (see ResidentPlan's `packed`).
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
    spin_limit: u32, // polls of a lower part's wait before it gives up
    part0: u32,      // the parts this dispatch runs: [part0, part_end)
    part_end: u32,
}

// What one part of a row block relaxes.
struct Role {
    layer0: u32,    // its first relaxed layer (0: the lowest)
    count: u32,     // relaxed layers
    n_units: u32,   // units (CW columns) of those layers that are its own
    n_extra: u32,   // extra items (K slices after the first)
    plan_base: u32, // its first entry of `plan`
    col0: u32,      // its first column of its first layer (a multiple of CW)
    publish: u32,   // 1: posts its first layer's r * f' (the upper part)
    consume: u32,   // 1: its input comes from `posted` (a lower part)
}

// One relaxed layer's share of the work.
struct PlanLayer {
    unit_base: u32,  // its first unit among all relaxed layers' units
    extra_base: u32, // its first extra item
    slices: u32,     // K slices per unit
    slice_len: u32,
    post_base: u32,  // its product's input r_{l+1} * f'_l in `post`, in rows of RB values
    units: u32,      // the part's units of the layer
    width: u32,      // the part's columns of the layer
    pad: u32,
}

// One work item: the slice [k0, k1) of columns j ... j + m - 1 (a unit) of a relaxed layer's
// product.
struct Item {
    w: u32,  // W_l[0, j] in `weights`
    n: u32,  // W_l's row stride (n_in)
    k0: u32,
    k1: u32,
    p: u32,  // the layer's input in `post`
    m: u32,  // columns in the unit (1 to CW)
    g: u32,  // its index: units, then extra items, then none
}

// The parts' roles, then (with PACKED) each part's items per thread: [part][q][lid].
struct Roles {
    part: array<Role, PARTS>,
    slot: array<u32>,
}

// CACHE and WC (host-generated): with CACHE 1 every thread has one item of at most WC weights,
// loaded once into registers (`wc`) and used by every step (product_cached), so a step reads no
// weights from memory.
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
// [0]: nonzero once a dispatch's loops were cut short (below) or a wait gave up; with parts,
// [1 + block]: steps posted by the block's upper part, [1 + blocks + block]: its lower parts that
// have finished (the last one zeroes both for the next dispatch), and from 1 + 2 blocks the
// posts: [step][replica * batch + row][column of the lowest relaxed layer]. (One buffer: WebGPU
// allows 8 storage buffers per kernel.)
@group(0) @binding(6) var<storage, read_write> flag: array<atomic<u32>>;
@group(0) @binding(7) var<storage, read> plan: array<PlanLayer>;
@group(0) @binding(8) var<storage, read> roles: Roles;

var<private> role: Role;

// r_{l+1} * f'_l of every relaxed layer l for this workgroup's rows: [POST_LEN][RB].
var<workgroup> post: array<RowVec, POST_LEN * RB>;
// The sums of the extra items: [EXTRA_LEN][CW][RB].
var<workgroup> partial: array<RowVec, EXTRA_LEN * RBW>;

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

// Relaxed layer i of this part (its own numbering) of `replica`.
fn entry(i: u32, replica: u32) -> Layer {
    return layers[(pass_.first + role.layer0 + i) * pass_.replicas + replica];
}

// This part's share of its relaxed layer i.
fn part_layer(i: u32) -> PlanLayer {
    return plan[role.plan_base + i];
}

// The relaxed layer that unit c (or, with `extra`, extra item c) belongs to.
fn layer_of(c: u32, extra: bool) -> u32 {
    var i = 0u;
    for (; i + 1u < role.count; i++) {
        let next = select(part_layer(i + 1u).unit_base, part_layer(i + 1u).extra_base, extra);
        if (c < next) {
            break;
        }
    }
    return i;
}

// The relaxed layer and unit of unit index c (c < n_units).
fn unit(c: u32) -> vec2<u32> {
    let i = layer_of(c, false);
    return vec2<u32>(i, c - part_layer(i).unit_base);
}

// Columns in unit u of the part's relaxed layer i.
fn unit_width(i: u32, u: u32) -> u32 {
    return min(CW, part_layer(i).width - u * CW);
}

// The item in slot q of thread lid of `part` (see PACKED).
fn item_index(part: u32, lid: u32, q: u32) -> u32 {
    if (PACKED == 1u) {
        return roles.slot[(part * ITEMS + q) * T + lid];
    }
    return lid + q * T;
}

// Work item g: units first (K slice 0, done by the unit's owner), then the extra items.
// Past the last item: an empty slice.
fn decode(g: u32, replica: u32) -> Item {
    var it = Item(0u, 0u, 0u, 0u, 0u, 1u, g);
    if (g < role.n_units) {
        let c = unit(g);
        let P = part_layer(c.x);
        let L = entry(c.x, replica);
        it = Item(L.w + role.col0 + c.y * CW, L.n_in, 0u, min(P.slice_len, L.n_out), P.post_base,
                  unit_width(c.x, c.y), g);
    } else if (g < role.n_units + role.n_extra) {
        let e = g - role.n_units;
        let i = layer_of(e, true);
        let P = part_layer(i);
        let L = entry(i, replica);
        let t = e - P.extra_base;
        let u = t % P.units;
        let k0 = (1u + t / P.units) * P.slice_len;
        it = Item(L.w + role.col0 + u * CW, L.n_in, k0, min(k0 + P.slice_len, L.n_out),
                  P.post_base, unit_width(i, u), g);
    }
    return it;
}

// sum over k in [k0, k1) of post[p + k] * W[k, j + x], for every row of the block and every
// column x < CW of the unit (accumulator x * RB + b); `down` walks the chunks of U from the top
// (see ZIGZAG). A column past the unit's m reads column m - 1's weights (never stored).
fn product(it: Item, down: bool) -> array<RowVec, RBW> {
    var acc: array<RowVec, RBW>;
    let full = (it.k1 - it.k0) / U;
    let tail = it.k0 + full * U;
    let last = it.m - 1u;
    if (down) {
        for (var k = it.k1; k > tail; k--) {
            var w: array<f32, CW>;
//!unroll x < CW
            w[{x}] = weights[it.w + min({x}, last) + (k - 1u) * it.n];
//!end
//!unroll x < CW
//!unroll b < RB
            acc[{x} * RB + {b}] = fma(post[(it.p + k - 1u) * RB + {b}], RowVec(w[{x}]), acc[{x} * RB + {b}]);
//!end
//!end
        }
    }
    for (var c = 0u; c < full; c++) {
        let k = it.k0 + select(c, full - 1u - c, down) * U;
        var w: array<f32, UW>;
//!unroll u < U
//!unroll x < CW
        w[{u} * CW + {x}] = weights[it.w + min({x}, last) + (k + {u}) * it.n];
//!end
//!end
//!unroll u < U
//!unroll x < CW
//!unroll b < RB
        acc[{x} * RB + {b}] = fma(post[(it.p + k + {u}) * RB + {b}], RowVec(w[{u} * CW + {x}]), acc[{x} * RB + {b}]);
//!end
//!end
//!end
    }
    if (!down) {
        for (var k = tail; k < it.k1; k++) {
            var w: array<f32, CW>;
//!unroll x < CW
            w[{x}] = weights[it.w + min({x}, last) + k * it.n];
//!end
//!unroll x < CW
//!unroll b < RB
            acc[{x} * RB + {b}] = fma(post[(it.p + k) * RB + {b}], RowVec(w[{x}]), acc[{x} * RB + {b}]);
//!end
//!end
        }
    }
    return acc;
}

// product() from weights kept in registers (CACHE == 1, host-generated, only with CW == 1: every
// thread has one item of at most WC weights, `wc`, zero past its slice; the input index is
// kept in `post`).
fn product_cached(it: Item, wc: array<f32, WC>) -> array<RowVec, RBW> {
    var acc: array<RowVec, RBW>;
    let last = POST_LEN - 1u;
//!unroll k < WC
//!unroll b < RB
    acc[{b}] = fma(post[min(it.p + it.k0 + {k}, last) * RB + {b}], RowVec(wc[{k}]), acc[{b}]);
//!end
//!end
    return acc;
}

fn store_partial(e: u32, acc: array<RowVec, RBW>) {
//!unroll x < RBW
    partial[e * RBW + {x}] = acc[{x}];
//!end
}

// A lower part's wait (one thread) until the block's upper part has posted `n` steps' inputs;
// one that gives up raises flag[0] (the relaxation is then reported wrong).
fn wait_posted(block: u32, n: u32) {
    for (var i = 0u; i < pass_.spin_limit; i++) {
        if (atomicLoad(&flag[1u + block]) >= n) {
            return;
        }
    }
    atomicMax(&flag[0], 2u);
}

// The upper part posts column `col` of the lowest relaxed layer's input at step s: r * f' of its
// rows.
fn publish(s: u32, replica: u32, row0: u32, rows: u32, col: u32, r: array<RowVec, RB>,
           f: array<RowVec, RB>) {
    let n = entry(0u, replica).n_in;
//!unroll row < R
    if ({row} < rows) {
        let v = rv_at(r[{row} / RV] * f[{row} / RV], {row} % RV);
        atomicStore(&flag[posted_at(s, replica, row0 + {row}, n) + col], bitcast<u32>(v));
    }
//!end
}

// Where in `flag` the input of row `row` of the lowest relaxed layer at step s is posted (k = 0).
fn posted_at(s: u32, replica: u32, row: u32, k_len: u32) -> u32 {
    let blocks = (pass_.batch + R - 1u) / R * pass_.replicas;
    return 1u + 2u * blocks + (s * pass_.replicas * pass_.batch + replica * pass_.batch + row) * k_len;
}

// A lower part's loads of the input of step s (its only layer's): NEXT (host-generated) values
// of `post` per thread, issued one step ahead so that they arrive while the step computes.
fn fetch_posted(s: u32, replica: u32, row0: u32, rows: u32, lid: u32) -> array<RowVec, NEXT> {
    var v: array<RowVec, NEXT>;
    let k_len = entry(0u, replica).n_out;
//!unroll q < NEXT
    {
        let e = lid + {q} * T;
        if (e < k_len * RB) {
            let k = e / RB;
            let b = e % RB;
            for (var c = 0u; c < RV; c++) {
                let row = b * RV + c;
                if (row < rows) {
                    let at = posted_at(s, replica, row0 + row, k_len) + k;
                    v[{q}] = rv_with(v[{q}], c, bitcast<f32>(atomicLoad(&flag[at])));
                }
            }
        }
    }
//!end
    return v;
}

// ... and their place in `post` (post_base 0; entry e is post[k * RB + b]).
fn store_posted(v: array<RowVec, NEXT>, replica: u32, lid: u32) {
    let k_len = entry(0u, replica).n_out;
//!unroll q < NEXT
    if (lid + {q} * T < k_len * RB) {
        post[lid + {q} * T] = v[{q}];
    }
//!end
}

@compute @workgroup_size(T)
fn relax_resident(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let per_replica = (pass_.batch + R - 1u) / R;
    let blocks = per_replica * pass_.replicas;
    let group = linear_group(wid, nwg);
    // Parts follow one another: every block's upper part first.
    let part = pass_.part0 + group / blocks;
    let block = group % blocks;
    let replica = block / per_replica;
    if (part >= pass_.part_end) {
        return;
    }
    role = roles.part[part];
    // Workgroup-uniform (a read-only load at a uniform index): only the upper part fences.
    let publishes = roles.part[part].publish == 1u;
    let row0 = (block % per_replica) * R;
    let rows = min(R, pass_.batch - row0);
    let eta = pass_.rate;
    let deriv = (pass_.flags & FLAG_NO_RELAX_DERIV) == 0u;
    let src = pass_.src;
    let n_units = role.n_units;
    let n_items = n_units + role.n_extra;
    let steps = pass_.steps;
    let poller = lid == T - 1u;

    // This thread's items, decoded once for every step.
    var items: array<Item, ITEMS>;
//!unroll q < ITEMS
    items[{q}] = decode(item_index(part, lid, {q}), replica);
//!end
    // With CACHE, its weights, loaded once for every step.
    var wc: array<f32, WC>;
    if (CACHE == 1u) {
        let it = items[0];
//!unroll k < WC
        if (it.k0 + {k} < it.k1) {
            wc[{k}] = weights[it.w + (it.k0 + {k}) * it.n];
        }
//!end
    }

    // The owned units: (layer, unit, columns), their columns' state, and f'_{l-1} there (what
    // turns r_l into the input of the product of the layer below; zero for the lowest relaxed
    // layer, which feeds none here). Column x of owned unit q is entry q * CW + x.
    var own: array<vec3<u32>, OWN>;
    var r_own: array<array<RowVec, RB>, OWNW>;
    var f_own: array<array<RowVec, RB>, OWNW>;
    var s_own: array<array<RowVec, RBW>, OWN>;
//!unroll q < OWN
    if (lid + {q} * T < n_units) {
        let c = unit(lid + {q} * T);
        own[{q}] = vec3<u32>(c.x, c.y, unit_width(c.x, c.y));
        let L = entry(c.x, replica);
        // Feeds a layer below: in this part, or (the upper part's first) in the lower parts.
        let feeds = c.x > 0u || role.publish == 1u;
        let below = layers[(pass_.first + role.layer0 + c.x - select(0u, 1u, feeds)) * pass_.replicas + replica];
//!unroll x < CW
        if ({x} < own[{q}].z) {
            let col = c.y * CW + {x};
            let j = role.col0 + col;
//!unroll row < R
            if ({row} < rows) {
                let r = read_r(src, L.r_in + (row0 + {row}) * L.n_in + j);
                r_own[{q} * CW + {x}][{row} / RV] = rv_with(r_own[{q} * CW + {x}][{row} / RV], {row} % RV, r);
                if (feeds) {
                    var f = 1.0;
                    if (deriv) {
                        f = fprime[below.fp + (row0 + {row}) * below.n_out + j];
                    }
                    f_own[{q} * CW + {x}][{row} / RV] = rv_with(f_own[{q} * CW + {x}][{row} / RV], {row} % RV, f);
                }
            }
//!end
            if (c.x > 0u) {
                let pb = part_layer(c.x - 1u).post_base;
//!unroll b < RB
                post[(pb + col) * RB + {b}] = r_own[{q} * CW + {x}][{b}] * f_own[{q} * CW + {x}][{b}];
//!end
            } else if (role.publish == 1u) {
                // Step 0's input of the lower parts.
                publish(0u, replica, row0, rows, col, r_own[{q} * CW + {x}], f_own[{q} * CW + {x}]);
            }
        }
//!end
    }
//!end
    // The top layer's input (the clamped output, or a layer this dispatch does not relax)
    // stays fixed; a lower part's comes from the upper part, step by step.
    if (role.consume == 0u) {
        let top = role.count - 1u;
        let L = entry(top, replica);
        let pb = part_layer(top).post_base;
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
    } else if (poller) {
        // Step 0's input, and step 1's (loaded while step 0 computes).
        wait_posted(block, min(2u, steps));
    }
    if (PARTS > 1u && publishes) {
        storageBarrier();
        if (lid == 0u) {
            atomicStore(&flag[1u + block], 1u);
        }
    }
    workgroupBarrier();
    if (role.consume == 1u) {
        store_posted(fetch_posted(0u, replica, row0, rows, lid), replica, lid);
    }
    if (PARTS > 1u) {
        workgroupBarrier();
    }

    for (var s = 0u; s < steps; s++) {
        // A lower part loads the next step's input (posted: its poller saw it a step ago), and
        // its poller waits for the one after while the others work.
        var next: array<RowVec, NEXT>;
        if (role.consume == 1u && s + 1u < steps) {
            next = fetch_posted(s + 1u, replica, row0, rows, lid);
        }
        if (role.consume == 1u && poller && s + 2u < steps) {
            wait_posted(block, s + 3u);
        }
        // Every item's product from the previous step's post.
        let down = ZIGZAG == 1u && (s & 1u) == 1u;
//!unroll q < OWN
        {
            let g = items[{q}].g;
            var acc: array<RowVec, RBW>;
            if (CACHE == 1u) {
                acc = product_cached(items[{q}], wc);
            } else {
                acc = product(items[{q}], down);
            }
            if (g < n_units) {
                s_own[{q}] = acc;
            } else if (g < n_items) {
                store_partial(g - n_units, acc);
            }
        }
//!end
//!unroll q < EXTRA_ITEMS
        {
            let g = items[OWN + {q}].g;
            if (g < n_items) {
                store_partial(g - n_units, product(items[OWN + {q}], down));
            }
        }
//!end
        workgroupBarrier();
        // Each owner adds its unit's other slices, updates its columns and posts them below.
//!unroll q < OWN
        if (lid + {q} * T < n_units) {
            let c = own[{q}];
            let P = part_layer(c.x);
            var sum = s_own[{q}];
            for (var sl = 1u; sl < P.slices; sl++) {
                let e = P.extra_base + (sl - 1u) * P.units + c.y;
//!unroll x < RBW
                sum[{x}] += partial[e * RBW + {x}];
//!end
            }
//!unroll x < CW
            if ({x} < c.z) {
                let col = c.y * CW + {x};
//!unroll b < RB
                r_own[{q} * CW + {x}][{b}] = (1.0 - eta) * r_own[{q} * CW + {x}][{b}] + eta * sum[{x} * RB + {b}];
//!end
                if (c.x > 0u) {
                    let pb = part_layer(c.x - 1u).post_base;
//!unroll b < RB
                    post[(pb + col) * RB + {b}] = r_own[{q} * CW + {x}][{b}] * f_own[{q} * CW + {x}][{b}];
//!end
                } else if (role.publish == 1u && s + 1u < steps) {
                    publish(s + 1u, replica, row0, rows, col, r_own[{q} * CW + {x}], f_own[{q} * CW + {x}]);
                }
            }
//!end
        }
//!end
        // A lower part's next input, now that every product has read this one.
        if (role.consume == 1u && s + 1u < steps) {
            store_posted(next, replica, lid);
        }
        if (PARTS > 1u && publishes) {
            storageBarrier();
            if (lid == 0u && s + 1u < steps) {
                atomicStore(&flag[1u + block], s + 2u);
            }
        }
        workgroupBarrier();
    }

    let dst = (src + steps) % 2u;
//!unroll q < OWN
    if (lid + {q} * T < n_units) {
        let c = own[{q}];
        let L = entry(c.x, replica);
//!unroll x < CW
        if ({x} < c.z) {
            let j = role.col0 + c.y * CW + {x};
//!unroll row < R
            if ({row} < rows) {
                let v = rv_at(r_own[{q} * CW + {x}][{row} / RV], {row} % RV);
                write_r(dst, L.r_in + (row0 + {row}) * L.n_in + j, v);
            }
//!end
        }
//!end
    }
//!end
    // The block's last lower part to finish zeroes its counts for the next dispatch (the upper
    // part posted its last step before any lower part could finish).
    if (role.consume == 1u && poller) {
        let done = atomicAdd(&flag[1u + blocks + block], 1u) + 1u;
        if (done == PARTS - 1u) {
            atomicStore(&flag[1u + block], 0u);
            atomicStore(&flag[1u + blocks + block], 0u);
        }
    }
    // Lavapipe's loop budget (common.wgsl).
    if (loop_budget_spent(pass_.canary)) {
        atomicMax(&flag[0], 1u);
    }
}
