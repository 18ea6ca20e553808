// Plain SGD over a whole packed parameter buffer: p <- p - lr (grad + decay p).
// `decay` is zero except for the learned-backward-weights variant, where it aligns psi with W.
// An MLP's training step does the same inside its gradient dispatch instead (grad.wgsl).

//!include common.wgsl

struct SgdPass {
    count: u32,
    lr: f32,
    decay: f32,
    pad0: u32,
}

@group(0) @binding(0) var<uniform> sp: SgdPass;
@group(0) @binding(1) var<storage, read> grads: array<f32>;
@group(0) @binding(2) var<storage, read_write> params: array<f32>;

@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= sp.count) {
        return;
    }
    params[i] = sgd_step(params[i], grads[i], sp.lr, sp.decay);
}
