//! The uniform table of the relaxation kernels that run several steps per dispatch (resident,
//! cooperative). The table holds an entry for every step count a dispatch may run (1 to the
//! cap), so a relaxation of T steps up to the cap is one dispatch, and a longer one is dispatches
//! of the cap's size and one of the rest (every dispatch boundary costs a drain and a ramp-up of
//! the GPU). Each dispatch picks its step count and its starting buffer by a dynamic offset into
//! the table. With several variants (the resident kernel's parts run one after another on a CPU
//! adapter), each chunk is that many dispatches, one per variant.

use crate::gpu::GpuContext;
use crate::gpu::buffers::{Dispatch, record_at};

/// The most steps one dispatch runs on a GPU.
const GPU_MAX_STEPS: usize = 256;
/// The most on a CPU adapter: lavapipe ends every loop of an invocation once it has run 65535
/// loop iterations in all (the kernels detect that, see `loop_budget_spent` in
/// `shaders/common.wgsl`), and a dispatch's steps all count against that budget.
const CPU_MAX_STEPS: usize = 16;

pub(super) struct StepTable {
    buffer: wgpu::Buffer,
    /// Bytes between entries (the device's uniform offset alignment).
    stride: u32,
    /// Entries per starting buffer and variant: step counts 1 to this.
    counts: usize,
    /// The most steps one dispatch runs (at most `counts`).
    max_steps: usize,
    /// Dispatches per chunk, each with an entry of its own.
    variants: usize,
}

impl StepTable {
    pub(super) fn new(ctx: &GpuContext, label: &str, variants: usize) -> Self {
        let stride = ctx.device.limits().min_uniform_buffer_offset_alignment;
        let counts = if ctx.info.device_type == wgpu::DeviceType::Cpu {
            CPU_MAX_STEPS
        } else {
            GPU_MAX_STEPS
        };
        Self {
            buffer: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (stride as usize * 2 * counts * variants) as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            stride,
            counts,
            max_steps: counts,
            variants,
        }
    }

    /// At most `max_steps` steps per dispatch (at least 1).
    pub(super) fn cap(mut self, max_steps: usize) -> Self {
        self.max_steps = self.max_steps.min(max_steps.max(1));
        self
    }

    /// The most steps one dispatch runs.
    pub(super) fn max_steps(&self) -> usize {
        self.max_steps
    }

    /// The buffer to bind (a window of one entry, with a dynamic offset).
    pub(super) fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// (Re)writes every entry: `entry(steps, src, variant)` for each step count, starting
    /// buffer and variant.
    pub(super) fn write<T: bytemuck::Pod>(
        &self,
        queue: &wgpu::Queue,
        entry: impl Fn(u32, u32, usize) -> T,
    ) {
        let stride = self.stride as usize;
        let mut bytes = vec![0u8; stride * 2 * self.counts * self.variants];
        for n in 1..=self.counts {
            for src in 0..2 {
                for v in 0..self.variants {
                    let at = self.entry(n, src, v) as usize;
                    bytes[at..at + std::mem::size_of::<T>()]
                        .copy_from_slice(bytemuck::bytes_of(&entry(n as u32, src as u32, v)));
                }
            }
        }
        queue.write_buffer(&self.buffer, 0, &bytes);
    }

    /// The byte offset of the entry for `steps` steps (1 to `counts`).
    fn entry(&self, steps: usize, src: usize, variant: usize) -> u32 {
        debug_assert!((1..=self.counts).contains(&steps));
        ((((steps - 1) * 2 + src) * self.variants + variant) as u32) * self.stride
    }

    /// Records the dispatches `d` (one per variant, in order) for each chunk of `steps` (see
    /// [`chunks`]), starting from relaxation buffer `current`; returns the buffer that
    /// then holds the state.
    pub(super) fn record(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        d: &[Dispatch<'_>],
        steps: usize,
        mut current: usize,
    ) -> usize {
        debug_assert_eq!(d.len(), self.variants);
        for n in chunks(steps, self.max_steps) {
            for (v, &d) in d.iter().enumerate() {
                record_at(pass, d, self.entry(n, current, v));
            }
            current = (current + n) % 2;
        }
        current
    }
}

/// The steps of each dispatch for a relaxation of `steps` at most `max` per dispatch: `max`
/// while more are left, then the rest.
fn chunks(steps: usize, max: usize) -> impl Iterator<Item = usize> {
    (0..steps.div_ceil(max)).map(move |i| max.min(steps - i * max))
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn a_relaxation_is_as_few_dispatches_as_the_cap_allows() {
        let of = |steps, max| chunks(steps, max).collect::<Vec<_>>();
        assert_eq!(of(100, 256), [100]);
        assert_eq!(of(256, 256), [256]);
        assert_eq!(of(300, 256), [256, 44]);
        assert_eq!(of(100, 16), [16, 16, 16, 16, 16, 16, 4]);
        assert_eq!(of(7, 16), [7]);
        assert_eq!(of(1, 1), [1]);
        assert!(of(0, 16).is_empty());
    }
}
