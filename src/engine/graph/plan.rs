//! The plan of a graph: the kernel tables (ops and dense layers), the offsets of every tensor
//! in the packed buffers, and the sections each dispatch serves, for one batch size and replica
//! count. Pure arithmetic over the graph; `super` builds buffers and pipelines from it.

use bytemuck::{Pod, Zeroable};

use crate::engine::layout::LayerEntry;
use crate::gpu::Needs;
use crate::graph::{Graph, NodeKind};

/// Mirror of `struct Op` in `shaders/graph_common.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Op {
    pub kind: u32,
    pub act: u32,
    pub c_in: u32,
    pub h_in: u32,
    pub w_in: u32,
    pub c_out: u32,
    pub h_out: u32,
    pub w_out: u32,
    pub k: u32,
    pub stride: u32,
    pub pad: u32,
    pub w: u32,
    pub b: u32,
    pub x_in: u32,
    pub x_out: u32,
    pub fp: u32,
    pub r_self: u32,
    pub slot: u32,
    pub aux: u32,
    pub aux2: u32,
    pub start: u32,
    pub items: u32,
    pub pad0: u32,
    pub pad1: u32,
}

pub(super) const KIND_DENSE: u32 = 1;
pub(super) const KIND_CONV: u32 = 2;
pub(super) const KIND_MAXPOOL: u32 = 3;
pub(super) const KIND_AVGPOOL: u32 = 4;
pub(super) const KIND_FLATTEN: u32 = 5;
pub(super) const KIND_ADD: u32 = 6;
pub(super) const KIND_CONCAT: u32 = 7;
pub(super) const CONTRIB_SLOT: u32 = 10;
pub(super) const CONTRIB_SAME: u32 = 11;
pub(super) const CONTRIB_CONCAT: u32 = 12;
pub(super) const CONTRIB_CONV: u32 = 13;
pub(super) const CONTRIB_MAXPOOL: u32 = 14;
pub(super) const CONTRIB_AVGPOOL: u32 = 15;

/// A contiguous run of table entries served by one dispatch.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Section {
    pub(super) first: usize,
    pub(super) count: usize,
    /// Workgroups (256 threads: one per tile for dense products, one per weight for conv
    /// gradients, one per 256 elements otherwise).
    pub(super) groups: u32,
}

