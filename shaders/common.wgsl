// Shared by every kernel: the per-layer table and the activation functions.
// Conventions (see README): batches are row-major, x_l is [B, n_l]; W_l is [n_{l+1}, n_l].

// One dense layer l, mapping n_in = n_l to n_out = n_{l+1}. Offsets are in f32 elements.
struct Layer {
    n_in: u32,
    n_out: u32,
    w: u32,     // W_l in the parameter (or feedback) buffer
    b: u32,     // b_l in the parameter buffer
    x_in: u32,  // x_l in the activity buffer
    x_out: u32, // x_{l+1} in the activity buffer
    fp: u32,    // f'_l(a_l) in the derivative buffer, [B, n_out]
    r_in: u32,  // r_l in the relaxation buffers (unused for l = 0)
    r_out: u32, // r_{l+1} in the relaxation buffers
    act: u32,   // activation code, see act_f
    pad0: u32,
    pad1: u32,
}

// Per-dispatch settings shared by forward, relax and grad.
struct Pass {
    first: u32,  // first layer this dispatch covers
    count: u32,  // number of consecutive layers
    batch: u32,  // B
    flags: u32,  // bit 0: no derivative in relaxation, bit 1: no derivative in update,
                 // bit 2: adaptive relaxation (convergence tracked in `conv`),
                 // bit 3: forward.wgsl computes f' only, from the relaxation state,
                 // bits 4-6: forward_fused writes the relaxation start, the output error,
                 // with cross-entropy (see forward.wgsl),
                 // bit 8: the SGD step of grad.wgsl's param_grad_sgd (or grad_sum_sgd)
                 // also updates psi
    rate: f32,   // relaxation rate eta (relax); the loss scale (forward_fused's output error);
                 // the lr (grad.wgsl's param_grad_sgd)
    split: u32,  // grad only: K chunks per output tile (0 or 1: none), each leaving its partial
                 // sums part_len floats after the chunk before (grad_sum.wgsl adds them)
    part_len: u32,
    decay: f32,  // param_grad_sgd with FLAG_SGD_FEEDBACK: psi's weight decay
}

const FLAG_NO_RELAX_DERIV: u32 = 1u;
const FLAG_NO_UPDATE_DERIV: u32 = 2u;
const FLAG_ADAPTIVE: u32 = 4u;
const FLAG_FPRIME_ONLY: u32 = 8u;
const FLAG_WRITE_START: u32 = 16u;
const FLAG_OUTPUT_ERROR: u32 = 32u;
const FLAG_LOSS_CE: u32 = 64u;
const FLAG_SGD_FEEDBACK: u32 = 256u;

// One SGD step of one parameter: p - lr (g + decay p). The only place it is written, so the
// step is the same arithmetic wherever it runs (sgd.wgsl, or fused after the gradients).
fn sgd_step(p: f32, g: f32, lr: f32, decay: f32) -> f32 {
    return p - lr * (g + decay * p);
}

const ACT_LINEAR: u32 = 0u;
const ACT_RELU: u32 = 1u;
const ACT_LEAKY: u32 = 2u;
const ACT_TANH: u32 = 3u;
const ACT_SIGMOID: u32 = 4u;
const LEAKY_SLOPE: f32 = 0.01;

fn act_f(code: u32, a: f32) -> f32 {
    switch code {
        case 1u: { return max(a, 0.0); }
        case 2u: { return select(LEAKY_SLOPE * a, a, a > 0.0); }
        // Clamped: tanh(15) rounds to 1 in f32, and some drivers overflow exp for larger inputs.
        case 3u: { return tanh(clamp(a, -15.0, 15.0)); }
        case 4u: { return 1.0 / (1.0 + exp(-a)); }
        default: { return a; }
    }
}

fn act_df(code: u32, a: f32) -> f32 {
    switch code {
        case 1u: { return select(0.0, 1.0, a > 0.0); }
        case 2u: { return select(LEAKY_SLOPE, 1.0, a > 0.0); }
        case 3u: { let t = tanh(clamp(a, -15.0, 15.0)); return 1.0 - t * t; }
        case 4u: { let s = 1.0 / (1.0 + exp(-a)); return s * (1.0 - s); }
        default: { return 1.0; }
    }
}

// Workgroups are laid out in 2-D only to stay under the 65535-per-dimension limit.
fn linear_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Lavapipe (Mesa's llvmpipe) gives each invocation a budget of loop iterations (65535 in Mesa
// 22.3, all loops together) and then ends every loop after one iteration, silently. Run last
// with a `canary` of 2 that the compiler cannot see (a uniform), a loop that comes up short
// shows the budget ran out somewhere before it.
fn loop_budget_spent(canary: u32) -> bool {
    var n = 0u;
    for (var i = 0u; i < canary; i++) {
        n++;
    }
    return n != canary;
}
