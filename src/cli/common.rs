//! Options shared by several subcommands, and turning them into library types.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::Result;
use crate::engine::{EngineOptions, RelaxStart};
use crate::gpu::{AdapterRequest, GpuContext};
use crate::model::{Activation, Init, Loss, ModelSpec, Reduction};

#[derive(Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Use the adapter whose name contains this text (e.g. llvmpipe, nvidia); also WGPU_ADAPTER_NAME.
    #[arg(long)]
    pub adapter: Option<String>,
}

impl DeviceArgs {
    pub fn open(&self, needs: crate::gpu::Needs) -> Result<Arc<GpuContext>> {
        let ctx = GpuContext::new(
            &AdapterRequest {
                name: self.adapter.clone(),
            },
            needs,
        )?;
        Ok(Arc::new(ctx))
    }
}

/// The network and its loss.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// Layer widths from input to output.
    #[arg(long, default_value = "784,300,300,100,10")]
    pub layers: String,
    /// Hidden activation: relu, leaky-relu, tanh, sigmoid or linear.
    #[arg(long, default_value = "relu")]
    pub activation: String,
    /// mse (linear output, summed squared error) or ce (softmax cross-entropy).
    #[arg(long, default_value = "mse")]
    pub loss: String,
    /// sum (the paper's) or mean over the batch.
    #[arg(long, default_value = "sum")]
    pub reduction: String,
    /// Weights: normal (N(0, 0.05)), normal:SD, fan-in (N(0, 1/n_in)), or pytorch (PyTorch's default: weights and biases U(±1/√n_in)). Biases start at zero except with pytorch.
    #[arg(long, default_value = "normal")]
    pub init: String,
}

impl ModelArgs {
    pub fn spec(&self) -> Result<ModelSpec> {
        ModelSpec::new(
            ModelSpec::parse_widths(&self.layers)?,
            self.activation.parse::<Activation>()?,
            self.loss.parse::<Loss>()?,
        )
    }
    pub fn reduction(&self) -> Result<Reduction> {
        self.reduction.parse()
    }
    pub fn init(&self) -> Result<Init> {
        self.init.parse()
    }
}

/// The relaxation's settings.
#[derive(Args, Clone, Debug)]
pub struct RelaxArgs {
    /// Relaxation steps T per batch.
    #[arg(long, default_value_t = 100)]
    pub relax_steps: usize,
    /// Relaxation rate η in (0, 2].
    #[arg(long, default_value_t = 0.1)]
    pub relax_rate: f32,
    /// Where hidden states start: forward (their forward values) or zero.
    #[arg(long, default_value = "forward", value_parser = ["forward", "zero"])]
    pub relax_start: String,
}

impl RelaxArgs {
    pub fn start(&self) -> RelaxStart {
        if self.relax_start == "zero" {
            RelaxStart::Zero
        } else {
            RelaxStart::Forward
        }
    }

    pub fn check(&self) -> Result<()> {
        if self.relax_steps == 0 {
            return Err(crate::Error::Config(
                "--relax-steps must be at least 1".into(),
            ));
        }
        Ok(())
    }

    pub fn engine_options(&self, batch: usize, reduction: Reduction) -> EngineOptions {
        let mut o = EngineOptions::new(batch);
        o.relax_rate = self.relax_rate;
        o.start = self.start();
        o.reduction = reduction;
        o
    }
}

/// Where data sets live.
#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// mnist or fashion-mnist.
    #[arg(long, default_value = "mnist")]
    pub dataset: String,
    /// Directory with the four IDX files (plain or .gz); defaults to data/mnist or
    /// /usr/share/datasets/fashion-mnist.
    #[arg(long)]
    pub data: Option<PathBuf>,
}

impl DataArgs {
    pub fn load(&self) -> Result<crate::data::Dataset> {
        let kind: crate::data::DatasetKind = self.dataset.parse().map_err(crate::Error::Config)?;
        let dir = self.data.clone().unwrap_or_else(|| kind.default_dir());
        Ok(crate::data::load(&dir, kind)?)
    }
}
