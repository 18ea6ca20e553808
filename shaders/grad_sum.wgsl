// The weight gradients of a split product (grad.wgsl with Pass.split = S > 1): each K chunk left
// its partial sums in `parts`, [S][count]; this adds them, chunk 0 first, into `grads`. The
// entry grad_sum_sgd also takes each parameter one SGD step with its gradient (and psi, with
// decay, when FLAG_SGD_FEEDBACK), as grad.wgsl's param_grad_sgd does for an unsplit product.

//!include common.wgsl

struct SumPass {
    count: u32,
    split: u32,
    flags: u32,
    lr: f32,
    decay: f32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> sp: SumPass;
@group(0) @binding(1) var<storage, read> parts: array<f32>;
@group(0) @binding(2) var<storage, read_write> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> feedback: array<f32>;

// Parameter `gid`'s gradient; with `sgd` (a constant at each call) its SGD step too.
fn sum_chunks(gid: vec3<u32>, nwg: vec3<u32>, sgd: bool) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= sp.count) {
        return;
    }
    var s = parts[i];
    for (var c = 1u; c < sp.split; c++) {
        s += parts[c * sp.count + i];
    }
    grads[i] = s;
    if (sgd) {
        params[i] = sgd_step(params[i], s, sp.lr, 0.0);
        if ((sp.flags & FLAG_SGD_FEEDBACK) != 0u) {
            feedback[i] = sgd_step(feedback[i], s, sp.lr, sp.decay);
        }
    }
}

@compute @workgroup_size(256)
fn grad_sum(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    sum_chunks(gid, nwg, false);
}

@compute @workgroup_size(256)
fn grad_sum_sgd(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    sum_chunks(gid, nwg, true);
}
