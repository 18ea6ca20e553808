// Forward of the parameter-free joins, one thread per output element; each table entry is one
// INPUT of a node (x_in, c_in) writing into the node's output (x_out):
//   flatten: copy; add: the first input copies, later ones add (entries run in order, one dispatch
//   per input rank, so there is no race); concat: the input's channels at channel offset aux.

//!include common.wgsl
//!include graph_common.wgsl

@group(0) @binding(0) var<uniform> pass_: Pass;
@group(0) @binding(1) var<storage, read> ops: array<Op>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn join_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let work = claim(gid, nwg);
    if (!work.found) {
        return;
    }
    let o = ops[work.op];
    let local = work.local;
    let in_size = o.c_in * o.h_in * o.w_in;
    let out_size = o.c_out * o.h_out * o.w_out;
    let b = local / in_size;
    let e = local % in_size;
    let v = x[o.x_in + local];
    if (o.kind == KIND_CONCAT) {
        x[o.x_out + b * out_size + o.aux * o.h_in * o.w_in + e] = v;
    } else if (o.kind == KIND_ADD && o.aux2 != 0u) {
        x[o.x_out + local] += v;
    } else {
        x[o.x_out + local] = v;
    }
}
