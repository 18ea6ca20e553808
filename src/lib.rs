//! arelax: Activation Relaxation (Millidge et al. 2020) on any GPU through wgpu.
//!
//! Data flows one way: [`data`] → [`engine`] (GPU) → [`metrics`]. The [`reference`](mod@reference) module is the
//! float64 CPU twin of every kernel and is what the tests treat as the truth.

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod engine;
pub mod error;
pub mod gpu;
pub mod graph;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod reference;
pub mod rng;
pub mod train;
pub mod util;

pub use error::{Error, Result};
