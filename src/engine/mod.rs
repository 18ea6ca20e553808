//! The engine: every buffer resident on the GPU, every pipeline and bind group built once, and
//! encoders for the forward pass, the relaxation, the local update and exact backprop.
//!
//! A training step is encoded into one command buffer with one submit and no readback:
//! forward (one dispatch per layer, the hidden ones also writing the relaxation start, the
//! output layer's also the output error) → T relaxation steps (all layers at once, ping-pong;
//! one dispatch each, or one for all with the resident kernel) → gradients → SGD.

mod build;
pub mod cooperative;
pub mod feed;
pub mod graph;
pub mod layout;
pub mod net;
pub mod ops;
pub mod resident;
mod step_table;
pub mod tune;

use std::cell::Cell;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use crate::gpu::buffers::{self, Dispatch, Kernel, Slot, TiledKernel, record};
use crate::gpu::{GpuContext, Needs, shader};
use crate::model::{ModelSpec, Params};
use crate::{Error, Result};
use cooperative::Cooperative;
pub use layout::{
    FLAG_ADAPTIVE, FLAG_FPRIME_ONLY, FLAG_LOSS_CE, FLAG_NO_RELAX_DERIV, FLAG_NO_UPDATE_DERIV,
    FLAG_OUTPUT_ERROR, FLAG_SGD_FEEDBACK, FLAG_WRITE_START, Layout, PassUniform, Shapes,
};
pub use ops::Ops;
pub use resident::RelaxKernel;
use resident::{Resident, check_resident};

mod options;
pub use options::{Algorithm, EngineOptions, Feedback, RelaxStart};

/// The output layer's label when its dispatch also computes the output error.
const FUSED_OUTPUT_LABEL: &str = "forward: output layer and error";
/// The forward pass's labels per layer when each dispatch is timed on its own (`bench
/// --kernel-times`); layers from the last label on share it.
const FORWARD_LABELS: [&str; 8] = [
    "forward: layer 1",
    "forward: layer 2",
    "forward: layer 3",
    "forward: layer 4",
    "forward: layer 5",
    "forward: layer 6",
    "forward: layer 7",
    "forward: layers 8 and up",
];

/// Mirror of `LossPass` in `shaders/loss.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct LossUniform {
    pub(crate) x_off: u32,
    pub(crate) r_off: u32,
    pub(crate) width: u32,
    pub(crate) batch: u32,
    pub(crate) kind: u32,
    pub(crate) scale: f32,
    pub(crate) pad: [u32; 2],
}

/// Mirror of `SumPass` in `shaders/grad_sum.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct GradSumUniform {
    count: u32,
    split: u32,
    flags: u32,
    lr: f32,
    decay: f32,
    pad: [u32; 3],
}

/// Mirror of `CheckPass` in `shaders/relax_check.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct CheckUniform {
    tol: f32,
    first: u32,
    count: u32,
    pad: u32,
}

/// Mirror of `SgdPass` in `shaders/sgd.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct SgdUniform {
    pub(crate) count: u32,
    pub(crate) lr: f32,
    pub(crate) decay: f32,
    pub(crate) pad: u32,
}

struct Kernels {
    /// Each layer's product, with the relaxation start or the output error (`forward_fused`).
    forward: TiledKernel,
    /// f' at the current relaxing state (`forward` with FLAG_FPRIME_ONLY), for the options
    /// that need it.
    derivative: Option<TiledKernel>,
    relax: TiledKernel,
    relax_check: Kernel,
    /// Weight and bias gradients of every layer (the bias as the product's extra column).
    param_grad: TiledKernel,
    /// The same, each followed by its parameter's SGD step (`fused_update`, unsplit).
    param_grad_sgd: Option<TiledKernel>,
    loss: Kernel,
    sgd: Kernel,
    /// Adds a split weight-gradient product's K chunks (see `EngineOptions::grad_split`).
    grad_sum: Kernel,
    /// The same, each sum followed by its parameter's SGD step (`fused_update`, split).
    grad_sum_sgd: Option<Kernel>,
}

