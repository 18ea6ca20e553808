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
    spin_limit: u32,
    part0: u32,
    part_end: u32,
}

/// Polls before a lower part's wait gives up: far beyond any real wait (a step takes
/// microseconds), and still a bounded time if the upper part never ran.
const SPIN_LIMIT: u32 = 1 << 20;
/// The largest buffer of posts (the upper parts' inputs for the lower ones, every step of a
/// dispatch) the kernel allocates, if the device's binding limit allows it; with parts, a
/// dispatch runs as many steps as fit (at batch 64 of the paper's MLP, 256 steps post 20 MB; at
/// 4096, a step posts 4.9 MB).
const MAX_POSTED_BYTES: u64 = 256 << 20;

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
    /// [0]: 1 once a dispatch's loops were cut short, 2 once a lower part's wait gave up; then
    /// the parts' counts and posts (see the kernel).
    flag: wgpu::Buffer,
    plan: ResidentPlan,
    /// The parts each dispatch of a chunk runs: all at once, or (on a CPU adapter) the upper
    /// then the lower ones.
    part_ranges: Vec<(u32, u32)>,
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
        // On a CPU adapter the parts run one after another: the upper parts in one dispatch,
        // then the lower ones, whose waits then end at once. Run together on lavapipe, which
        // budgets loop iterations, a lower part's wait gave up now and then (README).
        let split = plan.parts > 1 && ctx.info.device_type == wgpu::DeviceType::Cpu;
        let (parts, upper) = (plan.parts, plan.roles[0].publish);
        let part_ranges = if split && upper == 1 {
            vec![(0, 1), (1, parts)]
        } else {
            vec![(0, parts)]
        };
        let device = &ctx.device;
        let mut table = StepTable::new(ctx, "resident relax passes", part_ranges.len());
        // With parts, each step's input of the lowest relaxed layer, for every row: the posts
        // hold every step of a dispatch, so their room caps its steps.
        let posted_per_step = if plan.parts > 1 {
            layout.replicas * layout.batch * plan.lowest_k as usize
        } else {
            0
        };
        if posted_per_step > 0 {
            let limit = device
                .limits()
                .max_storage_buffer_binding_size
                .min(MAX_POSTED_BYTES);
            let fit = (limit / (4 * posted_per_step as u64)) as usize;
            if fit == 0 {
                return Err(Error::Config(format!(
                    "the resident kernel with {} parts per row block posts {:.1} MB per \
                     relaxation step at this batch size, more than the {} MB it allows: use \
                     one part (p1) or a smaller batch",
                    plan.parts,
                    (4 * posted_per_step) as f64 / (1 << 20) as f64,
                    limit >> 20
                )));
            }
            table = table.cap(fit);
        }
        let blocks = plan.blocks(layout.batch, layout.replicas);
        let posted_len = table.max_steps() * posted_per_step;
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
                Slot::Read,
            ],
        );
        // The failure flag, the parts' counts and their posts (see the kernel).
        let flag = crate::gpu::buffers::storage(
            device,
            "resident relax flag, counts and posts",
            1 + 2 * blocks + posted_len,
        );
        let roles = crate::gpu::buffers::storage_init(
            device,
            "resident relax roles and items",
            &plan.roles_words(),
        );
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
                &roles,
            ],
            Some(std::mem::size_of::<ResidentUniform>() as u64),
        );
        let me = Self {
            kernel,
            bind,
            table,
            flag,
            plan,
            part_ranges,
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
        self.table.write(queue, |steps, src, v| ResidentUniform {
            first: 1,
            count: layout.depth() as u32 - 1,
            batch: layout.batch as u32,
            flags,
            rate,
            steps,
            src,
            replicas: layout.replicas as u32,
            canary: 2,
            spin_limit: SPIN_LIMIT,
            part0: self.part_ranges[v].0,
            part_end: self.part_ranges[v].1,
        });
    }

    /// Why the relaxations since the engine was built are wrong, if they are: the driver cut a
    /// dispatch's loops short, or a lower part waited in vain for its upper part.
    pub(super) fn failure(&self, ctx: &GpuContext) -> Result<Option<&'static str>> {
        Ok(match ctx.read_u32(&self.flag, 0, 1)?[0] {
            0 => None,
            1 => Some(
                "the driver cut the resident relaxation kernel's loops short (lavapipe ends \
                 every loop of an invocation after 65535 iterations in all)",
            ),
            _ => Some(
                "a lower part of the resident relaxation kernel gave up waiting for its upper \
                 part (its workgroups did not run in the order dispatched)",
            ),
        })
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
        let blocks = self.plan.blocks(layout.batch, layout.replicas) as u32;
        let d: Vec<Dispatch> = self
            .part_ranges
            .iter()
            .map(|&(p0, p1)| Dispatch {
                kernel: &self.kernel,
                bind: &self.bind,
                groups: blocks * (p1 - p0),
            })
            .collect();
        self.table.record(pass, &d, steps, current)
    }
}
