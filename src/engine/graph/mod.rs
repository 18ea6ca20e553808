//! The engine for arbitrary computation graphs (dense, conv2d, pooling, flatten, add, concat).
//!
//! Forward runs node by node in topological order. One relaxation step is at most two
//! dispatches however many nodes the graph has: the VJPs of every dense edge into per-edge slots
//! (tiled products), then one `combine` that relaxes every hidden node from the sum of its
//! children's contributions: the dense slots, convolution and pooling VJPs computed in place, or
//! the child's own state for add/flatten/concat. Exact backprop is the same step with η = 1, repeated for
//! the graph's depth: a Jacobi sweep at η = 1 is exact after that many steps on a DAG.

use std::sync::Arc;

use super::layout::{self, PassUniform};
use super::{Algorithm, EngineOptions, Feedback, RelaxStart};
use super::{LossUniform, Ops as _, SgdUniform, feed};
use crate::gpu::buffers::{self, Dispatch, Kernel, Slot, TiledKernel, record};
use crate::gpu::tile::{TileChoice, TileShape};
use crate::gpu::{GpuContext, shader};
use crate::graph::{Graph, GraphParams};
use crate::model::Loss;
use crate::{Error, Result};

mod plan;

use plan::{KernelKind, Plan, Section, Step, groups, u};
pub use plan::{Op, needs};

/// The tile shape of every tiled (dense) dispatch, chosen like the MLP engine's.
#[derive(Clone, Debug)]
pub struct GraphShapes {
    /// One per dense table entry (each replica of a dense node), in `Plan::dense` order.
    pub forward: Vec<TileShape>,
    /// All dense VJPs of a relaxation step.
    pub vjp: TileShape,
    /// All dense weight gradients.
    pub grad: TileShape,
}

impl GraphShapes {
    fn new(plan: &Plan, batch: usize, choice: TileChoice) -> Self {
        Self {
            forward: plan
                .dense
                .iter()
                .map(|e| choice.pick(&vec![(batch, e.n_out as usize); plan.replicas]))
                .collect(),
            vjp: choice.pick(&plan.dense_vjp_products),
            grad: choice.pick(&plan.dense_grad_products()),
        }
    }
}

struct Kernels {
    dense_forward: TiledKernel,
    conv_forward: Kernel,
    pool_forward: Kernel,
    join_forward: Kernel,
    loss: Kernel,
    dense_vjp: TiledKernel,
    combine: Kernel,
    /// Dense weight and bias gradients (the bias as the product's extra column).
    dense_grad: TiledKernel,
    conv_grad: Kernel,
    sgd: Kernel,
}

impl Kernels {
    fn new(ctx: &GpuContext, shapes: &GraphShapes) -> Self {
        use Slot::*;
        let m = |name: &str| shader::module(ctx, name);
        let six = [Uniform, Read, Read, Read, Read, ReadWrite];
        Self {
            dense_forward: TiledKernel::new(
                ctx,
                "forward.wgsl",
                "forward",
                &[Uniform, Read, Read, ReadWrite, ReadWrite],
                &shapes.forward,
            ),
            conv_forward: Kernel::new(
                ctx,
                &m("conv_forward.wgsl"),
                "conv_forward",
                &[Uniform, Read, Read, ReadWrite, ReadWrite],
            ),
            pool_forward: Kernel::new(
                ctx,
                &m("pool_forward.wgsl"),
                "pool_forward",
                &[Uniform, Read, ReadWrite, ReadWrite],
            ),
            join_forward: Kernel::new(
                ctx,
                &m("join_forward.wgsl"),
                "join_forward",
                &[Uniform, Read, ReadWrite],
            ),
            loss: Kernel::new(
                ctx,
                &m("loss.wgsl"),
                "output_error",
                &[Uniform, Read, Read, ReadWrite, ReadWrite, ReadWrite],
            ),
            dense_vjp: TiledKernel::new(ctx, "dense_vjp.wgsl", "dense_vjp", &six, &[shapes.vjp]),
            combine: Kernel::new(
                ctx,
                &m("combine.wgsl"),
                "combine",
                &[Uniform, Read, Read, Read, ReadWrite, Read, Read, Read],
            ),
            // grad.wgsl's last two bindings (the fused SGD step's W and ψ) are unused here.
            dense_grad: TiledKernel::new(
                ctx,
                "grad.wgsl",
                "param_grad",
                &[&six[..], &[ReadWrite, ReadWrite]].concat(),
                &[shapes.grad],
            ),
            conv_grad: Kernel::new(ctx, &m("conv_grad.wgsl"), "conv_grad", &six),
            sgd: Kernel::new(ctx, &m("sgd.wgsl"), "sgd", &[Uniform, Read, ReadWrite]),
        }
    }
}

