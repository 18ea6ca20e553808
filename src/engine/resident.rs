//! The resident relaxation kernel's host side (`shaders/relax_resident.wgsl`): several Jacobi
//! steps per dispatch (see `step_table.rs`), each workgroup owning a few samples and keeping
//! their state on chip; the split of its work is `gpu::resident::ResidentPlan`.

use bytemuck::{Pod, Zeroable};

use super::layout::Layout;
use super::step_table::StepTable;
use super::{Buffers, EngineOptions};
use crate::gpu::buffers::{Dispatch, Kernel, Slot};
use crate::gpu::resident::ResidentPlan;
use crate::gpu::{GpuContext, shader};
use crate::{Error, Result};

/// How the parallel relaxation is dispatched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RelaxKernel {
    /// One dispatch per step covering every layer, tiled over batch × width (`relax.wgsl`).
    #[default]
    Tiled,
    /// Several steps per dispatch, each workgroup owning a few samples and keeping their state
    /// on chip (`relax_resident.wgsl`); without the adaptive, sweep or current-derivative
    /// options.
    Resident,
    /// The tiled kernel's steps, several per dispatch, with a grid barrier between steps
    /// (`relax_cooperative.wgsl`; see `engine/cooperative.rs`); without the adaptive, sweep or
    /// current-derivative options.
    Cooperative,
}

impl std::str::FromStr for RelaxKernel {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "tiled" => Ok(Self::Tiled),
            "resident" => Ok(Self::Resident),
            "cooperative" => Ok(Self::Cooperative),
            other => Err(format!(
                "unknown relaxation kernel '{other}' (tiled, resident or cooperative)"
            )),
        }
    }
}

impl std::fmt::Display for RelaxKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tiled => "tiled",
            Self::Resident => "resident",
            Self::Cooperative => "cooperative",
        })
    }
}

/// Mirror of `ResidentPass` in `shaders/relax_resident.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct ResidentUniform {
    first: u32,
    count: u32,
    batch: u32,
    flags: u32,
    rate: f32,
    steps: u32,
    src: u32,
    replicas: u32,
    canary: u32,
    n_cols: u32,
    n_extra: u32,
    pad: u32,
}

/// The resident and cooperative kernels' limits, checked before anything is built.
pub(super) fn check_resident(opts: &EngineOptions) -> Result<()> {
    if opts.relax_kernel == RelaxKernel::Tiled {
        return Ok(());
    }
    if opts.relax_tol.is_some() || opts.sweep || opts.relax_fprime_current {
        return Err(Error::Config(format!(
            "the {} relaxation kernel runs fixed parallel steps with a frozen f'; adaptive \
             relaxation, the sweep schedule and f' at the current state need the tiled kernel",
            opts.relax_kernel
        )));
    }
    Ok(())
}

/// The resident kernel's pipeline, its one bind group over both relaxation buffers, and the
/// uniform table the dispatches index.
pub(super) struct Resident {
    kernel: Kernel,
    bind: wgpu::BindGroup,
    table: StepTable,
    /// Nonzero once a dispatch's loops were cut short.
    flag: wgpu::Buffer,
    plan: ResidentPlan,
}

impl Resident {
    /// `relax` holds the relaxation's weights (W or ψ) and derivatives (f' as chosen).
    pub(super) fn new(
        ctx: &GpuContext,
        layout: &Layout,
        opts: &EngineOptions,
        flags: u32,
        relax: [&wgpu::Buffer; 2],
        bufs: &Buffers,
    ) -> Result<Self> {
        let plan = ResidentPlan::new(
            &layout.widths,
            layout.batch,
            layout.replicas,
            opts.resident,
            ctx.workgroup_room(),
        )?;
        let device = &ctx.device;
        let table = StepTable::new(ctx, "resident relax passes");
        let kernel = Kernel::new(
            ctx,
            &shader::module_prefixed(ctx, "relax_resident.wgsl", &plan.constants()),
            "relax_resident",
            &[
                Slot::DynamicUniform,
                Slot::Read,
                Slot::Read,
                Slot::Read,
                Slot::ReadWrite,
                Slot::ReadWrite,
                Slot::ReadWrite,
                Slot::Read,
            ],
        );
        let flag = crate::gpu::buffers::storage(device, "resident relax flag", 1);
        let plan_buffer =
            crate::gpu::buffers::storage_init(device, "resident relax plan", &plan.layers);
        let bind = kernel.bind_windowed(
            device,
            &[
                table.buffer(),
                &bufs.table,
                relax[0],
                relax[1],
                &bufs.r[0],
                &bufs.r[1],
                &flag,
                &plan_buffer,
            ],
            Some(std::mem::size_of::<ResidentUniform>() as u64),
        );
        let me = Self {
            kernel,
            bind,
            table,
            flag,
            plan,
        };
        me.set_rate(&ctx.queue, layout, flags, opts.relax_rate);
        Ok(me)
    }

    /// The split of the work the kernel was compiled for.
    pub(crate) fn plan(&self) -> &ResidentPlan {
        &self.plan
    }

    /// (Re)writes the uniform table for relaxation rate `rate`.
    pub(super) fn set_rate(&self, queue: &wgpu::Queue, layout: &Layout, flags: u32, rate: f32) {
        self.table.write(queue, |steps, src| ResidentUniform {
            first: 1,
            count: layout.depth() as u32 - 1,
            batch: layout.batch as u32,
            flags,
            rate,
            steps,
            src,
            replicas: layout.replicas as u32,
            canary: 2,
            n_cols: self.plan.n_cols,
            n_extra: self.plan.n_extra,
            pad: 0,
        });
    }

    /// Whether the driver has cut a dispatch's loops short since the engine was built (every
    /// relaxation since then is wrong).
    pub(super) fn cut_short(&self, ctx: &GpuContext) -> Result<bool> {
        Ok(ctx.read_u32(&self.flag, 0, 1)?[0] != 0)
    }

    /// Records `steps` steps starting from relaxation buffer `current`; returns the buffer that
    /// then holds the state.
    pub(super) fn record(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        layout: &Layout,
        steps: usize,
        current: usize,
    ) -> usize {
        let d = Dispatch {
            kernel: &self.kernel,
            bind: &self.bind,
            groups: self.plan.groups(layout.batch, layout.replicas) as u32,
        };
        self.table.record(pass, d, steps, current)
    }
}
