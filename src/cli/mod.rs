//! The command-line interface: one file per subcommand. Errors print as one line, exit code 1.

mod bench;
mod common;
mod eval;
mod experiment;
mod gradcheck;
mod info;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "arelax",
    version,
    about = "Activation Relaxation on any GPU (wgpu): train, check gradients against backprop, benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Negative numbers are values (`--lr -1` reaches validation and its message), not flags.
#[derive(Subcommand)]
enum Command {
    /// Train a network with AR, a variant of it, or backprop (the main job).
    #[command(allow_negative_numbers = true)]
    Train(Box<train::Args>),
    /// Test loss and accuracy of a checkpoint.
    #[command(allow_negative_numbers = true)]
    Eval(Box<eval::Args>),
    /// Run a grid of conditions × seeds × data sets and summarise it.
    #[command(allow_negative_numbers = true)]
    Experiment(experiment::Args),
    /// Measure training-step and relaxation throughput per batch size.
    #[command(allow_negative_numbers = true)]
    Bench(bench::Args),
    /// Print the GPU adapter, backend, driver and limits.
    #[command(allow_negative_numbers = true)]
    Info(info::Args),
    /// Compare AR's gradients with exact backprop's as relaxation proceeds.
    #[command(allow_negative_numbers = true)]
    Gradcheck(Box<gradcheck::Args>),
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => train::run(*a),
        Command::Eval(a) => eval::run(*a),
        Command::Experiment(a) => experiment::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Info(a) => info::run(a),
        Command::Gradcheck(a) => gradcheck::run(*a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