pub struct GraphBuffers {
    pub ops: wgpu::Buffer,
    pub dense: wgpu::Buffer,
    pub params: wgpu::Buffer,
    pub feedback: Option<wgpu::Buffer>,
    pub x: wgpu::Buffer,
    pub fprime: wgpu::Buffer,
    pub argmax: wgpu::Buffer,
    pub r: [wgpu::Buffer; 2],
    pub slots: wgpu::Buffer,
    pub target: wgpu::Buffer,
    pub stats: wgpu::Buffer,
    pub grads: wgpu::Buffer,
}

/// Bind groups of one relaxation configuration (AR's, or exact backprop's) for each parity.
struct RelaxBinds {
    dense: [wgpu::BindGroup; 2],
    combine: [wgpu::BindGroup; 2],
}

struct GradBinds {
    dense: [wgpu::BindGroup; 2],
    conv: [wgpu::BindGroup; 2],
}

pub struct GraphEngine {
    ctx: Arc<GpuContext>,
    pub graph: Graph,
    pub opts: EngineOptions,
    plan: Plan,
    pub bufs: GraphBuffers,
    kernels: Kernels,
    pub shapes: GraphShapes,
    forward_binds: Vec<wgpu::BindGroup>,
    loss_bind: wgpu::BindGroup,
    ar: RelaxBinds,
    exact: RelaxBinds,
    ar_grads: GradBinds,
    exact_grads: GradBinds,
    sgd_params: wgpu::BindGroup,
    sgd_feedback: Option<wgpu::BindGroup>,
    current: usize,
    /// GPU time per phase, when attached (benchmarks).
    timer: crate::gpu::profiler::PhaseTimer,
}

