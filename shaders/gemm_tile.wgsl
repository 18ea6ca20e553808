// The shared tiled matrix product A[M,K] * B[K,N]. One workgroup computes a TM x TN output tile;
// each thread an RM x RN block held in registers, as 4x4 chunks spread TM/CM rows (TN/CN
// columns) apart so that its workgroup-memory reads are vec4s without bank conflicts.
//
// With KS > 1 the workgroup is KS groups of threads that split K between them (each takes every
// KS-th slice of KT), shortening the serial chain of slices for products with few output tiles;
// the groups' partial sums are added pairwise in workgroup memory at the end (log2 KS rounds),
// and only group 0 holds the result (see owns_output).
//
// The host prepends the shape (TM, TN, RM, RN, KT, KS; see src/gpu/tile.rs), so every loop bound
// is a constant. The including kernel supplies load_a(l, m, k), load_b(l, k, n) (which may fuse
// prologues such as r * f'), dims(l) = (M, N, K), and A_K_CONTIGUOUS / B_K_CONTIGUOUS (whether
// consecutive k are adjacent in memory), which decide how threads walk each operand so that
// global loads coalesce. Bounds are checked here: sizes need not be multiples of the tile.
//
// Each K slice is fetched into registers one iteration ahead, so global-load latency overlaps
// the arithmetic on the slice staged in workgroup memory. The loops over a thread's registers
// are `//!unroll` blocks (see src/gpu/shader.rs), so their array indices are constants. Kernels
// that include this file unroll their epilogue's loops over `acc` too.

// Threads per K group, and in the workgroup.
const TT: u32 = (TM / RM) * (TN / RN);
const THREADS: u32 = TT * KS;
const CM: u32 = RM / 4u;
const CN: u32 = RN / 4u;
const LOADS_A: u32 = TM * KT / TT;
const LOADS_B: u32 = TN * KT / TT;
// Rows of the staged slices are padded by one vec4 to spread stores across banks.
const SA: u32 = TM + 4u;
const SB: u32 = TN + 4u;

var<workgroup> tile_a: array<vec4<f32>, KS * SA * KT / 4u>; // per group [KT][SA], k-major
var<workgroup> tile_b: array<vec4<f32>, KS * SB * KT / 4u>; // per group [KT][SB], k-major
// Scratch for reductions in epilogues (two values per thread).
var<workgroup> reduce_buf: array<f32, 2u * THREADS>;

struct Tile {
    layer: u32,
    m0: u32,
    n0: u32,
    m: u32,
    n: u32,
    k: u32,  // the end of its K range
    kb: u32, // the start (0 but for a chunk of a split product, see grad.wgsl)
}

// The split-K reduction parks partial tiles of TILE_VECS vec4s in the staging memory, read as
// one address space: tile_a, then tile_b (so a slot may span both).
const TILE_VECS: u32 = TM * TN / 4u;
const LEN_A: u32 = KS * SA * KT / 4u;

fn park(slot: u32, v: u32, x: vec4<f32>) {
    let g = slot * TILE_VECS + v;
    if (g < LEN_A) {
        tile_a[g] = x;
    } else {
        tile_b[g - LEN_A] = x;
    }
}

fn parked(slot: u32, v: u32) -> vec4<f32> {
    let g = slot * TILE_VECS + v;
    if (g < LEN_A) {
        return tile_a[g];
    }
    return tile_b[g - LEN_A];
}

// Position (row, k) inside the A slice of the e-th staged element.
fn a_coords(e: u32) -> vec2<u32> {
    if (A_K_CONTIGUOUS) {
        return vec2<u32>(e / KT, e % KT);
    }
    return vec2<u32>(e % TM, e / TM);
}

// Position (k, column) inside the B slice of the e-th staged element.
fn b_coords(e: u32) -> vec2<u32> {
    if (B_K_CONTIGUOUS) {
        return vec2<u32>(e % KT, e / KT);
    }
    return vec2<u32>(e / TN, e % TN);
}

fn fetch_a(t: Tile, k0: u32, tl: u32, s: u32) -> f32 {
    let c = a_coords(tl + s * TT);
    if (t.m0 + c.x < t.m && k0 + c.y < t.k) {
        return load_a(t.layer, t.m0 + c.x, k0 + c.y);
    }
    return 0.0;
}

fn fetch_b(t: Tile, k0: u32, tl: u32, s: u32) -> f32 {
    let c = b_coords(tl + s * TT);
    if (k0 + c.x < t.k && t.n0 + c.y < t.n) {
        return load_b(t.layer, k0 + c.x, t.n0 + c.y);
    }
    return 0.0;
}

