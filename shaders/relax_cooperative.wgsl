// Many Jacobi relaxation steps in one dispatch: relax.wgsl's tiles, but computed by a fixed set
// of workgroups that meet at a grid-wide barrier between steps instead of at a dispatch
// boundary. Each step is the same as relax.wgsl's, for every layer in [first, first + count):
//   r_l <- (1 - eta) r_l + eta (r_{l+1} * f'_l) W_l
// with the same tile shape, so the same sums in the same order: the result equals the tiled
// kernel's bit for bit.
//
// Workgroup g computes tiles g, g + groups, g + 2 groups, ... of every step. The barrier only
// works if all `groups` workgroups run at the same time, which WebGPU does not promise: the host
// keeps `groups` small, and a workgroup that has waited `spin_limit` polls gives up and raises
// sync[0], after which every workgroup leaves at its next barrier and the host reports an error
// instead of a result (never a hang). A driver that cuts long loops short raises it too.
//
// WGSL's barriers order memory within a workgroup only, so the state crossing workgroups is
// accessed only through atomics (relaxed loads and stores of the f32 bits, which read the
// device's coherent level), published by the barrier's counter. wgpu compiles storageBarrier to a
// device-scope acquire-release barrier on Vulkan, which orders them around the counter.
//
// State ping-pongs between r_a and r_b: step s reads buffer (src + s) % 2 and writes the other.
// sync[0] is the failure flag (see FAILED_*), sync[1] the barrier counter: every workgroup adds 1 per barrier,
// and a barrier is passed once the count reaches the next multiple of `groups` (the host zeroes
// it before each relaxation; no workgroup can arrive at a barrier before all have arrived at the
// previous one, so the count needs no reset between barriers or dispatches).

//!include common.wgsl

struct CooperativePass {
    first: u32,
    count: u32,
    batch: u32,
    flags: u32,
    rate: f32,
    steps: u32,
    src: u32,        // which of r_a (0) or r_b (1) the first step reads
    groups: u32,     // workgroups in the dispatch
    tiles: u32,      // tiles per step
    spin_limit: u32, // polls of the counter before giving up
    canary: u32,     // 2 (see loop_budget_spent in common.wgsl)
    pad0: u32,
}

// sync[0]: 0, or why the relaxation is wrong.
const FAILED_BARRIER: u32 = 1u;
const FAILED_LOOP_BUDGET: u32 = 2u;
const FAILED_ELSEWHERE: u32 = 3u; // another workgroup failed (not stored)

@group(0) @binding(0) var<uniform> pass_: CooperativePass;
@group(0) @binding(1) var<storage, read> layers: array<Layer>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<storage, read> fprime: array<f32>;
@group(0) @binding(4) var<storage, read_write> r_a: array<atomic<u32>>;
@group(0) @binding(5) var<storage, read_write> r_b: array<atomic<u32>>;
@group(0) @binding(6) var<storage, read_write> sync: array<atomic<u32>>;

var<workgroup> failed: u32;
// The buffer the current step reads.
var<private> reading: u32;

fn read_r(which: u32, i: u32) -> f32 {
    if (which == 0u) {
        return bitcast<f32>(atomicLoad(&r_a[i]));
    }
    return bitcast<f32>(atomicLoad(&r_b[i]));
}

fn write_r(which: u32, i: u32, v: f32) {
    if (which == 0u) {
        atomicStore(&r_a[i], bitcast<u32>(v));
    } else {
        atomicStore(&r_b[i], bitcast<u32>(v));
    }
}

fn read_state(i: u32) -> f32 {
    return read_r(reading, i);
}

//!include relax_operands.wgsl
//!include gemm_tile.wgsl

// Waits until every workgroup has arrived; false if the wait failed (here or in another
// workgroup), in which case the caller must leave. Failure is the default: a poll loop that ends
// without seeing the count (the spin limit, or a driver that cuts long loops short) fails.
fn grid_barrier(lid: u32) -> bool {
    storageBarrier();
    if (lid == 0u) {
        let counter = &sync[1];
        let arrivals = (atomicAdd(counter, 1u) / pass_.groups + 1u) * pass_.groups;
        // Until the loop says otherwise, the driver cut it short.
        var why = FAILED_LOOP_BUDGET;
        for (var spins = 0u; spins < pass_.spin_limit; spins++) {
            if (atomicLoad(counter) >= arrivals) {
                why = 0u;
                break;
            }
            if (atomicLoad(&sync[0]) != 0u) {
                why = FAILED_ELSEWHERE;
                break;
            }
            if (spins + 1u == pass_.spin_limit) {
                why = FAILED_BARRIER;
            }
        }
        failed = why;
        if (why == FAILED_BARRIER || why == FAILED_LOOP_BUDGET) {
            atomicMax(&sync[0], why);
        }
    }
    let ok = workgroupUniformLoad(&failed) == 0u;
    storageBarrier();
    return ok;
}

@compute @workgroup_size(THREADS)
fn relax_cooperative(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let group = linear_group(wid, nwg);
    let eta = pass_.rate;
    for (var s = 0u; s < pass_.steps; s++) {
        reading = (pass_.src + s) % 2u;
        for (var tile = group; tile < pass_.tiles; tile += pass_.groups) {
            let t = locate_tile(pass_.first, pass_.count, tile);
            let acc = gemm_tile(t, lid);
            let L = layers[t.layer];
//!unroll i < RM
            {
                let m = t.m0 + out_row(lid, {i});
//!unroll j < RN
                {
                    let n = t.n0 + out_col(lid, {j});
                    if (owns_output(lid) && m < t.m && n < t.n) {
                        let idx = L.r_in + m * L.n_in + n;
                        let old = read_r(reading, idx);
                        write_r(1u - reading, idx, (1.0 - eta) * old + eta * acc[{i}][{j} / 4u][{j} % 4u]);
                    }
                }
//!end
            }
//!end
        }
        // The next step reads what every workgroup wrote; the dispatch's end orders the last.
        if (s + 1u < pass_.steps && !grid_barrier(lid)) {
            return;
        }
    }
    // Lavapipe's loop budget (common.wgsl).
    if (loop_budget_spent(pass_.canary)) {
        atomicMax(&sync[0], FAILED_LOOP_BUDGET);
    }
}
