//! The command-line interface: one file per subcommand. Errors print as one line, exit code 1.

mod common;
mod gradcheck;
mod info;

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

#[derive(Subcommand)]
enum Command {
    /// Print the GPU adapter, backend, driver and limits.
    Info(info::Args),
    /// Compare AR's gradients with exact backprop's as relaxation proceeds.
    Gradcheck(Box<gradcheck::Args>),
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
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