fn gemm_tile(t: Tile, lid: u32) -> array<array<vec4<f32>, CN>, RM> {
    var acc: array<array<vec4<f32>, CN>, RM>;
    var next_a: array<f32, LOADS_A>;
    var next_b: array<f32, LOADS_B>;
    let group = lid / TT;
    let tl = lid % TT;
    let row0 = (tl / (TN / RN)) * 4u;
    let col0 = (tl % (TN / RN)) * 4u;
    // This group's slices start at k0 + ko; its staging area at ga (A) and gb (B), in floats.
    let ko = group * KT;
    let ga = group * SA * KT;
    let gb = group * SB * KT;
//!unroll s < LOADS_A
    next_a[{s}] = fetch_a(t, t.kb + ko, tl, {s});
//!end
//!unroll s < LOADS_B
    next_b[{s}] = fetch_b(t, t.kb + ko, tl, {s});
//!end
    for (var k0 = t.kb; k0 < t.k; k0 += KT * KS) {
//!unroll s < LOADS_A
        {
            let c = a_coords(tl + {s} * TT);
            let i = ga + c.y * SA + c.x;
            tile_a[i / 4u][i % 4u] = next_a[{s}];
        }
//!end
//!unroll s < LOADS_B
        {
            let c = b_coords(tl + {s} * TT);
            let i = gb + c.x * SB + c.y;
            tile_b[i / 4u][i % 4u] = next_b[{s}];
        }
//!end
        workgroupBarrier();
        // Past the end, fetch returns zeros: a group whose slice runs out before the others'
        // must stage zeros, not its previous slice again.
        let k1 = k0 + KT * KS + ko;
//!unroll s < LOADS_A
        next_a[{s}] = fetch_a(t, k1, tl, {s});
//!end
//!unroll s < LOADS_B
        next_b[{s}] = fetch_b(t, k1, tl, {s});
//!end
        // The staged slice, fully unrolled: every register-array index is a constant.
//!unroll kk < KT
        {
            var a: array<vec4<f32>, CM>;
            var b: array<vec4<f32>, CN>;
//!unroll c < CM
            a[{c}] = tile_a[(ga + {kk} * SA + {c} * (TM / CM) + row0) / 4u];
//!end
//!unroll c < CN
            b[{c}] = tile_b[(gb + {kk} * SB + {c} * (TN / CN) + col0) / 4u];
//!end
//!unroll i < RM
//!unroll c < CN
            acc[{i}][{c}] = fma(vec4<f32>(a[{i} / 4u][{i} % 4u]), b[{c}], acc[{i}][{c}]);
//!end
//!end
        }
//!end
        workgroupBarrier();
    }
    if (KS > 1u) {
        // The groups' partial tiles are added pairwise, log2(KS) rounds: in the round of half h,
        // groups h..2h-1 park their tiles in the (now free) staging memory and groups 0..h-1 add
        // them. Slots of TM * TN floats fill tile_a, then tile_b (the host checks they fit).
        for (var h = KS / 2u; h > 0u; h >>= 1u) {
            if (group >= h && group < 2u * h) {
//!unroll i < RM
//!unroll c < CN
                park(group - h, (out_row(tl, {i}) * TN + {c} * (TN / CN) + col0) / 4u, acc[{i}][{c}]);
//!end
//!end
            }
            workgroupBarrier();
            if (group < h) {
//!unroll i < RM
//!unroll c < CN
                acc[{i}][{c}] += parked(group, (out_row(tl, {i}) * TN + {c} * (TN / CN) + col0) / 4u);
//!end
//!end
            }
            workgroupBarrier();
        }
    }
    return acc;
}

// Whether this thread holds final outputs (with KS > 1 only group 0 does).
fn owns_output(lid: u32) -> bool {
    return lid < TT;
}

// The tile row of this thread's i-th output row, and the tile column of its j-th output column.
fn out_row(lid: u32, i: u32) -> u32 {
    return (i / 4u) * (TM / CM) + ((lid % TT) / (TN / RN)) * 4u + i % 4u;
}
fn out_col(lid: u32, j: u32) -> u32 {
    return (j / 4u) * (TN / CN) + ((lid % TT) % (TN / RN)) * 4u + j % 4u;
}

// Finds which layer (from `first`) and which tile a workgroup owns. Layers are walked in
// order, each contributing ceil(M/TM) * ceil(N/TN) tiles; dims(l) gives (M, N, K) for layer l.
fn locate_tile(first: u32, count: u32, group: u32) -> Tile {
    var start = 0u;
    var t = Tile(first + count, 0u, 0u, 0u, 0u, 0u, 0u);
    for (var i = 0u; i < count; i++) {
        let l = first + i;
        let d = dims(l);
        let tiles_n = (d.y + TN - 1u) / TN;
        let tiles = ((d.x + TM - 1u) / TM) * tiles_n;
        if (group < start + tiles) {
            let local = group - start;
            t = Tile(l, (local / tiles_n) * TM, (local % tiles_n) * TN, d.x, d.y, d.z, 0u);
            break;
        }
        start += tiles;
    }
    return t;
}

// Maximum over the workgroup of two per-thread values, in a fixed order (deterministic).
// Every thread must call it; the results are valid in every thread.
fn workgroup_max2(lid: u32, a: f32, b: f32) -> vec2<f32> {
    reduce_buf[lid] = a;
    reduce_buf[THREADS + lid] = b;
    workgroupBarrier();
    for (var s = THREADS / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            reduce_buf[lid] = max(reduce_buf[lid], reduce_buf[lid + s]);
            reduce_buf[THREADS + lid] = max(reduce_buf[THREADS + lid], reduce_buf[THREADS + lid + s]);
        }
        workgroupBarrier();
    }
    return vec2<f32>(reduce_buf[0], reduce_buf[THREADS]);
}
