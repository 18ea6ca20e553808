//! GPU time per phase from timestamp queries written at compute-pass boundaries (the portable
//! place for them). Off unless the device has `TIMESTAMP_QUERY` and a profiler is attached.

use std::cell::RefCell;

use super::GpuContext;
use super::buffers::{Dispatch, record};
use crate::Result;

/// Pairs of timestamps, at most this many passes between two reads.
const CAPACITY: u32 = 2048;

pub struct Profiler {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    /// Phase of each recorded pass, in query order.
    phases: RefCell<Vec<&'static str>>,
}

impl Profiler {
    /// A profiler, or None when the device cannot write timestamps.
    pub fn new(ctx: &GpuContext) -> Option<Self> {
        if !ctx.timestamps {
            return None;
        }
        let queries = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("phase timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * CAPACITY,
        });
        let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamp resolve"),
            size: 2 * CAPACITY as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Some(Self {
            queries,
            resolve,
            phases: RefCell::new(Vec::new()),
        })
    }

    /// Timestamp writes for the next pass of `phase` (None once full: later passes go untimed).
    pub fn writes(&self, phase: &'static str) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let mut phases = self.phases.borrow_mut();
        let i = phases.len() as u32;
        if i >= CAPACITY {
            return None;
        }
        phases.push(phase);
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(2 * i),
            end_of_pass_write_index: Some(2 * i + 1),
        })
    }

    /// Resolves the recorded passes (after their work was submitted) and returns milliseconds
    /// per phase, summed over passes, in first-seen order; then starts afresh.
    pub fn read(&self, ctx: &GpuContext) -> Result<Vec<(&'static str, f64)>> {
        let phases = std::mem::take(&mut *self.phases.borrow_mut());
        if phases.is_empty() {
            return Ok(Vec::new());
        }
        let n = 2 * phases.len() as u32;
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        enc.resolve_query_set(&self.queries, 0..n, &self.resolve, 0);
        ctx.queue.submit([enc.finish()]);
        let bytes = ctx.read_bytes(&self.resolve, 0, n as u64 * 8)?;
        let ticks: &[u64] = bytemuck::cast_slice(&bytes);
        let period = ctx.queue.get_timestamp_period() as f64;
        let mut out: Vec<(&'static str, f64)> = Vec::new();
        for (i, phase) in phases.iter().enumerate() {
            let ms = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period / 1e6;
            match out.iter_mut().find(|(p, _)| p == phase) {
                Some(e) => e.1 += ms,
                None => out.push((phase, ms)),
            }
        }
        Ok(out)
    }
}

/// An engine's optional profiler: once enabled, every pass begun through it is timed by phase.
/// With `per_kernel` set, engines that support it give each dispatch its own labelled pass, so
/// the phases become kernels ("relax: dense VJPs"); the work done is the same.
#[derive(Default)]
pub struct PhaseTimer {
    profiler: Option<Profiler>,
    pub per_kernel: bool,
    /// Enabled, but writing no timestamps for now.
    pub paused: bool,
}

impl PhaseTimer {
    /// Starts timing later passes. False when the device has no timestamp queries.
    pub fn enable(&mut self, ctx: &GpuContext) -> bool {
        self.profiler = Profiler::new(ctx);
        self.profiler.is_some()
    }

    /// Milliseconds per phase since the last read (empty when not enabled).
    pub fn read(&self, ctx: &GpuContext) -> Result<Vec<(&'static str, f64)>> {
        match &self.profiler {
            Some(p) => p.read(ctx),
            None => Ok(Vec::new()),
        }
    }

    /// Records `dispatches` in one pass labelled `phase`, or, with `per_kernel`, each in its
    /// own pass under its own label.
    pub fn record_labelled(
        &self,
        enc: &mut wgpu::CommandEncoder,
        phase: &'static str,
        dispatches: &[(&'static str, Dispatch<'_>)],
    ) {
        if self.per_kernel {
            for &(label, d) in dispatches {
                record(&mut self.begin(enc, label), d);
            }
        } else {
            let mut pass = self.begin(enc, phase);
            for &(_, d) in dispatches {
                record(&mut pass, d);
            }
        }
    }

    /// A compute pass labelled `phase`, timed when enabled.
    pub fn begin<'e>(
        &self,
        enc: &'e mut wgpu::CommandEncoder,
        phase: &'static str,
    ) -> wgpu::ComputePass<'e> {
        enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(phase),
            timestamp_writes: self
                .profiler
                .as_ref()
                .filter(|_| !self.paused)
                .and_then(|p| p.writes(phase)),
        })
    }
}
