//! What an engine is asked to do: the algorithm, the relaxation's start, rate and kernel, the
//! feedback weights, the derivative options and the batch, shared by the MLP and graph engines.

use super::layout::{FLAG_NO_RELAX_DERIV, FLAG_NO_UPDATE_DERIV};
use super::resident::RelaxKernel;
use crate::gpu::resident::ResidentShape;
use crate::gpu::tile::TileChoice;
use crate::model::Reduction;

/// Where the hidden relaxation state starts: the forward activities (the paper) or zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RelaxStart {
    Forward,
    Zero,
}

/// Which weights carry the relaxation signal backwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feedback {
    /// W itself (exact AR).
    Transpose,
    /// Fixed random ψ (feedback alignment).
    Random,
    /// ψ updated with the forward gradient (Kolen–Pollack style).
    Learned,
}

/// Settings fixed for the life of an engine (they shape buffers and bind groups).
#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub batch: usize,
    pub reduction: Reduction,
    pub relax_rate: f32,
    pub relax_derivative: bool,
    pub update_derivative: bool,
    pub start: RelaxStart,
    pub feedback: Feedback,
    pub lr: f32,
    /// Weight decay applied to both W and ψ when feedback is learned (aligns ψ with W).
    pub feedback_decay: f32,
    /// Adaptive relaxation: stop a batch once max over layers of max|Δr_l| / max|r_l| over one
    /// step falls below this (the step count passed to the encoders is then a cap).
    pub relax_tol: Option<f32>,
    /// Top-down in-place relaxation (Gauss–Seidel, the authors' code) instead of Jacobi.
    pub sweep: bool,
    /// "No frozen forward pass" (second paper): f' in the relaxation taken at the current state,
    /// f'(r_l W_lᵀ + b_l), recomputed every step.
    pub relax_fprime_current: bool,
    /// f' in the weight update taken at the relaxed state.
    pub update_fprime_current: bool,
    /// The weight update's pre-synaptic activity is the relaxed r_l instead of the stored x̄_l.
    pub update_input_relaxed: bool,
    /// Tile shapes of the matrix products (the size table, or one shape forced).
    pub tile: TileChoice,
    /// How the parallel relaxation is dispatched.
    pub relax_kernel: RelaxKernel,
    /// The resident kernel's rows and threads per workgroup, loads in flight and K order (where
    /// unset, chosen from the batch and the device; see [`crate::gpu::resident::ResidentPlan`]).
    pub resident: ResidentShape,
    /// Independent copies of the model trained side by side in the same dispatches (say, one
    /// per seed), each with its own parameters and batches. 1 for an ordinary engine.
    pub replicas: usize,
    /// The cooperative relaxation kernel's workgroups per dispatch at most (None: see
    /// [`super::cooperative::group_cap`]).
    pub cooperative_groups: Option<usize>,
    /// K chunks of the weight-gradient product (K is the batch): each output tile is computed
    /// by this many workgroups, whose partial sums a second dispatch adds (`shaders/grad.wgsl`,
    /// `grad_sum.wgsl`). 1 (no split) unless asked for: not yet measured on a GPU. MLPs only.
    pub grad_split: usize,
    /// A training step's SGD step inside its gradient dispatch (`shaders/grad.wgsl`, or
    /// `grad_sum.wgsl` when split) instead of a dispatch of its own: one dispatch boundary fewer
    /// per step, the same arithmetic. Off unless asked for: on lavapipe the fused dispatch was
    /// slower than the two apart, and it is not yet measured on a GPU. MLPs only.
    pub fused_update: bool,
}

impl EngineOptions {
    /// The pass flags of the variants that drop f' (see `Pass.flags` in `shaders/common.wgsl`).
    pub fn derivative_flags(&self) -> u32 {
        let mut flags = 0;
        if !self.relax_derivative {
            flags |= FLAG_NO_RELAX_DERIV;
        }
        if !self.update_derivative {
            flags |= FLAG_NO_UPDATE_DERIV;
        }
        flags
    }

    /// Exact AR with the paper's relaxation settings for a batch of `batch`.
    pub fn new(batch: usize) -> Self {
        Self {
            batch,
            reduction: Reduction::Sum,
            relax_rate: 0.1,
            relax_derivative: true,
            update_derivative: true,
            start: RelaxStart::Forward,
            feedback: Feedback::Transpose,
            lr: 0.0005,
            feedback_decay: 0.0,
            relax_tol: None,
            sweep: false,
            relax_fprime_current: false,
            update_fprime_current: false,
            update_input_relaxed: false,
            tile: TileChoice::Auto,
            relax_kernel: RelaxKernel::Tiled,
            resident: ResidentShape::default(),
            replicas: 1,
            cooperative_groups: None,
            grad_split: 1,
            fused_update: false,
        }
    }
}

/// How the learning signal is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Activation relaxation (and its variants).
    Ar,
    /// Exact backprop, the baseline.
    Bp,
}
