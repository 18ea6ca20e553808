// Several Jacobi relaxation steps in one dispatch. While the weights are frozen, a sample's
// relaxation depends on that sample alone, so a workgroup that owns ROWS samples can run step
// after step with workgroup barriers only, instead of one dispatch per step. Each step is the
// same as relax.wgsl's, for every layer in [first, first + count):
//   r_l <- (1 - eta) r_l + eta (r_{l+1} * f'_l) W_l
// The cost: every workgroup reads all of W every step (the tiled kernel shares each W tile
// among the rows of its tile), so whether this pays depends on the model and the GPU; `arelax
// bench --relax-kernel` measures both.
//
// State ping-pongs between r_a and r_b: step s reads buffer (src + s) % 2 and writes the other,
// so after `steps` steps the result is where the tiled kernel would leave it. Each thread owns
// output columns lid, lid + 256, ... (up to COLS of them, so hidden widths up to 256 * COLS; the
// host checks) for all ROWS samples. With replicas (see engine/layout.rs) the workgroups of each
// replica follow one another, and layer l of replica k is table entry l * replicas + k.

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
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

const ROWS: u32 = 4u;
const COLS: u32 = 4u;
const KC: u32 = 128u;

@group(0) @binding(0) var<uniform> pass_: ResidentPass;
@group(0) @binding(1) var<storage, read> layers: array<Layer>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<storage, read> fprime: array<f32>;
@group(0) @binding(4) var<storage, read_write> r_a: array<f32>;
@group(0) @binding(5) var<storage, read_write> r_b: array<f32>;
// [0]: nonzero once a dispatch's loops were cut short (below).
@group(0) @binding(6) var<storage, read_write> flag: array<atomic<u32>>;

// The post-synaptic signal of a K chunk for this workgroup's rows: [ROWS][KC].
var<workgroup> post: array<f32, ROWS * KC>;

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

@compute @workgroup_size(256)
fn relax_resident(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let per_replica = (pass_.batch + ROWS - 1u) / ROWS;
    let group = linear_group(wid, nwg);
    let replica = group / per_replica;
    let row0 = (group % per_replica) * ROWS;
    if (replica >= pass_.replicas) {
        return;
    }
    let rows = min(ROWS, pass_.batch - row0);
    let eta = pass_.rate;
    let deriv = (pass_.flags & FLAG_NO_RELAX_DERIV) == 0u;
    for (var s = 0u; s < pass_.steps; s++) {
        let src = (pass_.src + s) % 2u;
        for (var i = 0u; i < pass_.count; i++) {
            let L = layers[(pass_.first + i) * pass_.replicas + replica];
            var acc: array<array<f32, ROWS>, COLS>;
            for (var k0 = 0u; k0 < L.n_out; k0 += KC) {
                // Stage r_{l+1} * f'_l for the chunk; rows past the batch stage zeros.
                for (var e = lid; e < ROWS * KC; e += 256u) {
                    let row = e / KC;
                    let k = k0 + e % KC;
                    var v = 0.0;
                    if (row < rows && k < L.n_out) {
                        let at = (row0 + row) * L.n_out + k;
                        v = read_r(src, L.r_out + at);
                        if (deriv) {
                            v *= fprime[L.fp + at];
                        }
                    }
                    post[e] = v;
                }
                workgroupBarrier();
                let kn = min(KC, L.n_out - k0);
                // Unrolled (src/gpu/shader.rs), so that acc's indices are constants.
//!unroll c < COLS
                if (lid + {c} * 256u < L.n_in) {
                    for (var k = 0u; k < kn; k++) {
                        let w = weights[L.w + (k0 + k) * L.n_in + lid + {c} * 256u];
//!unroll row < ROWS
                        acc[{c}][{row}] = fma(post[{row} * KC + k], w, acc[{c}][{row}]);
//!end
                    }
                }
//!end
                workgroupBarrier();
            }
//!unroll c < COLS
            if (lid + {c} * 256u < L.n_in) {
//!unroll row < ROWS
                if ({row} < rows) {
                    let idx = L.r_in + (row0 + {row}) * L.n_in + lid + {c} * 256u;
                    let old = read_r(src, idx);
                    write_r(1u - src, idx, (1.0 - eta) * old + eta * acc[{c}][{row}]);
                }
//!end
            }
//!end
        }
        // The next step reads what this one wrote (only this workgroup's rows).
        storageBarrier();
    }
    // Lavapipe's loop budget (common.wgsl).
    if (loop_budget_spent(pass_.canary)) {
        atomicMax(&flag[0], 1u);
    }
}