impl GraphEngine {
    pub fn new(ctx: Arc<GpuContext>, graph: &Graph, opts: EngineOptions) -> Result<Self> {
        super::check_options(&opts)?;
        if opts.grad_split > 1 {
            return Err(Error::Config(
                "split weight gradients (grad split) are for MLPs; a graph model's gradients \
                 are not split"
                    .into(),
            ));
        }
        if opts.fused_update {
            return Err(Error::Config(
                "the SGD step in the gradients' dispatch (fused update) is for MLPs; a graph \
                 model's weights are updated by kernels of several kinds"
                    .into(),
            ));
        }
        ctx.check_tiles(opts.tile)?;
        if opts.relax_tol.is_some()
            || opts.sweep
            || opts.relax_fprime_current
            || opts.update_fprime_current
            || opts.update_input_relaxed
            || opts.relax_kernel != super::RelaxKernel::Tiled
        {
            return Err(Error::Config(
                "adaptive relaxation (relax_tol), the sweep schedule, the resident and cooperative \
                 relaxation kernels and the no-frozen-forward options are implemented for --layers \
                 MLPs only; \
                 graph models relax in parallel for a fixed number of steps with the forward pass \
                 frozen"
                    .into(),
            ));
        }
        let plan = Plan::new(graph, opts.batch, opts.replicas);
        let limit = ctx.limits.max_storage_buffer_binding_size;
        if plan.max_buffer_bytes() > limit {
            return Err(Error::Gpu(format!(
                "the model at batch {} needs a {} MiB buffer but the device allows {} MiB per \
                 binding (max_storage_buffer_binding_size); use a smaller batch size or a smaller model",
                opts.batch,
                plan.max_buffer_bytes().div_ceil(1 << 20),
                limit >> 20
            )));
        }
        let d = &ctx.device;
        let b = opts.batch;
        let rows = b * opts.replicas;
        let mut plan = plan;
        let shapes = GraphShapes::new(&plan, b, opts.tile.for_adapter(ctx.info.device_type));
        plan.dense_vjp.groups = layout::groups(shapes.vjp, &plan.dense_vjp_products);
        let kernels = Kernels::new(&ctx, &shapes);
        let bufs = GraphBuffers {
            ops: buffers::storage_init(d, "graph ops", &plan.ops),
            dense: buffers::storage_init(d, "dense nodes", &plan.dense),
            params: buffers::storage(d, "params", plan.params_len),
            feedback: (opts.feedback != Feedback::Transpose)
                .then(|| buffers::storage(d, "feedback", plan.params_len)),
            x: buffers::storage(d, "x", plan.x_len),
            fprime: buffers::storage(d, "fprime", plan.fp_len),
            argmax: buffers::storage(d, "argmax", plan.argmax_len),
            r: [
                buffers::storage(d, "r0", plan.r_len),
                buffers::storage(d, "r1", plan.r_len),
            ],
            slots: buffers::storage(d, "vjp slots", plan.slots_len),
            target: buffers::storage(d, "target", rows * graph.output_size()),
            stats: buffers::storage(d, "stats", 2 * rows),
            grads: buffers::storage(d, "grads", plan.params_len),
        };
        let flags = opts.derivative_flags();
        let pass = |s: Section, rate: f32, flags: u32| {
            buffers::uniform(
                d,
                "graph pass",
                &PassUniform {
                    first: u(s.first),
                    count: u(s.count),
                    batch: u(b),
                    flags,
                    rate,
                    split: 0,
                    part_len: 0,
                    decay: 0.0,
                },
            )
        };
        let k = &kernels;
        // A node's forward step covers its entries for every replica, from table entry `first`.
        let node_pass = |first: usize| {
            let count = opts.replicas;
            pass(
                Section {
                    first,
                    count,
                    groups: 0,
                },
                0.0,
                0,
            )
        };
        let forward_binds = plan
            .forward
            .iter()
            .map(|step| match *step {
                Step::Dense(i) => {
                    let un = node_pass(i);
                    k.dense_forward
                        .bind(d, &[&un, &bufs.dense, &bufs.params, &bufs.x, &bufs.fprime])
                }
                Step::Table(kind, i) => {
                    let un = node_pass(i);
                    match kind {
                        KernelKind::Conv => k
                            .conv_forward
                            .bind(d, &[&un, &bufs.ops, &bufs.params, &bufs.x, &bufs.fprime]),
                        KernelKind::Pool => k
                            .pool_forward
                            .bind(d, &[&un, &bufs.ops, &bufs.x, &bufs.argmax]),
                        KernelKind::Join => k.join_forward.bind(d, &[&un, &bufs.ops, &bufs.x]),
                    }
                }
            })
            .collect();
        let out = graph.output;
        let loss_u = buffers::uniform(
            d,
            "loss pass",
            &LossUniform {
                x_off: u(plan.x_off[out]),
                r_off: u(plan.r_off[out]),
                width: u(graph.output_size()),
                batch: u(rows),
                kind: match graph.loss {
                    Loss::Mse => 0,
                    Loss::Ce => 1,
                },
                scale: opts.reduction.scale(b) as f32,
                pad: [0; 2],
            },
        );
        let loss_bind = k.loss.bind(
            d,
            &[
                &loss_u,
                &bufs.x,
                &bufs.target,
                &bufs.r[0],
                &bufs.r[1],
                &bufs.stats,
            ],
        );
        let relax_binds = |rate: f32, flags: u32, weights: &wgpu::Buffer| {
            let (dv, cb) = (
                pass(plan.dense_vjp, rate, flags),
                pass(plan.combine, rate, flags),
            );
            let per = |src: usize| {
                (
                    k.dense_vjp.bind(
                        d,
                        &[
                            &dv,
                            &bufs.ops,
                            weights,
                            &bufs.fprime,
                            &bufs.r[src],
                            &bufs.slots,
                        ],
                    ),
                    k.combine.bind(
                        d,
                        &[
                            &cb,
                            &bufs.ops,
                            &bufs.slots,
                            &bufs.r[src],
                            &bufs.r[1 - src],
                            weights,
                            &bufs.fprime,
                            &bufs.argmax,
                        ],
                    ),
                )
            };
            let (a, bb) = (per(0), per(1));
            RelaxBinds {
                dense: [a.0, bb.0],
                combine: [a.1, bb.1],
            }
        };
        let relax_weights = bufs.feedback.as_ref().unwrap_or(&bufs.params);
        let ar = relax_binds(opts.relax_rate, flags, relax_weights);
        let exact = relax_binds(1.0, 0, &bufs.params);
        let grad_binds = |flags: u32| {
            let all_dense = Section {
                first: 0,
                count: plan.dense.len(),
                groups: 0,
            };
            let (du, cu) = (
                pass(all_dense, 0.0, flags),
                pass(plan.conv_grad, 0.0, flags),
            );
            let unused = [0, 1].map(|_| buffers::storage(d, "unused", 1));
            let per = |src: usize| {
                (
                    k.dense_grad.bind(
                        d,
                        &[
                            &du,
                            &bufs.dense,
                            &bufs.x,
                            &bufs.fprime,
                            &bufs.r[src],
                            &bufs.grads,
                            &unused[0],
                            &unused[1],
                        ],
                    ),
                    k.conv_grad.bind(
                        d,
                        &[
                            &cu,
                            &bufs.ops,
                            &bufs.x,
                            &bufs.fprime,
                            &bufs.r[src],
                            &bufs.grads,
                        ],
                    ),
                )
            };
            let (a, bb) = (per(0), per(1));
            GradBinds {
                dense: [a.0, bb.0],
                conv: [a.1, bb.1],
            }
        };
        let ar_grads = grad_binds(flags);
        let exact_grads = grad_binds(0);
        let sgd_u = |decay: f32| {
            buffers::uniform(
                d,
                "sgd",
                &SgdUniform {
                    count: u(plan.params_len),
                    lr: opts.lr,
                    decay,
                    pad: 0,
                },
            )
        };
        let sgd_params = k.sgd.bind(d, &[&sgd_u(0.0), &bufs.grads, &bufs.params]);
        let sgd_feedback = bufs
            .feedback
            .as_ref()
            .filter(|_| opts.feedback == Feedback::Learned)
            .map(|f| {
                k.sgd
                    .bind(d, &[&sgd_u(opts.feedback_decay), &bufs.grads, f])
            });
        let e = Self {
            ctx,
            graph: graph.clone(),
            opts,
            plan,
            bufs,
            kernels,
            shapes,
            forward_binds,
            loss_bind,
            ar,
            exact,
            ar_grads,
            exact_grads,
            sgd_params,
            sgd_feedback,
            current: 0,
            timer: Default::default(),
        };
        e.ctx.check()?;
        Ok(e)
    }

    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    // ---- host ↔ device ---------------------------------------------------------------------