/// GPU buffers. `r[0]`/`r[1]` are the ping-pong relaxation states.
pub struct Buffers {
    pub table: wgpu::Buffer,
    pub params: wgpu::Buffer,
    /// ψ for the random and learned feedback variants (absent for exact AR).
    pub feedback: Option<wgpu::Buffer>,
    pub x: wgpu::Buffer,
    pub fprime: wgpu::Buffer,
    pub r: [wgpu::Buffer; 2],
    pub target: wgpu::Buffer,
    pub stats: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    /// The K chunks' partial weight gradients, `[grad_split][params_len]`, when split.
    pub grad_parts: Option<wgpu::Buffer>,
    /// Adaptive relaxation's flags and counters (see `shaders/relax.wgsl`).
    pub conv: wgpu::Buffer,
    /// f' at the current relaxing state (the "no frozen forward pass" options).
    pub fp_cur: wgpu::Buffer,
}

struct Binds {
    forward: Vec<wgpu::BindGroup>,
    loss: wgpu::BindGroup,
    /// All hidden layers, reading r[i] and writing r[1 − i].
    relax_all: [wgpu::BindGroup; 2],
    /// One layer at a time with η = 1 (exact backprop), reading r[0] and writing r[1].
    relax_exact: Vec<Option<wgpu::BindGroup>>,
    /// One layer at a time with the configured η (the sweep schedule), r[0] → r[1].
    relax_single: Vec<Option<wgpu::BindGroup>>,
    relax_check: wgpu::BindGroup,
    /// The resident relaxation kernel, when chosen.
    resident: Option<Resident>,
    /// The cooperative relaxation kernel, when chosen.
    cooperative: Option<Cooperative>,
    /// f' at the current state of r[i] (the options that need it).
    derivative: Option<[wgpu::BindGroup; 2]>,
    /// The gradients from r[i] (for either entry: with or without the SGD step).
    param_grad: [wgpu::BindGroup; 2],
    /// Exact backprop's gradients always use the derivative, whatever the variant.
    param_grad_exact: wgpu::BindGroup,
    /// With split gradients: adds the chunks into `grads`.
    grad_sum: Option<wgpu::BindGroup>,
    sgd_params: wgpu::BindGroup,
    sgd_feedback: Option<wgpu::BindGroup>,
}

pub struct Engine {
    ctx: Arc<GpuContext>,
    pub spec: ModelSpec,
    pub opts: EngineOptions,
    pub layout: Layout,
    pub bufs: Buffers,
    kernels: Kernels,
    /// The tile shape of every tiled dispatch.
    pub shapes: Shapes,
    binds: Binds,
    relax_uniform: wgpu::Buffer,
    relax_single_uniforms: Vec<wgpu::Buffer>,
    sgd_uniform: wgpu::Buffer,
    sgd_feedback_uniform: wgpu::Buffer,
    /// The gradient passes, whose SGD entries read the lr there, with their contents
    /// (`set_lr` rewrites it).
    grad_uniforms: Vec<(wgpu::Buffer, PassUniform)>,
    grad_sum_uniform: Option<(wgpu::Buffer, GradSumUniform)>,
    /// Which of `bufs.r` holds the latest relaxation state.
    current: usize,
    /// The output layer's forward dispatch computes the output error (its tiles span the
    /// output's width); otherwise the loss kernel does, in a dispatch of its own.
    output_error_fused: bool,
    /// The last forward pass wrote the relaxation start into `r[0]` and nothing has written
    /// `r[0]` since, so the start needs no copy.
    start_written: Cell<bool>,
    /// GPU time per phase, when attached (benchmarks).
    timer: crate::gpu::profiler::PhaseTimer,
}

/// What the model needs from the device (checked before the device is created).
pub fn needs(spec: &ModelSpec, batch: usize, replicas: usize) -> Needs {
    let bytes = Layout::replicated(spec, batch, replicas.max(1)).max_buffer_bytes();
    Needs {
        max_binding_bytes: bytes,
        max_buffer_bytes: bytes,
        ..Needs::default()
    }
}

/// Most K chunks of the weight-gradient product.
pub const MAX_GRAD_SPLIT: usize = 64;

