//! Trains a model file on MNIST or Fashion-MNIST with the float64 CPU reference (`arelax::graph::reference`), using
//! the relaxation's fixed point as the learning signal: a way to check a configuration's learning
//! rate and initialisation without a GPU, at about 300 samples per second per core for the CNN.
//!
//! With the Jacobian frozen, AR's relaxation is linear and the graph is acyclic, so its fixed point
//! is one backward sweep: exact backprop through W (`ar`, which is also `bp`), the same sweep
//! without f' (`no-derivative`), or through the feedback weights ψ (`learned-backward`, where ψ
//! takes W's updates as in the engine). AR's finite number of steps only approaches it (see
//! `arelax gradcheck`), so this predicts a run rather than replaying it. The batches, their order
//! and the initial weights are those `arelax train` draws for the same seed.
//!
//!     cargo run --release --example reference_train -- examples/cnn.toml data/mnist \
//!         --seed 1 --lr 0.0005 --epochs 10 --init pytorch --mode ar

use std::path::PathBuf;
use std::time::Instant;

use arelax::data::{self, DatasetKind};
use arelax::graph::reference::{self as gref, GraphParams64};
use arelax::graph::{Graph, GraphParams};
use arelax::model::{Init, Reduction};
use arelax::rng::Rng;

const MODES: [&str; 4] = ["ar", "bp", "no-derivative", "learned-backward"];

struct Args {
    model: PathBuf,
    data: PathBuf,
    seed: u64,
    lr: f64,
    epochs: usize,
    batch: usize,
    init: Init,
    mode: String,
    dataset: DatasetKind,
    train_limit: usize,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (Some(model), Some(data)) = (it.next(), it.next()) else {
        return Err(
            "usage: reference_train MODEL.toml DATA_DIR [--seed N] [--lr X] [--epochs N] \
                    [--batch-size N] [--init I] [--mode ar|bp|no-derivative|learned-backward] \
                    [--dataset mnist|fashion-mnist] [--train-limit N]"
                .into(),
        );
    };
    let mut a = Args {
        model: model.into(),
        data: data.into(),
        seed: 1,
        lr: 0.0005,
        epochs: 10,
        batch: 64,
        init: Init::Pytorch,
        mode: "ar".into(),
        dataset: DatasetKind::Mnist,
        train_limit: usize::MAX,
    };
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {v}: {e}");
        match flag.as_str() {
            "--seed" => a.seed = v.parse().map_err(|e| bad(&e))?,
            "--lr" => a.lr = v.parse().map_err(|e| bad(&e))?,
            "--epochs" => a.epochs = v.parse().map_err(|e| bad(&e))?,
            "--batch-size" => a.batch = v.parse().map_err(|e| bad(&e))?,
            "--init" => a.init = v.parse().map_err(|e| bad(&e))?,
            "--train-limit" => a.train_limit = v.parse().map_err(|e| bad(&e))?,
            "--dataset" => a.dataset = v.parse().map_err(|e| bad(&e))?,
            "--mode" if MODES.contains(&v.as_str()) => a.mode = v,
            "--mode" => return Err(format!("--mode {v}: one of {}", MODES.join(", "))),
            _ => return Err(format!("unknown option {flag} {v}")),
        }
    }
    Ok(a)
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let a = parse()?;
    let g = Graph::load(&a.model).map_err(|e| e.to_string())?;
    let ds = data::load(&a.data, a.dataset).map_err(|e| e.to_string())?;
    // The engine's draws: W from stream 1, ψ (learned feedback, N(0, 0.05)) from stream 4.
    let mut w = GraphParams64::from(&GraphParams::random(
        &g,
        a.init,
        &mut Rng::stream(a.seed, 1),
    ));
    let mut psi = GraphParams64::from(&GraphParams::random(
        &g,
        Init::Normal(0.05),
        &mut Rng::stream(a.seed, 4),
    ));
    let deriv = a.mode != "no-derivative";
    let n = ds.train.len.min(a.train_limit);
    println!(
        "{} on {}, fixed point of {}, seed {}, lr {}, batch {}, init {}",
        g.describe(),
        a.dataset,
        a.mode,
        a.seed,
        a.lr,
        a.batch,
        a.init
    );
    for epoch in 0..a.epochs {
        let t0 = Instant::now();
        let (mut loss, mut correct) = (0.0, 0usize);
        for (batch, chunk) in arelax::train::epoch_order(a.seed, epoch, n)
            .chunks(a.batch)
            .enumerate()
        {
            let idx: Vec<usize> = chunk.iter().map(|&i| i as usize).collect();
            let (x, y) = data::one_hot_batch(&ds.train, &idx);
            let f = gref::forward(&g, &w, &widen(&x), idx.len());
            let out = gref::output_error(&g, &f, &widen(&y), Reduction::Sum);
            let batch_loss: f64 = out.loss.iter().sum();
            if !batch_loss.is_finite() {
                return Err(format!(
                    "diverged in epoch {} at batch {} (the loss is not finite)",
                    epoch + 1,
                    batch + 1
                ));
            }
            loss += batch_loss;
            correct += out.correct.iter().filter(|&&c| c).count();
            let feedback = if a.mode == "learned-backward" {
                &psi
            } else {
                &w
            };
            let r = gref::fixed_point(&g, feedback, &f, &out.g, deriv);
            let grads = gref::gradients(&g, &f, &r, true);
            gref::sgd(&mut w, &grads, a.lr, 0.0);
            if a.mode == "learned-backward" {
                gref::sgd(&mut psi, &grads, a.lr, 0.0);
            }
        }
        let mut test_correct = 0;
        let all: Vec<usize> = (0..ds.test.len).collect();
        for chunk in all.chunks(500) {
            let (x, y) = data::one_hot_batch(&ds.test, chunk);
            let f = gref::forward(&g, &w, &widen(&x), chunk.len());
            let out = gref::output_error(&g, &f, &widen(&y), Reduction::Sum);
            test_correct += out.correct.iter().filter(|&&c| c).count();
        }
        println!(
            "epoch {:>3}/{}  loss {:.4}  train {:.2}%  test {:.2}%  ({:.0} s)",
            epoch + 1,
            a.epochs,
            loss / n as f64,
            100.0 * correct as f64 / n as f64,
            100.0 * test_correct as f64 / ds.test.len as f64,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
