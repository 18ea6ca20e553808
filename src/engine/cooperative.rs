//! The cooperative relaxation kernel's host side (`shaders/relax_cooperative.wgsl`): the tiled
//! kernel's steps computed by a fixed set of workgroups that meet at a grid-wide barrier instead
//! of a dispatch boundary, so a relaxation of T steps is a few dispatches, not T.
//!
//! As with the resident kernel, T steps are as few dispatches as the step cap allows (see
//! `step_table.rs`).
//! The barrier needs every workgroup of a dispatch to be running at once; WebGPU does not
//! promise that, so the workgroup count is capped ([`EngineOptions::cooperative_groups`]), and
//! a barrier that waits too long raises a flag that
//! [`Engine::check_relaxation`](super::Engine::check_relaxation) reads: an error, never a hang
//! or a silent wrong result.

use bytemuck::{Pod, Zeroable};

use super::layout::{self, Layout};
use super::step_table::StepTable;
use super::{Buffers, EngineOptions};
use crate::gpu::buffers::{self as gpu_buffers, Dispatch, Kernel, Slot};
use crate::gpu::tile::TileShape;
use crate::gpu::{GpuContext, shader};
use crate::{Error, Result};

/// Workgroups of a cooperative dispatch on a GPU when not set: two per multiprocessor of an
/// H100 (132), about the most a desktop GPU runs at once with 256-thread groups. Fewer than the
/// tiles of a step means each workgroup computes several tiles per step.
pub const DEFAULT_GPU_GROUPS: usize = 256;
/// Counter polls before a barrier gives up. A GPU poll reads the L2 cache (under a microsecond),
/// so about a second at most. (On lavapipe the loop budget ends the wait sooner.)
const SPIN_LIMIT: u32 = 1 << 20;

/// Mirror of `CooperativePass` in `shaders/relax_cooperative.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct CooperativeUniform {
    first: u32,
    count: u32,
    batch: u32,
    flags: u32,
    rate: f32,
    steps: u32,
    src: u32,
    groups: u32,
    tiles: u32,
    spin_limit: u32,
    canary: u32,
    pad: u32,
}

/// The workgroup cap for an adapter: the option if given, else 1 on a CPU adapter and
/// [`DEFAULT_GPU_GROUPS`] on a GPU. Lavapipe runs one workgroup per CPU thread at once, but a
/// workgroup waiting there spends its loop budget (see `step_table.rs`), so by default it does
/// not wait at all.
pub fn group_cap(opts: &EngineOptions, device_type: wgpu::DeviceType) -> usize {
    opts.cooperative_groups
        .unwrap_or(if device_type == wgpu::DeviceType::Cpu {
            1
        } else {
            DEFAULT_GPU_GROUPS
        })
}

/// Why a cooperative relaxation went wrong (the shader's `FAILED_*` codes).
pub(super) enum Failure {
    /// A grid barrier gave up waiting: the workgroups were not all running at once.
    Barrier,
    /// The driver cut the kernel's loops short.
    LoopBudget,
}

/// The cooperative kernel's pipeline (compiled for the relaxation's tile shape), its bind group,
/// uniform table and barrier buffer.
pub(super) struct Cooperative {
    kernel: Kernel,
    bind: wgpu::BindGroup,
    table: StepTable,
    /// [0] the failure flag, [1] the barrier counter.
    sync: wgpu::Buffer,
    groups: u32,
    tiles: u32,
}

impl Cooperative {
    /// `relax` holds the relaxation's weights (W or ψ) and derivatives (f').
    pub(super) fn new(
        ctx: &GpuContext,
        layout: &Layout,
        opts: &EngineOptions,
        shape: TileShape,
        flags: u32,
        relax: [&wgpu::Buffer; 2],
        bufs: &Buffers,
    ) -> Result<Self> {
        let device = &ctx.device;
        let depth = layout.depth();
        let tiles = layout::groups(shape, &layout.relax_products(1, depth - 1));
        let cap = group_cap(opts, ctx.info.device_type);
        if cap == 0 {
            return Err(Error::Config(
                "cooperative_groups must be at least 1".into(),
            ));
        }
        let groups = tiles.min(cap as u32).max(1);
        let kernel = Kernel::new(
            ctx,
            &shader::module_with(ctx, "relax_cooperative.wgsl", shape),
            "relax_cooperative",
            &[
                Slot::DynamicUniform,
                Slot::Read,
                Slot::Read,
                Slot::Read,
                Slot::ReadWrite,
                Slot::ReadWrite,
                Slot::ReadWrite,
            ],
        );
        let table = StepTable::new(ctx, "cooperative relax passes", 1);
        let sync = gpu_buffers::storage(device, "cooperative barrier", 2);
        let bind = kernel.bind_windowed(
            device,
            &[
                table.buffer(),
                &bufs.table,
                relax[0],
                relax[1],
                &bufs.r[0],
                &bufs.r[1],
                &sync,
            ],
            Some(std::mem::size_of::<CooperativeUniform>() as u64),
        );
        let me = Self {
            kernel,
            bind,
            table,
            sync,
            groups,
            tiles,
        };
        me.set_rate(&ctx.queue, layout, flags, opts.relax_rate);
        Ok(me)
    }

    /// Workgroups per dispatch, and tiles per step.
    pub(super) fn size(&self) -> (u32, u32) {
        (self.groups, self.tiles)
    }

    /// (Re)writes the uniform table for relaxation rate `rate`.
    pub(super) fn set_rate(&self, queue: &wgpu::Queue, layout: &Layout, flags: u32, rate: f32) {
        let (first, count) = layout.entries(1, layout.depth() - 1);
        self.table.write(queue, |steps, src, _| CooperativeUniform {
            first,
            count,
            batch: layout.batch as u32,
            flags,
            rate,
            steps,
            src,
            groups: self.groups,
            tiles: self.tiles,
            spin_limit: SPIN_LIMIT,
            canary: 2,
            pad: 0,
        });
    }

    /// Zeroes the barrier counter (not the failure flag); recorded before each relaxation's pass.
    pub(super) fn reset(&self, enc: &mut wgpu::CommandEncoder) {
        enc.clear_buffer(&self.sync, 4, None);
    }

    /// Records `steps` steps starting from relaxation buffer `current`; returns the buffer that
    /// then holds the state.
    pub(super) fn record(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        steps: usize,
        current: usize,
    ) -> usize {
        let d = Dispatch {
            kernel: &self.kernel,
            bind: &self.bind,
            groups: self.groups,
        };
        self.table.record(pass, &[d], steps, current)
    }

    /// Whether a relaxation has gone wrong since the engine was built, and why; every
    /// relaxation since then is wrong.
    pub(super) fn failure(&self, ctx: &GpuContext) -> Result<Option<Failure>> {
        Ok(match ctx.read_u32(&self.sync, 0, 1)?[0] {
            0 => None,
            1 => Some(Failure::Barrier),
            _ => Some(Failure::LoopBudget),
        })
    }
}