    /// One replica's parameters, flat.
    fn packed(&self, p: &GraphParams) -> Result<Vec<f32>> {
        let mut flat = vec![0.0; self.plan.replica_params_len];
        for (i, off) in self.plan.p_off.iter().enumerate() {
            if let Some((w, b)) = off {
                let (pw, pb) = (&p.weights[i], &p.biases[i]);
                if w + pw.len() != *b
                    || pb.len() != self.graph.param_shape(i).map(|s| s.1).unwrap_or(0)
                {
                    return Err(Error::Config(format!(
                        "parameters of node '{}' do not match its shape",
                        self.graph.nodes[i].id
                    )));
                }
                flat[*w..*b].copy_from_slice(pw);
                flat[*b..*b + pb.len()].copy_from_slice(pb);
            }
        }
        Ok(flat)
    }

    fn unpack(&self, flat: &[f32]) -> GraphParams {
        let mut p = GraphParams::zeros_like(&self.graph);
        for (i, off) in self.plan.p_off.iter().enumerate() {
            if let Some((w, b)) = off {
                let nb = p.biases[i].len();
                p.weights[i].copy_from_slice(&flat[*w..*b]);
                p.biases[i].copy_from_slice(&flat[*b..*b + nb]);
            }
        }
        p
    }

    fn write_packed(&self, buf: &wgpu::Buffer, replica: usize, p: &GraphParams) -> Result<()> {
        super::check_replica(replica, self.plan.replicas)?;
        let flat = self.packed(p)?;
        let at = (replica * self.plan.replica_params_len * 4) as u64;
        self.ctx
            .queue
            .write_buffer(buf, at, bytemuck::cast_slice(&flat));
        Ok(())
    }

    /// Sets the parameters (of replica 0).
    pub fn set_params(&self, p: &GraphParams) -> Result<()> {
        self.set_replica_params(0, p)
    }

    pub fn set_replica_params(&self, replica: usize, p: &GraphParams) -> Result<()> {
        self.write_packed(&self.bufs.params, replica, p)
    }

    pub fn set_feedback(&self, p: &GraphParams) -> Result<()> {
        self.set_replica_feedback(0, p)
    }

    pub fn set_replica_feedback(&self, replica: usize, p: &GraphParams) -> Result<()> {
        let buf = self.bufs.feedback.as_ref().ok_or_else(|| {
            Error::Config("this engine uses W as its feedback; it has no ψ to set".into())
        })?;
        self.write_packed(buf, replica, p)
    }

