//! `arelax eval`: test loss and accuracy of a checkpoint.

use std::path::PathBuf;

use clap::Args as ClapArgs;

use super::common::DeviceArgs;
use crate::checkpoint::TensorFile;
use crate::engine::feed::DeviceSplit;
use crate::engine::net::{Model, Net};
use crate::graph::Graph;
use crate::train::{Overrides, TrainConfig, prepare_data};
use crate::{Error, Result};

#[derive(ClapArgs)]
pub struct Args {
    /// A checkpoint.safetensors written by `arelax train` (or any file with PyTorch
    /// `layers.{i}.weight/bias` tensors; then give --layers, --activation and --loss).
    #[arg(long)]
    checkpoint: PathBuf,
    #[command(flatten)]
    settings: Overrides,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: Args) -> Result<()> {
    let file = TensorFile::load(&args.checkpoint)?;
    // The run's own settings when the checkpoint carries them; flags override.
    let saved = match file.metadata.get("config") {
        Some(text) => Some(
            crate::train::config::parse_overrides(&args.checkpoint, text)
                .map_err(|e| Error::file(&args.checkpoint, format!("its config metadata: {e}")))?,
        ),
        None => None,
    };
    let mut cfg = TrainConfig::resolve(saved.as_ref(), &args.settings)?;
    cfg.validation = 0;
    cfg.train_limit = Some(1);
    // A graph checkpoint carries its model file's text.
    let model = match (&args.settings.model, file.metadata.get("model")) {
        (None, Some(text)) => Model::Graph(Graph::parse(&args.checkpoint, text)?),
        _ => cfg.model()?,
    };
    let data = prepare_data(&cfg)?;
    let ctx = args.device.open(model.needs(cfg.batch_size))?;
    let mut opts = cfg.engine_options();
    opts.feedback = crate::engine::Feedback::Transpose;
    let net = Net::new(ctx.clone(), &model, opts)?;
    net.load_state(&file, &args.checkpoint)?;
    let test = DeviceSplit::new(&net, &data.test, false)?;
    let sums = test.evaluate(&net)?;
    println!("adapter:  {}", ctx.describe());
    println!("model:    {}", model.describe());
    println!(
        "{} test set ({} samples): loss {:.4} per sample, accuracy {:.2}%",
        cfg.dataset,
        sums.samples,
        sums.mean_loss(),
        100.0 * sums.accuracy()
    );
    Ok(())
}