pub(crate) fn check_options(opts: &EngineOptions) -> Result<()> {
    if opts.batch == 0 {
        return Err(Error::Config("batch size must be at least 1".into()));
    }
    if opts.replicas == 0 {
        return Err(Error::Config("an engine needs at least one replica".into()));
    }
    if opts.replicas > 1 && opts.relax_tol.is_some() {
        return Err(Error::Config(
            "adaptive relaxation (relax_tol) decides one stop for the whole dispatch, so it \
             cannot train replicas side by side; train them one at a time"
                .into(),
        ));
    }
    if !(opts.relax_rate.is_finite() && opts.relax_rate > 0.0 && opts.relax_rate <= 2.0) {
        return Err(Error::Config(format!(
            "relax rate {} is outside (0, 2]; the Jacobi iteration diverges beyond 2",
            opts.relax_rate
        )));
    }
    if !opts.lr.is_finite() || opts.lr < 0.0 {
        return Err(Error::Config(format!(
            "learning rate {} must be finite and non-negative",
            opts.lr
        )));
    }
    if let Some(t) = opts.relax_tol
        && !(t.is_finite() && t > 0.0)
    {
        return Err(Error::Config(format!(
            "relax tolerance {t} must be positive"
        )));
    }
    if opts.relax_tol.is_some() && opts.sweep {
        return Err(Error::Config(
            "adaptive relaxation (relax_tol) needs the parallel schedule, not sweep".into(),
        ));
    }
    if !(1..=MAX_GRAD_SPLIT).contains(&opts.grad_split) {
        return Err(Error::Config(format!(
            "the weight gradients' K chunks (grad split) are 1 to {MAX_GRAD_SPLIT}, not {}",
            opts.grad_split
        )));
    }
    if !opts.feedback_decay.is_finite() || opts.feedback_decay < 0.0 {
        return Err(Error::Config(format!(
            "feedback decay {} must be finite and non-negative",
            opts.feedback_decay
        )));
    }
    Ok(())
}

/// An error unless `replica` is one of an engine's `replicas`.
pub(crate) fn check_replica(replica: usize, replicas: usize) -> Result<()> {
    if replica >= replicas {
        return Err(Error::Config(format!(
            "replica {replica} does not exist; the engine has {replicas}"
        )));
    }
    Ok(())
}

impl Engine {
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    // ---- host ↔ device -------------------------------------------------------------------

    /// Sets the parameters (of replica 0).
    pub fn set_params(&self, p: &Params) -> Result<()> {
        self.set_replica_params(0, p)
    }

    pub fn set_replica_params(&self, replica: usize, p: &Params) -> Result<()> {
        self.write_packed(&self.bufs.params, replica, p)
    }

    /// Uploads ψ (random or learned feedback) of replica 0. Errors for exact AR, which has no ψ.
    pub fn set_feedback(&self, p: &Params) -> Result<()> {
        self.set_replica_feedback(0, p)
    }

    pub fn set_replica_feedback(&self, replica: usize, p: &Params) -> Result<()> {
        let buf = self.bufs.feedback.as_ref().ok_or_else(|| {
            Error::Config("this engine uses W as its feedback; it has no ψ to set".into())
        })?;
        self.write_packed(buf, replica, p)
    }

    fn write_packed(&self, buf: &wgpu::Buffer, replica: usize, p: &Params) -> Result<()> {
        let flat = p.packed();
        let len = self.layout.replica_params_len;
        if flat.len() != len {
            return Err(Error::Config(format!(
                "parameters have {} values but the model needs {len}",
                flat.len(),
            )));
        }
        check_replica(replica, self.layout.replicas)?;
        self.ctx
            .queue
            .write_buffer(buf, (replica * len * 4) as u64, bytemuck::cast_slice(&flat));
        Ok(())
    }

    /// The parameters (of replica 0).
    pub fn params(&self) -> Result<Params> {
        self.replica_params(0)
    }

    pub fn replica_params(&self, replica: usize) -> Result<Params> {
        self.read_packed(&self.bufs.params, replica)
    }

    pub fn feedback(&self) -> Result<Option<Params>> {
        self.replica_feedback(0)
    }