    fn read_packed(&self, buf: &wgpu::Buffer, replica: usize) -> Result<GraphParams> {
        super::check_replica(replica, self.plan.replicas)?;
        let len = self.plan.replica_params_len;
        Ok(self.unpack(&self.ctx.read_f32(buf, (replica * len) as u64, len as u64)?))
    }

    /// The parameters (of replica 0).
    pub fn params(&self) -> Result<GraphParams> {
        self.replica_params(0)
    }

    pub fn replica_params(&self, replica: usize) -> Result<GraphParams> {
        self.read_packed(&self.bufs.params, replica)
    }

    pub fn feedback(&self) -> Result<Option<GraphParams>> {
        self.replica_feedback(0)
    }

    pub fn replica_feedback(&self, replica: usize) -> Result<Option<GraphParams>> {
        self.bufs
            .feedback
            .as_ref()
            .map(|b| self.read_packed(b, replica))
            .transpose()
    }

    /// The last computed gradients (of replica 0).
    pub fn grads(&self) -> Result<GraphParams> {
        self.replica_grads(0)
    }

    pub fn replica_grads(&self, replica: usize) -> Result<GraphParams> {
        self.read_packed(&self.bufs.grads, replica)
    }

    /// Uploads one batch: `input` is [K·B, n_0] and `target` [K·B, n_L] (replica-major),
    /// row-major.
    pub fn set_batch(&self, input: &[f32], target: &[f32]) -> Result<()> {
        feed::upload_batch(self, input, target)
    }

    /// Activities of every node from the last forward pass, [K·B, size] each.
    pub fn activities(&self) -> Result<Vec<Vec<f32>>> {
        let all = self.ctx.read_f32(&self.bufs.x, 0, self.plan.x_len as u64)?;
        let b = self.opts.batch * self.plan.replicas;
        Ok((0..self.graph.nodes.len())
            .map(|i| {
                let o = self.plan.x_off[i];
                all[o..o + b * self.graph.nodes[i].shape.size()].to_vec()
            })
            .collect())
    }

    /// The current relaxation state of every node (empty for the input).
    pub fn state(&self) -> Result<Vec<Vec<f32>>> {
        let all = self
            .ctx
            .read_f32(&self.bufs.r[self.current], 0, self.plan.r_len as u64)?;
        let b = self.opts.batch * self.plan.replicas;
        Ok((0..self.graph.nodes.len())
            .map(|i| {
                if i == 0 {
                    return Vec::new();
                }
                let o = self.plan.r_off[i];
                all[o..o + b * self.graph.nodes[i].shape.size()].to_vec()
            })
            .collect())
    }

    /// Per-row loss and correctness of the last output-error pass (every replica's rows).
    pub fn batch_stats(&self) -> Result<(Vec<f32>, Vec<bool>)> {
        feed::batch_stats(self)
    }

    // ---- encoders --------------------------------------------------------------------------

    pub fn encode_forward(&self, enc: &mut wgpu::CommandEncoder) {
        let b = self.opts.batch;
        let k = self.plan.replicas;
        let mut pass = self.begin(enc, "forward");
        for (step, bind) in self.plan.forward.iter().zip(&self.forward_binds) {
            let (kernel, groups) = match *step {
                Step::Dense(i) => {
                    let e = &self.plan.dense[i];
                    (
                        self.kernels.dense_forward.get(self.shapes.forward[i]),
                        k as u32 * self.shapes.forward[i].tiles(b, e.n_out as usize),
                    )
                }
                Step::Table(kind, i) => (
                    match kind {
                        KernelKind::Conv => &self.kernels.conv_forward,
                        KernelKind::Pool => &self.kernels.pool_forward,
                        KernelKind::Join => &self.kernels.join_forward,
                    },
                    groups(k * self.plan.ops[i].items as usize),
                ),
            };
            record(
                &mut pass,
                Dispatch {
                    kernel,
                    bind,
                    groups,
                },
            );
        }
        record(
            &mut pass,
            Dispatch {
                kernel: &self.kernels.loss,
                bind: &self.loss_bind,
                groups: (k * b).div_ceil(64) as u32,
            },
        );
    }

    pub fn encode_relax_start(&mut self, enc: &mut wgpu::CommandEncoder) {
        self.current = 0;
        let hidden = (self.plan.r_off[self.graph.output] * 4) as u64;
        if hidden == 0 {
            return;
        }
        match self.opts.start {
            RelaxStart::Forward => {
                let from = (self.plan.x_off[1] * 4) as u64;
                enc.copy_buffer_to_buffer(&self.bufs.x, from, &self.bufs.r[0], 0, hidden);
            }
            RelaxStart::Zero => enc.clear_buffer(&self.bufs.r[0], 0, Some(hidden)),
        }
    }

