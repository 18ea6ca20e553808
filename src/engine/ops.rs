//! The whole operations (a training step, AR's and backprop's gradients) written once over the
//! encoders that both engines provide.

use std::sync::Arc;

use super::Algorithm;
use crate::Result;
use crate::gpu::GpuContext;
use crate::gpu::profiler::PhaseTimer;

/// What an engine encodes; the provided methods build training steps and gradient readbacks.
/// Bring it into scope (`use arelax::engine::Ops`) to call them.
pub trait Ops {
    /// The gradients' host type (MLP `Params` or graph `GraphParams`).
    type Grads;

    fn gpu(&self) -> &Arc<GpuContext>;
    /// Forward pass of every layer or node, then the output error against the target.
    fn encode_forward(&self, enc: &mut wgpu::CommandEncoder);
    /// Hidden states to their start (forward values or zero).
    fn encode_relax_start(&mut self, enc: &mut wgpu::CommandEncoder);
    fn encode_relax(&mut self, enc: &mut wgpu::CommandEncoder, steps: usize);
    /// Exact dLoss/dx for every hidden layer or node.
    fn encode_backprop_signals(&mut self, enc: &mut wgpu::CommandEncoder);
    /// Local gradients from the current relaxation state (with the variant's options).
    fn encode_grads(&self, enc: &mut wgpu::CommandEncoder);
    /// Backprop's gradients (always with the derivative and the stored input).
    fn encode_exact_grads(&self, enc: &mut wgpu::CommandEncoder);
    fn encode_sgd(&self, enc: &mut wgpu::CommandEncoder);
    /// A training step's update: the gradients (AR's local ones, or backprop's) and the SGD
    /// step with them (in the gradients' own dispatch where the engine can).
    fn encode_update(&self, enc: &mut wgpu::CommandEncoder, algorithm: Algorithm);
    /// Reads the last computed gradients.
    fn grads(&self) -> Result<Self::Grads>;
    fn timer(&self) -> &PhaseTimer;
    fn timer_mut(&mut self) -> &mut PhaseTimer;

    /// Times every later pass by phase with timestamp queries. False when the device has none.
    fn enable_profiling(&mut self) -> bool {
        let ctx = self.gpu().clone();
        self.timer_mut().enable(&ctx)
    }

    /// With profiling enabled, stops (true) or resumes (false) writing timestamps; the passes
    /// are the same either way.
    fn pause_profiling(&mut self, paused: bool) {
        self.timer_mut().paused = paused;
    }

    /// With profiling on, time each dispatch as its own phase where the engine splits them (the
    /// forward layers, the graph engine's relaxation, the gradients); the work done is the same.
    fn set_kernel_times(&mut self, on: bool) {
        self.timer_mut().per_kernel = on;
    }

    /// Milliseconds of GPU time per phase since the last call (profiling must be enabled and
    /// the work submitted).
    fn phase_times(&self) -> Result<Vec<(&'static str, f64)>> {
        self.timer().read(self.gpu())
    }