    pub fn replica_feedback(&self, replica: usize) -> Result<Option<Params>> {
        self.bufs
            .feedback
            .as_ref()
            .map(|b| self.read_packed(b, replica))
            .transpose()
    }

    /// The last computed gradients (AR's or backprop's) of replica 0, in parameter layout.
    pub fn grads(&self) -> Result<Params> {
        self.replica_grads(0)
    }

    pub fn replica_grads(&self, replica: usize) -> Result<Params> {
        self.read_packed(&self.bufs.grads, replica)
    }

    fn read_packed(&self, buf: &wgpu::Buffer, replica: usize) -> Result<Params> {
        check_replica(replica, self.layout.replicas)?;
        let len = self.layout.replica_params_len;
        let flat = self.ctx.read_f32(buf, (replica * len) as u64, len as u64)?;
        Ok(Params::unpack(&self.spec, &flat))
    }

    /// Uploads one batch: `input` is [K·B, n_0] and `target` [K·B, n_L] (replica-major),
    /// row-major.
    pub fn set_batch(&self, input: &[f32], target: &[f32]) -> Result<()> {
        feed::upload_batch(self, input, target)
    }

    /// Changes the learning rate of later updates (e.g. a schedule).
    pub fn set_lr(&mut self, lr: f32) {
        self.opts.lr = lr;
        let u = |decay| SgdUniform {
            count: self.layout.params_len as u32,
            lr,
            decay,
            pad: 0,
        };
        let q = &self.ctx.queue;
        q.write_buffer(&self.sgd_uniform, 0, bytemuck::bytes_of(&u(0.0)));
        q.write_buffer(
            &self.sgd_feedback_uniform,
            0,
            bytemuck::bytes_of(&u(self.opts.feedback_decay)),
        );
        for (buf, pass) in &mut self.grad_uniforms {
            pass.rate = lr;
            q.write_buffer(buf, 0, bytemuck::bytes_of(pass));
        }
        if let Some((buf, pass)) = &mut self.grad_sum_uniform {
            pass.lr = lr;
            q.write_buffer(buf, 0, bytemuck::bytes_of(pass));
        }
    }

    /// Changes the relaxation rate η of later relaxation steps.
    pub fn set_relax_rate(&mut self, rate: f32) -> Result<()> {
        let mut o = self.opts.clone();
        o.relax_rate = rate;
        check_options(&o)?;
        self.opts.relax_rate = rate;
        let flags = self.opts.derivative_flags();
        let depth = self.spec.depth();
        let u = |first, count, flags| self.layout.pass(first, count, rate, flags);
        let q = &self.ctx.queue;
        let adaptive = if self.opts.relax_tol.is_some() {
            FLAG_ADAPTIVE
        } else {
            0
        };
        q.write_buffer(
            &self.relax_uniform,
            0,
            bytemuck::bytes_of(&u(1, depth - 1, flags | adaptive)),
        );
        for (l, buf) in self.relax_single_uniforms.iter().enumerate() {
            q.write_buffer(buf, 0, bytemuck::bytes_of(&u(l, 1, flags)));
        }
        if let Some(r) = &self.binds.resident {
            r.set_rate(q, &self.layout, flags, rate);
        }
        if let Some(c) = &self.binds.cooperative {
            c.set_rate(q, &self.layout, flags, rate);
        }
        Ok(())
    }

    /// Whether the output layer's forward dispatch also computes the output error (its tile is
    /// at least as wide as the output); otherwise a dispatch of its own does.
    pub fn fuses_output_error(&self) -> bool {
        self.output_error_fused
    }

    /// The resident relaxation kernel's split of the work, when that kernel is in use.
    pub fn resident_plan(&self) -> Option<&crate::gpu::resident::ResidentPlan> {
        self.binds.resident.as_ref().map(Resident::plan)
    }

    /// Reads the activities x_0 … x_L of the last forward pass.
    pub fn activities(&self) -> Result<Vec<Vec<f32>>> {
        let all = self
            .ctx
            .read_f32(&self.bufs.x, 0, self.layout.x_len as u64)?;
        Ok((0..=self.spec.depth())
            .map(|l| {
                let (o, n) = self.layout.x_block(l);
                all[o..o + n].to_vec()
            })
            .collect())
    }