/// Forward work of one node (its entries for every replica), in topological order.
#[derive(Clone, Copy, Debug)]
pub(super) enum Step {
    /// The first of the node's `replicas` entries in the dense table.
    Dense(usize),
    /// The first of `replicas` entries in the op table (which own consecutive work items).
    Table(KernelKind, usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KernelKind {
    Conv,
    Pool,
    Join,
}

/// Offsets of every tensor and the kernel tables for one graph, batch size and replica count.
///
/// Replicas (copies of the graph trained side by side, see `EngineOptions::replicas`) follow the
/// MLP engine's layout: every table entry appears once per replica, consecutively, so each
/// section and each node's forward step stays one contiguous range of the table; activity-like
/// buffers hold each node's [K, B, size] rows together; parameters are replica-major.
pub(super) struct Plan {
    pub(super) replicas: usize,
    pub(super) ops: Vec<Op>,
    pub(super) dense: Vec<LayerEntry>,
    pub(super) forward: Vec<Step>,
    pub(super) dense_vjp: Section,
    /// The outputs (M × N) of every dense VJP product, in dispatch order.
    pub(super) dense_vjp_products: Vec<(usize, usize)>,
    pub(super) combine: Section,
    pub(super) conv_grad: Section,
    /// Every replica's parameters.
    pub(super) params_len: usize,
    /// One replica's parameters.
    pub(super) replica_params_len: usize,
    pub(super) x_len: usize,
    pub(super) fp_len: usize,
    pub(super) argmax_len: usize,
    pub(super) r_len: usize,
    pub(super) slots_len: usize,
    /// Per node, the start of its [K, B, size] block (replica k's rows follow at k·B·size).
    pub(super) x_off: Vec<usize>,
    pub(super) r_off: Vec<usize>,
    /// Per node, (weight, bias) offsets within one replica's parameters.
    pub(super) p_off: Vec<Option<(usize, usize)>>,
}

pub(super) fn groups(items: usize) -> u32 {
    items.div_ceil(256) as u32
}

pub(super) fn u(v: usize) -> u32 {
    v as u32
}

impl Plan {
    pub(super) fn new(g: &Graph, batch: usize, replicas: usize) -> Self {
        let n = g.nodes.len();
        let size = |i: usize| g.nodes[i].shape.size();
        let rows = replicas * batch;
        let mut x_off = vec![0; n];
        let mut at = 0;
        for (i, off) in x_off.iter_mut().enumerate() {
            *off = at;
            at += rows * size(i);
        }
        let x_len = at;
        // r mirrors x without the input, so the forward start is one copy (see engine/layout.rs).
        let base = rows * size(0);
        let r_off: Vec<usize> = x_off.iter().map(|&o| o.saturating_sub(base)).collect();
        let r_len = x_len - base;
        let (mut fp_off, mut fp_len) = (vec![0; n], 0);
        let (mut am_off, mut am_len) = (vec![0; n], 0);
        let (mut p_off, mut params_len) = (vec![None; n], 0);
        for i in 0..n {
            if let Some((w, bias)) = g.param_shape(i) {
                let nw: usize = w.iter().product();
                p_off[i] = Some((params_len, params_len + nw));
                params_len += nw + bias;
            }
            match g.nodes[i].kind {
                NodeKind::Dense { .. } | NodeKind::Conv2d { .. } => {
                    fp_off[i] = fp_len;
                    fp_len += rows * size(i);
                }
                NodeKind::MaxPool { .. } => {
                    am_off[i] = am_len;
                    am_len += rows * size(i);
                }
                _ => {}
            }
        }
        let replica_params_len = params_len;
        // Replica k's rows of node i's block, in any activity-like buffer.
        let shift = |off: usize, i: usize, k: usize| off + k * batch * size(i);
        let act = |i: usize| g.activation(i).map(|a| a.code()).unwrap_or(0);
        // The op describing node i reading its input slot j, for replica k.
        let op = |i: usize, j: usize, k: usize| -> Op {
            let node = &g.nodes[i];
            let p = node.inputs[j];
            let (si, so) = (g.nodes[p].shape, node.shape);
            let (win, stride, pad, kind) = match node.kind {
                NodeKind::Dense { .. } => (0, 0, 0, KIND_DENSE),
                NodeKind::Conv2d {
                    kernel,
                    stride,
                    padding,
                    ..
                } => (kernel, stride, padding, KIND_CONV),
                NodeKind::MaxPool { kernel, stride } => (kernel, stride, 0, KIND_MAXPOOL),
                NodeKind::AvgPool { kernel, stride } => (kernel, stride, 0, KIND_AVGPOOL),
                NodeKind::Flatten => (0, 0, 0, KIND_FLATTEN),
                NodeKind::Add => (0, 0, 0, KIND_ADD),
                NodeKind::Concat => (0, 0, 0, KIND_CONCAT),
                NodeKind::Input => (0, 0, 0, 0),
            };
            let (w, b) = p_off[i].unwrap_or((0, 0));
            let params = k * replica_params_len;
            let argmax = if kind == KIND_MAXPOOL {
                shift(am_off[i], i, k)
            } else {
                0
            };
            Op {
                kind,
                act: act(i),
                c_in: u(si.c),
                h_in: u(si.h),
                w_in: u(si.w),
                c_out: u(so.c),
                h_out: u(so.h),
                w_out: u(so.w),
                k: u(win),
                stride: u(stride),
                pad: u(pad),
                w: u(params + w),
                b: u(params + b),
                x_in: u(shift(x_off[p], p, k)),
                x_out: u(shift(x_off[i], i, k)),
                fp: u(shift(fp_off[i], i, k)),
                r_self: u(shift(r_off[i], i, k)),
                aux: u(argmax),
                ..Default::default()
            }
        };
        let mut ops = Vec::new();
        let mut dense = Vec::new();
        let mut forward = Vec::new();
        for i in 1..n {
            let node = &g.nodes[i];
            match node.kind {
                NodeKind::Dense { .. } => {
                    forward.push(Step::Dense(dense.len()));
                    for k in 0..replicas {
                        let o = op(i, 0, k);
                        dense.push(LayerEntry {
                            n_in: u(g.nodes[node.inputs[0]].shape.size()),
                            n_out: o.c_out * o.h_out * o.w_out,
                            w: o.w,
                            b: o.b,
                            x_in: o.x_in,
                            x_out: o.x_out,
                            fp: o.fp,
                            r_in: 0,
                            r_out: o.r_self,
                            act: o.act,
                            pad: [0; 2],
                        });
                    }
                }
                NodeKind::Conv2d { .. } | NodeKind::MaxPool { .. } | NodeKind::AvgPool { .. } => {
                    let kind = if matches!(node.kind, NodeKind::Conv2d { .. }) {
                        KernelKind::Conv
                    } else {
                        KernelKind::Pool
                    };
                    forward.push(Step::Table(kind, ops.len()));
                    for k in 0..replicas {
                        let mut o = op(i, 0, k);
                        o.items = u(batch * size(i));
                        o.start = o.items * u(k);
                        ops.push(o);
                    }
                }
                NodeKind::Flatten | NodeKind::Add | NodeKind::Concat => {
                    let mut channel = 0;
                    for j in 0..node.inputs.len() {
                        forward.push(Step::Table(KernelKind::Join, ops.len()));
                        for k in 0..replicas {
                            let mut o = op(i, j, k);
                            o.items = u(batch * g.nodes[node.inputs[j]].shape.size());
                            o.start = o.items * u(k);
                            o.aux = u(channel);
                            o.aux2 = u(j);
                            ops.push(o);
                        }
                        channel += g.nodes[node.inputs[j]].shape.c;
                    }
                }
                NodeKind::Input => {}
            }
        }
        // Dense edges into hidden parents (the input does not relax), each with its own VJP slot;
        // combine computes the other kinds' VJPs in place.
        let mut slots_len = 0;
        let mut slot_of = std::collections::HashMap::new();
        let mut tile_products = Vec::new();
        let mut items = 0usize;
        let first = ops.len();
        for c in 1..n {
            if !matches!(g.nodes[c].kind, NodeKind::Dense { .. }) {
                continue;
            }
            for (j, &p) in g.nodes[c].inputs.iter().enumerate() {
                if p == 0 {
                    continue;
                }
                slot_of.insert((c, j), slots_len);
                for k in 0..replicas {
                    let mut o = op(c, j, k);
                    o.c_in = u(size(p)); // dense edges treat the parent as flat
                    o.slot = u(shift(slots_len, p, k));
                    o.start = u(items);
                    o.items = u(batch * size(p));
                    items += batch * size(p);
                    tile_products.push((batch, size(p)));
                    ops.push(o);
                }
                slots_len += rows * size(p);
            }
        }
        // Its workgroup count is set once the tile shape is chosen.
        let dense_vjp = Section {
            first,
            count: ops.len() - first,
            groups: 0,
        };
        // Combine: one entry per hidden node and replica; its contributions follow the section.
        let hidden: Vec<(usize, usize)> = (1..n)
            .filter(|&i| i != g.output)
            .flat_map(|i| (0..replicas).map(move |k| (i, k)))
            .collect();
        let combine_first = ops.len();
        let mut items = 0;
        for &(i, k) in &hidden {
            let mut o = op_self(g, i, &x_off, &r_off);
            o.x_out = u(shift(x_off[i], i, k));
            o.r_self = u(shift(r_off[i], i, k));
            o.start = u(items);
            o.items = u(batch * size(i));
            items += batch * size(i);
            ops.push(o);
        }
        let combine = Section {
            first: combine_first,
            count: hidden.len(),
            groups: groups(items),
        };
        for (h, &(i, k)) in hidden.iter().enumerate() {
            let first = ops.len();
            for c in g.children(i) {
                let child = &g.nodes[c];
                for (j, _) in child.inputs.iter().enumerate().filter(|(_, p)| **p == i) {
                    let mut ct = Op::default();
                    match child.kind {
                        NodeKind::Flatten | NodeKind::Add => {
                            ct.kind = CONTRIB_SAME;
                            ct.x_in = u(shift(r_off[c], c, k));
                        }
                        NodeKind::Concat => {
                            ct.kind = CONTRIB_CONCAT;
                            ct.x_in = u(shift(r_off[c], c, k));
                            ct.c_in = u(child.shape.c);
                            ct.aux = u(child.inputs[..j]
                                .iter()
                                .map(|&q| g.nodes[q].shape.c)
                                .sum::<usize>());
                        }
                        NodeKind::Conv2d { .. } => {
                            ct = op(c, j, k);
                            ct.kind = CONTRIB_CONV;
                        }
                        NodeKind::MaxPool { .. } => {
                            ct = op(c, j, k);
                            ct.kind = CONTRIB_MAXPOOL;
                        }
                        NodeKind::AvgPool { .. } => {
                            ct = op(c, j, k);
                            ct.kind = CONTRIB_AVGPOOL;
                        }
                        NodeKind::Dense { .. } => {
                            ct.kind = CONTRIB_SLOT;
                            ct.slot = u(shift(slot_of[&(c, j)], i, k));
                        }
                        NodeKind::Input => unreachable!("the input has no inputs"),
                    }
                    ops.push(ct);
                }
            }
            ops[combine_first + h].aux = u(first);
            ops[combine_first + h].aux2 = u(ops.len() - first);
        }
        let conv_first = ops.len();
        let mut items = 0;
        for i in 1..n {
            if let NodeKind::Conv2d { .. } = g.nodes[i].kind {
                for k in 0..replicas {
                    let mut o = op(i, 0, k);
                    let (w, b) = g.param_shape(i).expect("conv has parameters");
                    o.start = u(items);
                    o.items = u(w.iter().product::<usize>() + b);
                    items += o.items as usize;
                    ops.push(o);
                }
            }
        }
        // One workgroup per weight or bias element (conv_grad.wgsl reduces inside it).
        let conv_grad = Section {
            first: conv_first,
            count: ops.len() - conv_first,
            groups: u(items),
        };
        Self {
            replicas,
            ops,
            dense,
            forward,
            dense_vjp,
            dense_vjp_products: tile_products,
            combine,
            conv_grad,
            params_len: replicas * replica_params_len,
            replica_params_len,
            x_len,
            fp_len,
            argmax_len: am_len,
            r_len,
            slots_len,
            x_off,
            r_off,
            p_off,
        }
    }

    /// The outputs of every dense weight and bias gradient ([units, in_size + 1]: the bias is
    /// the last column, see `shaders/grad.wgsl`).
    pub(super) fn dense_grad_products(&self) -> Vec<(usize, usize)> {
        self.dense
            .iter()
            .map(|e| (e.n_out as usize, e.n_in as usize + 1))
            .collect()
    }

    pub(super) fn max_buffer_bytes(&self) -> u64 {
        [
            self.params_len,
            self.x_len,
            self.fp_len,
            self.r_len,
            self.slots_len,
            self.argmax_len,
        ]
        .into_iter()
        .max()
        .unwrap_or(1) as u64
            * 4
    }
}

/// The op of node i as a relaxation target (combine): its own shape and state.
pub(super) fn op_self(g: &Graph, i: usize, x_off: &[usize], r_off: &[usize]) -> Op {
    let s = g.nodes[i].shape;
    Op {
        c_out: u(s.c),
        h_out: u(s.h),
        w_out: u(s.w),
        x_out: u(x_off[i]),
        r_self: u(r_off[i]),
        ..Default::default()
    }
}

/// What a graph needs from the device.
pub fn needs(g: &Graph, batch: usize, replicas: usize) -> Needs {
    let bytes = Plan::new(g, batch, replicas.max(1)).max_buffer_bytes();
    Needs {
        max_binding_bytes: bytes,
        max_buffer_bytes: bytes,
        ..Needs::default()
    }
}
