//! The GPU layer: device context, buffer helpers, and one thin wrapper per `shaders/*.wgsl` file.

pub mod buffers;
pub mod context;
pub mod profiler;
pub mod resident;
pub mod shader;
pub mod tile;

pub use context::{AdapterRequest, GpuContext, Needs};