    /// Reads f'_0 … f'_{L−1} of the last forward pass.
    pub fn derivatives(&self) -> Result<Vec<Vec<f32>>> {
        let all = self
            .ctx
            .read_f32(&self.bufs.fprime, 0, self.layout.fp_len as u64)?;
        Ok(self
            .layout
            .layers
            .iter()
            .step_by(self.layout.replicas)
            .map(|e| {
                let n = self.layout.rows() * e.n_out as usize;
                all[e.fp as usize..e.fp as usize + n].to_vec()
            })
            .collect())
    }

    /// An error if the relaxations since the engine was built are wrong: the cooperative kernel's
    /// grid barrier gave up (its workgroups did not all run at once), the resident kernel's lower
    /// part waited in vain, or the driver cut the resident or cooperative kernel's loops short
    /// (lavapipe's loop budget); Ok for the tiled
    /// kernel. One small read-back: call it once per epoch or benchmark, not per step.
    pub fn check_relaxation(&self) -> Result<()> {
        if let Some(r) = &self.binds.resident
            && let Some(why) = r.failure(&self.ctx)?
        {
            return Err(Error::Gpu(format!(
                "{why}, so the relaxations since the engine was built are wrong; use the tiled \
                 kernel"
            )));
        }
        let Some(c) = &self.binds.cooperative else {
            return Ok(());
        };
        let (groups, _) = c.size();
        match c.failure(&self.ctx)? {
            None => Ok(()),
            Some(cooperative::Failure::Barrier) => Err(Error::Gpu(format!(
                "the cooperative relaxation kernel needs its {groups} workgroups to run at the same \
                 time, and on this adapter they did not (a grid barrier gave up), so the \
                 relaxations since the engine was built are wrong; set a smaller cooperative \
                 group count (cooperative_groups, --cooperative-groups) or use the tiled kernel"
            ))),
            Some(cooperative::Failure::LoopBudget) => Err(Error::Gpu(format!(
                "the driver cut the cooperative relaxation kernel's loops short (lavapipe ends \
                 every loop of an invocation after 65535 iterations in all), so the relaxations \
                 since the engine was built are wrong; with {groups} workgroups the waits at its \
                 grid barriers spend that budget: use fewer (cooperative_groups, \
                 --cooperative-groups; 1 never waits) or the tiled kernel"
            ))),
        }
    }

    /// The cooperative kernel's workgroups per dispatch and tiles per step, when it is in use.
    pub fn cooperative_size(&self) -> Option<(u32, u32)> {
        self.binds.cooperative.as_ref().map(|c| c.size())
    }

    /// Reads the current relaxation state r_0 … r_L (r_0 empty).
    pub fn state(&self) -> Result<Vec<Vec<f32>>> {
        let all = self
            .ctx
            .read_f32(&self.bufs.r[self.current], 0, self.layout.r_len as u64)?;
        let mut out = vec![Vec::new()];
        for l in 1..=self.spec.depth() {
            let (o, n) = self.layout.r_block(l);
            out.push(all[o..o + n].to_vec());
        }
        Ok(out)
    }

    /// Per-sample loss and correctness of the last output-error pass (all replicas' rows).
    pub fn batch_stats(&self) -> Result<(Vec<f32>, Vec<bool>)> {
        feed::batch_stats(self)
    }

    // ---- encoders --------------------------------------------------------------------------

