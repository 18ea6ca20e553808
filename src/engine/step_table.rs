//! The uniform table of the relaxation kernels that run several steps per dispatch (resident,
//! cooperative). A relaxation of T steps is recorded as T's binary digits (100 = 64 + 32 + 4:
//! three dispatches), each dispatch picking its step count 2^c and its starting buffer by a
//! dynamic offset into this table. With several variants (the resident kernel's parts run one
//! after another on a CPU adapter), each chunk is that many dispatches, one per variant.

use crate::gpu::GpuContext;
use crate::gpu::buffers::{Dispatch, record_at};

/// Step counts per dispatch: powers of two up to 2^8.
const CHUNKS: usize = 9;
/// The largest chunk on a CPU adapter, 2^4: lavapipe ends every loop of an invocation once it has
/// run 65535 loop iterations in all (the kernels detect that, see `loop_budget_spent` in
/// `shaders/common.wgsl`), and a chunk's steps all count against that budget.
const CPU_MAX_CHUNK: usize = 4;

pub(super) struct StepTable {
    buffer: wgpu::Buffer,
    /// Bytes between entries (the device's uniform offset alignment).
    stride: u32,
    /// The largest step count of one dispatch is 2^max_chunk.
    max_chunk: usize,
    /// Dispatches per chunk, each with an entry of its own.
    variants: usize,
}

impl StepTable {
    pub(super) fn new(ctx: &GpuContext, label: &str, variants: usize) -> Self {
        let stride = ctx.device.limits().min_uniform_buffer_offset_alignment;
        Self {
            buffer: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (stride as usize * 2 * CHUNKS * variants) as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            stride,
            max_chunk: if ctx.info.device_type == wgpu::DeviceType::Cpu {
                CPU_MAX_CHUNK
            } else {
                CHUNKS - 1
            },
            variants,
        }
    }

    /// At most 2^`max_chunk` steps per dispatch.
    pub(super) fn cap(mut self, max_chunk: usize) -> Self {
        self.max_chunk = self.max_chunk.min(max_chunk);
        self
    }

    /// The most steps one dispatch runs.
    pub(super) fn max_steps(&self) -> usize {
        1 << self.max_chunk
    }

    /// The buffer to bind (a window of one entry, with a dynamic offset).
    pub(super) fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// (Re)writes every entry: `entry(steps, src, variant)` for each step count 2^c, starting
    /// buffer and variant.
    pub(super) fn write<T: bytemuck::Pod>(
        &self,
        queue: &wgpu::Queue,
        entry: impl Fn(u32, u32, usize) -> T,
    ) {
        let stride = self.stride as usize;
        let mut bytes = vec![0u8; stride * 2 * CHUNKS * self.variants];
        for c in 0..CHUNKS {
            for src in 0..2 {
                for v in 0..self.variants {
                    let at = self.entry(c, src, v) as usize;
                    bytes[at..at + std::mem::size_of::<T>()]
                        .copy_from_slice(bytemuck::bytes_of(&entry(1 << c, src as u32, v)));
                }
            }
        }
        queue.write_buffer(&self.buffer, 0, &bytes);
    }

    /// The byte offset of an entry.
    fn entry(&self, chunk: usize, src: usize, variant: usize) -> u32 {
        (((chunk * 2 + src) * self.variants + variant) as u32) * self.stride
    }

    /// Records the dispatches `d` (one per variant, in order) once per binary digit of `steps`,
    /// starting from relaxation buffer `current`; returns the buffer that then holds the state.
    pub(super) fn record(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        d: &[Dispatch<'_>],
        steps: usize,
        mut current: usize,
    ) -> usize {
        debug_assert_eq!(d.len(), self.variants);
        let mut left = steps;
        while left > 0 {
            // The largest power-of-two chunk that fits: T's binary digits, high first.
            let c = (left.min(1 << self.max_chunk).ilog2()) as usize;
            for (v, &d) in d.iter().enumerate() {
                record_at(pass, d, self.entry(c, current, v));
            }
            current = (current + (1 << c)) % 2;
            left -= 1 << c;
        }
        current
    }
}
