// Shared by the graph kernels: one table entry per node (forward, gradients), per dense edge
// (VJPs) or per contribution (combine). A dispatch covers a contiguous section of the table; each entry
// owns `items` work items starting at `start` within that section, so one dispatch serves every
// node of a kind however many there are.

struct Op {
    kind: u32,   // see KIND_*
    act: u32,    // activation code (common.wgsl)
    c_in: u32,   // input (parent) shape [c, h, w] per sample
    h_in: u32,
    w_in: u32,
    c_out: u32,  // output shape of the node
    h_out: u32,
    w_out: u32,
    k: u32,      // window (kernel) size
    stride: u32,
    pad: u32,
    w: u32,      // weights (parameter or feedback buffer)
    b: u32,      // bias
    x_in: u32,   // parent activity, or the contributing child's r (combine)
    x_out: u32,  // node activity
    fp: u32,     // node f'(a)
    r_self: u32, // node relaxation state
    slot: u32,   // edge slot (VJP output) in the slot buffer
    aux: u32,    // max-pool: argmax offset; concat: channel offset of this input; combine: first contribution
    aux2: u32,   // combine: number of contributions
    start: u32,  // first work item within the dispatch's section
    items: u32,  // work items of this entry
    pad0: u32,
    pad1: u32,
}

const KIND_DENSE: u32 = 1u;
const KIND_CONV: u32 = 2u;
const KIND_MAXPOOL: u32 = 3u;
const KIND_AVGPOOL: u32 = 4u;
const KIND_FLATTEN: u32 = 5u;
const KIND_ADD: u32 = 6u;
const KIND_CONCAT: u32 = 7u;
// Contributions to a node's relaxation (combine): a dense VJP's slot, a child's r read directly,
// or a convolution or pooling VJP computed in place (the entry is then that edge's op).
const CONTRIB_SLOT: u32 = 10u;
const CONTRIB_SAME: u32 = 11u;   // add / flatten child: same element
const CONTRIB_CONCAT: u32 = 12u; // concat child: the channels this node fed
const CONTRIB_CONV: u32 = 13u;
const CONTRIB_MAXPOOL: u32 = 14u;
const CONTRIB_AVGPOOL: u32 = 15u;

// The entry of section [first, first + count) owning work item `item`, or first + count.
fn find_op(first: u32, count: u32, item: u32) -> u32 {
    for (var i = first; i < first + count; i++) {
        if (item >= ops[i].start && item < ops[i].start + ops[i].items) {
            return i;
        }
    }
    return first + count;
}

// The work item of an invocation of a 256-thread workgroup: its entry of the dispatch's section
// (`pass_`) and its index within that entry; `found` is false past the section's last item.
struct Work {
    op: u32,
    local: u32,
    found: bool,
}

fn claim(gid: vec3<u32>, nwg: vec3<u32>) -> Work {
    let item = gid.x + gid.y * nwg.x * 256u;
    let j = find_op(pass_.first, pass_.count, item);
    if (j >= pass_.first + pass_.count) {
        return Work(j, 0u, false);
    }
    return Work(j, item - ops[j].start, true);
}

// (sample, channel, row, column) of element `local` of a [B, c, h, w] tensor.
fn unflatten(local: u32, c: u32, h: u32, w: u32) -> vec4<u32> {
    let e = local % (c * h * w);
    return vec4<u32>(local / (c * h * w), e / (h * w), (e / w) % h, e % w);
}