    /// Forward pass of every layer, then the output error (loss and clamp) from `target`: in
    /// the output layer's dispatch where its tiles span the output, else in one of its own.
    /// With the forward start, the hidden layers' dispatches also write it into `r[0]`.
    pub fn encode_forward(&self, enc: &mut wgpu::CommandEncoder) {
        let depth = self.spec.depth();
        let mut dispatches: Vec<_> = (0..depth)
            .map(|l| {
                let shape = self.shapes.forward[l];
                let label = if l + 1 == depth && self.output_error_fused {
                    FUSED_OUTPUT_LABEL
                } else {
                    FORWARD_LABELS[l.min(FORWARD_LABELS.len() - 1)]
                };
                let d = Dispatch {
                    kernel: self.kernels.forward.get(shape),
                    bind: &self.binds.forward[l],
                    groups: layout::groups(shape, &self.layout.forward_product(l)),
                };
                (label, d)
            })
            .collect();
        if !self.output_error_fused {
            let loss = Dispatch {
                kernel: &self.kernels.loss,
                bind: &self.binds.loss,
                groups: self.layout.rows().div_ceil(64) as u32,
            };
            dispatches.push(("forward: output error", loss));
        }
        self.timer.record_labelled(enc, "forward", &dispatches);
        self.start_written
            .set(self.opts.start == RelaxStart::Forward && depth > 1);
    }

    /// Sets the hidden relaxation state to its start (forward values or zero) in buffer 0.
    pub fn encode_relax_start(&mut self, enc: &mut wgpu::CommandEncoder) {
        let hidden = (self.layout.hidden_r_len() * 4) as u64;
        self.current = 0;
        if self.opts.relax_tol.is_some() {
            // Not converged, no steps used, per-layer maxima zero; keep the running total ([2]).
            enc.clear_buffer(&self.bufs.conv, 0, Some(8));
            enc.clear_buffer(&self.bufs.conv, 16, None);
        }
        if self.opts.relax_fprime_current || self.opts.update_fprime_current {
            // Layer 0's input never relaxes: its f' stays the forward one.
            enc.copy_buffer_to_buffer(
                &self.bufs.fprime,
                0,
                &self.bufs.fp_cur,
                0,
                (self.layout.fp_len * 4) as u64,
            );
        }
        if hidden == 0 {
            return;
        }
        match self.opts.start {
            // The forward pass wrote it, unless r[0] changed since.
            RelaxStart::Forward if self.start_written.take() => {}
            RelaxStart::Forward => {
                let from = (self.layout.r_base() * 4) as u64;
                enc.copy_buffer_to_buffer(&self.bufs.x, from, &self.bufs.r[0], 0, hidden);
            }
            RelaxStart::Zero => enc.clear_buffer(&self.bufs.r[0], 0, Some(hidden)),
        }
    }

    /// `steps` relaxation steps. Jacobi: one dispatch per step covering every hidden layer (plus
    /// a one-thread convergence check when adaptive). Sweep: one dispatch per layer, top-down.
    pub fn encode_relax(&mut self, enc: &mut wgpu::CommandEncoder, steps: usize) {
        let depth = self.spec.depth();
        if depth < 2 || steps == 0 {
            return;
        }
        self.start_written.set(false);
        if self.opts.sweep {
            return self.encode_sweep(enc, steps);
        }
        if let Some(r) = &self.binds.resident {
            let mut pass = self.begin(enc, "relax");
            self.current = r.record(&mut pass, &self.layout, steps, self.current);
            return;
        }
        if let Some(c) = &self.binds.cooperative {
            c.reset(enc);
            let mut pass = self.begin(enc, "relax");
            self.current = c.record(&mut pass, steps, self.current);
            return;
        }
        let shape = self.shapes.relax;
        let groups = layout::groups(shape, &self.layout.relax_products(1, depth - 1));
        let adaptive = self.opts.relax_tol.is_some();
        let mut pass = self.begin(enc, "relax");
        for _ in 0..steps {
            if self.opts.relax_fprime_current {
                self.record_derivative(&mut pass, self.current);
            }
            record(
                &mut pass,
                Dispatch {
                    kernel: self.kernels.relax.get(shape),
                    bind: &self.binds.relax_all[self.current],
                    groups,
                },
            );
            if adaptive {
                record(
                    &mut pass,
                    Dispatch {
                        kernel: &self.kernels.relax_check,
                        bind: &self.binds.relax_check,
                        groups: 1,
                    },
                );
            }
            self.current = 1 - self.current;
        }
    }