    fn encode_steps(&mut self, enc: &mut wgpu::CommandEncoder, steps: usize, exact: bool) {
        if self.plan.combine.count == 0 || steps == 0 {
            return;
        }
        let binds = if exact { &self.exact } else { &self.ar };
        let k = &self.kernels;
        let labels = if exact {
            [
                "backprop: dense VJPs",
                "backprop: combine (conv and pool VJPs)",
            ]
        } else {
            ["relax: dense VJPs", "relax: combine (conv and pool VJPs)"]
        };
        let mut c = self.current;
        let mut dispatches = Vec::with_capacity(2 * steps);
        for _ in 0..steps {
            let kinds = [
                (
                    k.dense_vjp.get(self.shapes.vjp),
                    &binds.dense[c],
                    self.plan.dense_vjp,
                ),
                (&k.combine, &binds.combine[c], self.plan.combine),
            ];
            for (label, (kernel, bind, s)) in labels.into_iter().zip(kinds) {
                if s.count > 0 {
                    let groups = s.groups;
                    dispatches.push((
                        label,
                        Dispatch {
                            kernel,
                            bind,
                            groups,
                        },
                    ));
                }
            }
            c = 1 - c;
        }
        self.timer
            .record_labelled(enc, if exact { "backprop" } else { "relax" }, &dispatches);
        self.current = c;
    }

    /// `steps` parallel relaxation steps of every hidden node.
    pub fn encode_relax(&mut self, enc: &mut wgpu::CommandEncoder, steps: usize) {
        self.encode_steps(enc, steps, false);
    }

    /// Exact backprop signals: η = 1 steps, as many as the graph is deep.
    pub fn encode_backprop_signals(&mut self, enc: &mut wgpu::CommandEncoder) {
        self.current = 0;
        let hidden = (self.plan.r_off[self.graph.output] * 4) as u64;
        if hidden > 0 {
            enc.clear_buffer(&self.bufs.r[0], 0, Some(hidden));
        }
        let depth = self.graph.depth();
        self.encode_steps(enc, depth, true);
    }

    fn encode_grads_with(&self, enc: &mut wgpu::CommandEncoder, g: &GradBinds) {
        let c = self.current;
        let k = &self.kernels;
        let dense_tiles = layout::groups(self.shapes.grad, &self.plan.dense_grad_products());
        let mut dispatches = Vec::new();
        if !self.plan.dense.is_empty() {
            dispatches.push((
                "gradients: dense",
                Dispatch {
                    kernel: k.dense_grad.get(self.shapes.grad),
                    bind: &g.dense[c],
                    groups: dense_tiles,
                },
            ));
        }
        if self.plan.conv_grad.count > 0 {
            dispatches.push((
                "gradients: conv",
                Dispatch {
                    kernel: &k.conv_grad,
                    bind: &g.conv[c],
                    groups: self.plan.conv_grad.groups,
                },
            ));
        }
        self.timer.record_labelled(enc, "gradients", &dispatches);
    }

    pub fn encode_grads(&self, enc: &mut wgpu::CommandEncoder) {
        self.encode_grads_with(enc, &self.ar_grads);
    }

    pub fn encode_exact_grads(&self, enc: &mut wgpu::CommandEncoder) {
        self.encode_grads_with(enc, &self.exact_grads);
    }

    /// A training step's update: the gradients, then SGD in a dispatch of its own (a graph's
    /// weights are updated by kernels of several kinds).
    pub fn encode_update(&self, enc: &mut wgpu::CommandEncoder, algorithm: Algorithm) {
        match algorithm {
            Algorithm::Ar => self.encode_grads(enc),
            Algorithm::Bp => self.encode_exact_grads(enc),
        }
        self.encode_sgd(enc);
    }

    pub fn encode_sgd(&self, enc: &mut wgpu::CommandEncoder) {
        let g = groups(self.plan.params_len);
        let mut pass = self.begin(enc, "update");
        record(
            &mut pass,
            Dispatch {
                kernel: &self.kernels.sgd,
                bind: &self.sgd_params,
                groups: g,
            },
        );
        if let Some(bind) = &self.sgd_feedback {
            record(
                &mut pass,
                Dispatch {
                    kernel: &self.kernels.sgd,
                    bind,
                    groups: g,
                },
            );
        }
    }
}

crate::engine::ops::impl_ops!(GraphEngine, crate::graph::GraphParams);
