// The shared tiled matrix product. Each 256-thread workgroup computes one 64x64 output tile of
// A[M,K] * B[K,N]; each thread owns a 4x4 block held in registers. The including kernel supplies
// load_a(l, m, k) and load_b(l, k, n) (which fuse prologues such as r * f') and bounds checks
// happen here, so sizes need not be multiples of the tile.

const TS: u32 = 64u;
const KT: u32 = 16u;

var<workgroup> tile_a: array<f32, 1024>; // [KT][TS], k-major
var<workgroup> tile_b: array<f32, 1024>; // [KT][TS], k-major

struct Tile {
    layer: u32,
    m0: u32,
    n0: u32,
    m: u32,
    n: u32,
    k: u32,
}

fn gemm_tile(t: Tile, lid: u32) -> array<vec4<f32>, 4> {
    var acc: array<vec4<f32>, 4>;
    let tm = block_row(lid);
    let tn = block_col(lid);
    for (var k0 = 0u; k0 < t.k; k0 += KT) {
        for (var s = 0u; s < 4u; s++) {
            let e = lid + s * 256u;
            // A: consecutive threads walk k (contiguous in row-major A).
            let am = e / KT;
            let ak = e % KT;
            var va = 0.0;
            if (t.m0 + am < t.m && k0 + ak < t.k) {
                va = load_a(t.layer, t.m0 + am, k0 + ak);
            }
            tile_a[ak * TS + am] = va;
            // B: consecutive threads walk n (contiguous in row-major B).
            let bk = e / TS;
            let bn = e % TS;
            var vb = 0.0;
            if (k0 + bk < t.k && t.n0 + bn < t.n) {
                vb = load_b(t.layer, k0 + bk, t.n0 + bn);
            }
            tile_b[bk * TS + bn] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < KT; kk++) {
            let a = vec4<f32>(tile_a[kk * TS + tm], tile_a[kk * TS + tm + 1u],
                              tile_a[kk * TS + tm + 2u], tile_a[kk * TS + tm + 3u]);
            let b = vec4<f32>(tile_b[kk * TS + tn], tile_b[kk * TS + tn + 1u],
                              tile_b[kk * TS + tn + 2u], tile_b[kk * TS + tn + 3u]);
            acc[0] += a.x * b;
            acc[1] += a.y * b;
            acc[2] += a.z * b;
            acc[3] += a.w * b;
        }
        workgroupBarrier();
    }
    return acc;
}

// Finds which layer (from pass.first) and which tile a workgroup owns. Layers are walked in
// order, each contributing ceil(M/TS) * ceil(N/TS) tiles; dims(l) gives (M, N, K) for layer l.
fn locate_tile(first: u32, count: u32, group: u32) -> Tile {
    var start = 0u;
    var t = Tile(first + count, 0u, 0u, 0u, 0u, 0u);
    for (var i = 0u; i < count; i++) {
        let l = first + i;
        let d = dims(l);
        let tiles_n = (d.y + TS - 1u) / TS;
        let tiles = ((d.x + TS - 1u) / TS) * tiles_n;
        if (group < start + tiles) {
            let local = group - start;
            t = Tile(l, (local / tiles_n) * TS, (local % tiles_n) * TS, d.x, d.y, d.z);
            break;
        }
        start += tiles;
    }
    return t;
}

// The first row and column of this thread's 4x4 block within its tile.
fn block_row(lid: u32) -> u32 { return (lid / 16u) * 4u; }
fn block_col(lid: u32) -> u32 { return (lid % 16u) * 4u; }