    /// Gauss–Seidel: layer L−1 first, each layer seeing the already-updated layer above.
    /// The state lives in buffer 0; each layer is computed into buffer 1 and copied back.
    fn encode_sweep(&mut self, enc: &mut wgpu::CommandEncoder, steps: usize) {
        debug_assert_eq!(self.current, 0, "sweep starts from buffer 0");
        for _ in 0..steps {
            if self.opts.relax_fprime_current {
                // Once per step, from the state the sweep starts the step with.
                let mut pass = self.begin(enc, "derivative");
                self.record_derivative(&mut pass, 0);
            }
            for l in (1..self.spec.depth()).rev() {
                self.encode_single_layer(enc, l, self.binds.relax_single[l].as_ref());
            }
        }
    }

    /// Relaxes layer `l` alone from buffer 0 into buffer 1 and copies it back into buffer 0.
    fn encode_single_layer(
        &self,
        enc: &mut wgpu::CommandEncoder,
        l: usize,
        bind: Option<&wgpu::BindGroup>,
    ) {
        {
            let mut pass = self.begin(enc, "relax-layer");
            record(
                &mut pass,
                Dispatch {
                    kernel: self.kernels.relax.get(self.shapes.single[l]),
                    bind: bind.expect("layers from 1 relax"),
                    groups: layout::groups(
                        self.shapes.single[l],
                        &self.layout.relax_products(l, 1),
                    ),
                },
            );
        }
        let (o, n) = self.layout.r_block(l);
        let (o, n) = ((o * 4) as u64, (n * 4) as u64);
        enc.copy_buffer_to_buffer(&self.bufs.r[1], o, &self.bufs.r[0], o, n);
    }

    /// Zeroes the running total of adaptive relaxation steps (at the start of an epoch).
    pub fn encode_relax_counter_reset(&self, enc: &mut wgpu::CommandEncoder) {
        enc.clear_buffer(&self.bufs.conv, 8, Some(4));
    }

    /// Mean relaxation steps per batch since the counter was reset: read from the GPU when
    /// adaptive, otherwise the fixed `cap`.
    pub fn relax_steps_used(&self, batches: usize, cap: usize) -> Result<f64> {
        if self.opts.relax_tol.is_none() {
            return Ok(cap as f64);
        }
        let v = self.ctx.read_u32(&self.bufs.conv, 2, 1)?;
        Ok(v[0] as f64 / batches.max(1) as f64)
    }

    /// Steps the last batch's adaptive relaxation used (None when not adaptive).
    pub fn last_relax_steps(&self) -> Result<Option<usize>> {
        if self.opts.relax_tol.is_none() {
            return Ok(None);
        }
        Ok(Some(self.ctx.read_u32(&self.bufs.conv, 1, 1)?[0] as usize))
    }

    /// Exact backprop signals: r_l = dLoss/dx_l, top-down, one layer per dispatch with η = 1.
    /// Leaves the result in buffer 0.
    pub fn encode_backprop_signals(&mut self, enc: &mut wgpu::CommandEncoder) {
        self.current = 0;
        self.start_written.set(false);
        // η = 1 multiplies the old state by zero; clearing keeps a stale NaN from surviving that.
        let hidden = (self.layout.hidden_r_len() * 4) as u64;
        if hidden > 0 {
            enc.clear_buffer(&self.bufs.r[0], 0, Some(hidden));
        }
        for l in (1..self.spec.depth()).rev() {
            self.encode_single_layer(enc, l, self.binds.relax_exact[l].as_ref());
        }
    }

    /// f' at the current state of buffer `src`, for every relaxing layer.
    fn record_derivative(&self, pass: &mut wgpu::ComputePass<'_>, src: usize) {
        let shape = self.shapes.derivative;
        let (kernel, binds) = self
            .kernels
            .derivative
            .as_ref()
            .zip(self.binds.derivative.as_ref())
            .expect("built when the options need f' at the current state");
        record(
            pass,
            Dispatch {
                kernel: kernel.get(shape),
                bind: &binds[src],
                groups: layout::groups(shape, &self.layout.derivative_products()),
            },
        );
    }

    /// Local gradients of every layer from the current relaxation state.
    pub fn encode_grads(&self, enc: &mut wgpu::CommandEncoder) {
        self.encode_grads_then(enc, false);
    }