    /// A compute pass, timed as `phase` when profiling.
    fn begin<'e>(
        &self,
        enc: &'e mut wgpu::CommandEncoder,
        phase: &'static str,
    ) -> wgpu::ComputePass<'e> {
        self.timer().begin(enc, phase)
    }

    fn submit(&self, enc: wgpu::CommandEncoder) {
        self.gpu().queue.submit([enc.finish()]);
    }

    fn encoder(&self) -> wgpu::CommandEncoder {
        self.gpu()
            .device
            .create_command_encoder(&Default::default())
    }

    /// One training step (AR with `steps` relaxation steps, or exact backprop, then SGD).
    fn encode_train_step(
        &mut self,
        enc: &mut wgpu::CommandEncoder,
        algorithm: Algorithm,
        steps: usize,
    ) {
        self.encode_forward(enc);
        match algorithm {
            Algorithm::Ar => {
                self.encode_relax_start(enc);
                self.encode_relax(enc, steps);
            }
            Algorithm::Bp => self.encode_backprop_signals(enc),
        }
        self.encode_update(enc, algorithm);
    }

    /// A training step on the uploaded batch in one submit, with no readback.
    fn train_step(&mut self, algorithm: Algorithm, steps: usize) {
        let mut enc = self.encoder();
        self.encode_train_step(&mut enc, algorithm, steps);
        self.submit(enc);
    }

    /// Forward, `steps` relaxation steps, local gradients; then reads the gradients back.
    fn ar_gradients(&mut self, steps: usize) -> Result<Self::Grads> {
        self.submit_ar_gradients(steps);
        self.grads()
    }

    /// [`Self::ar_gradients`] without the readback (the gradients stay on the GPU).
    fn submit_ar_gradients(&mut self, steps: usize) {
        let mut enc = self.encoder();
        self.encode_forward(&mut enc);
        self.encode_relax_start(&mut enc);
        self.encode_relax(&mut enc, steps);
        self.encode_grads(&mut enc);
        self.submit(enc);
    }

    /// AR's gradients after each step count in `checkpoints` (ascending), continuing one
    /// relaxation rather than restarting it.
    fn ar_gradient_series(&mut self, checkpoints: &[usize]) -> Result<Vec<Self::Grads>> {
        let mut enc = self.encoder();
        self.encode_forward(&mut enc);
        self.encode_relax_start(&mut enc);
        self.submit(enc);
        let mut done = 0;
        let mut out = Vec::new();
        for &c in checkpoints {
            let mut enc = self.encoder();
            self.encode_relax(&mut enc, c.saturating_sub(done));
            done = done.max(c);
            self.encode_grads(&mut enc);
            self.submit(enc);
            out.push(self.grads()?);
        }
        Ok(out)
    }

    /// Exact backprop's gradients on the current batch and parameters.
    fn bp_gradients(&mut self) -> Result<Self::Grads> {
        self.submit_bp_gradients();
        self.grads()
    }

    /// [`Self::bp_gradients`] without the readback (the gradients stay on the GPU).
    fn submit_bp_gradients(&mut self) {
        let mut enc = self.encoder();
        self.encode_forward(&mut enc);
        self.encode_backprop_signals(&mut enc);
        self.encode_exact_grads(&mut enc);
        self.submit(enc);
    }

    /// Waits for submitted work and surfaces any GPU error.
    fn finish(&self) -> Result<()> {
        self.gpu().wait()
    }
}

/// Implements [`Ops`] by forwarding to an engine's inherent encoders.
macro_rules! impl_ops {
    ($engine:ty, $grads:ty) => {
        impl $crate::engine::ops::Ops for $engine {
            type Grads = $grads;
            fn gpu(&self) -> &std::sync::Arc<$crate::gpu::GpuContext> {
                <$engine>::context(self)
            }
            fn encode_forward(&self, enc: &mut wgpu::CommandEncoder) {
                <$engine>::encode_forward(self, enc)
            }
            fn encode_relax_start(&mut self, enc: &mut wgpu::CommandEncoder) {
                <$engine>::encode_relax_start(self, enc)
            }
            fn encode_relax(&mut self, enc: &mut wgpu::CommandEncoder, steps: usize) {
                <$engine>::encode_relax(self, enc, steps)
            }
            fn encode_backprop_signals(&mut self, enc: &mut wgpu::CommandEncoder) {
                <$engine>::encode_backprop_signals(self, enc)
            }
            fn encode_grads(&self, enc: &mut wgpu::CommandEncoder) {
                <$engine>::encode_grads(self, enc)
            }
            fn encode_exact_grads(&self, enc: &mut wgpu::CommandEncoder) {
                <$engine>::encode_exact_grads(self, enc)
            }
            fn encode_sgd(&self, enc: &mut wgpu::CommandEncoder) {
                <$engine>::encode_sgd(self, enc)
            }
            fn encode_update(
                &self,
                enc: &mut wgpu::CommandEncoder,
                algorithm: $crate::engine::Algorithm,
            ) {
                <$engine>::encode_update(self, enc, algorithm)
            }
            fn grads(&self) -> $crate::Result<$grads> {
                <$engine>::grads(self)
            }
            fn timer(&self) -> &$crate::gpu::profiler::PhaseTimer {
                &self.timer
            }
            fn timer_mut(&mut self) -> &mut $crate::gpu::profiler::PhaseTimer {
                &mut self.timer
            }
        }
    };
}
pub(crate) use impl_ops;