    /// A training step's update: the gradients (AR's local ones, or backprop's), then SGD; with
    /// `fused_update`, each gradient takes its parameter's SGD step in the same dispatch.
    pub fn encode_update(&self, enc: &mut wgpu::CommandEncoder, algorithm: Algorithm) {
        let fused = self.opts.fused_update;
        match algorithm {
            Algorithm::Ar => self.encode_grads_then(enc, fused),
            Algorithm::Bp => self.encode_grads_with(enc, &self.binds.param_grad_exact, fused),
        }
        if !fused {
            self.encode_sgd(enc);
        }
    }

    fn encode_grads_then(&self, enc: &mut wgpu::CommandEncoder, sgd: bool) {
        if self.opts.update_fprime_current && self.spec.depth() > 1 {
            let mut pass = self.begin(enc, "derivative");
            self.record_derivative(&mut pass, self.current);
        }
        let hidden = (self.layout.hidden_r_len() * 4) as u64;
        if self.opts.update_input_relaxed && hidden > 0 {
            // The stored x̄ is not needed again this step; the relaxed r takes its place.
            let to = (self.layout.r_base() * 4) as u64;
            enc.copy_buffer_to_buffer(&self.bufs.r[self.current], 0, &self.bufs.x, to, hidden);
        }
        self.encode_grads_with(enc, &self.binds.param_grad[self.current], sgd);
    }

    /// The gradient products with `bind` (then the sum of their K chunks when split), the SGD
    /// step in the last of them when `sgd`.
    fn encode_grads_with(&self, enc: &mut wgpu::CommandEncoder, bind: &wgpu::BindGroup, sgd: bool) {
        let tiles = layout::groups(self.shapes.grad, &self.layout.grad_products());
        let built = "built for a fused update";
        // Unsplit, the products take the SGD step; split, their sum does.
        let split = self.binds.grad_sum.is_some();
        let kernel = if sgd && !split {
            self.kernels.param_grad_sgd.as_ref().expect(built)
        } else {
            &self.kernels.param_grad
        };
        let products = Dispatch {
            kernel: kernel.get(self.shapes.grad),
            bind,
            groups: tiles * self.opts.grad_split as u32,
        };
        let (products_label, sum_label) = if sgd {
            (
                "gradients: products, then SGD",
                "gradients: sum of the K chunks, then SGD",
            )
        } else {
            ("gradients: products", "gradients: sum of the K chunks")
        };
        let mut dispatches = Vec::with_capacity(2);
        match &self.binds.grad_sum {
            None => dispatches.push((products_label, products)),
            Some(bind) => {
                dispatches.push(("gradients: products", products));
                let sum = Dispatch {
                    kernel: if sgd {
                        self.kernels.grad_sum_sgd.as_ref().expect(built)
                    } else {
                        &self.kernels.grad_sum
                    },
                    bind,
                    groups: self.layout.params_len.div_ceil(256) as u32,
                };
                dispatches.push((sum_label, sum));
            }
        }
        let phase = if sgd {
            "gradients and update"
        } else {
            "gradients"
        };
        self.timer.record_labelled(enc, phase, &dispatches);
    }

    /// Exact backprop's gradients (always with the derivative), from buffer 0.
    pub fn encode_exact_grads(&self, enc: &mut wgpu::CommandEncoder) {
        self.encode_grads_with(enc, &self.binds.param_grad_exact, false);
    }

    /// SGD on W (and on ψ when feedback is learned) with the last gradients.
    pub fn encode_sgd(&self, enc: &mut wgpu::CommandEncoder) {
        let groups = self.layout.params_len.div_ceil(256) as u32;
        let mut pass = self.begin(enc, "update");
        record(
            &mut pass,
            Dispatch {
                kernel: &self.kernels.sgd,
                bind: &self.binds.sgd_params,
                groups,
            },
        );
        if let Some(bind) = &self.binds.sgd_feedback {
            record(
                &mut pass,
                Dispatch {
                    kernel: &self.kernels.sgd,
                    bind,
                    groups,
                },
            );
        }
    }

    // ---- whole operations --------------------------------------------------------------------
}

crate::engine::ops::impl_ops!(Engine, crate::model::Params);
