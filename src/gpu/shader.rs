//! WGSL sources, embedded at build time, with a one-line include directive so that kernels can
//! share the tiled matrix-product loop instead of repeating it.
//!
//! A line `//!include NAME.wgsl` is replaced by that file's text (one level deep is all we use).

use super::GpuContext;
use super::tile::TileShape;

macro_rules! shaders {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../shaders/", $name)))),*]
    };
}

/// Every file in `shaders/`, by name.
pub const SOURCES: &[(&str, &str)] = shaders![
    "common.wgsl",
    "gemm_tile.wgsl",
    "relax_operands.wgsl",
    "forward.wgsl",
    "loss.wgsl",
    "relax.wgsl",
    "relax_check.wgsl",
    "grad.wgsl",
    "sgd.wgsl",
    "batch.wgsl",
    "gather.wgsl",
    "accumulate.wgsl",
    "graph_common.wgsl",
    "conv_forward.wgsl",
    "pool_forward.wgsl",
    "join_forward.wgsl",
    "dense_vjp.wgsl",
    "combine.wgsl",
    "conv_grad.wgsl",
    "relax_resident.wgsl",
    "relax_cooperative.wgsl",
];

/// Files that are only ever included, never compiled on their own.
pub const FRAGMENTS: &[&str] = &[
    "common.wgsl",
    "gemm_tile.wgsl",
    "relax_operands.wgsl",
    "batch.wgsl",
    "graph_common.wgsl",
];

fn raw(name: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// The complete source of a kernel file with its includes expanded (tiled products use the
/// 64×64 shape; see [`composed_with`]).
pub fn composed(name: &str) -> String {
    composed_with(name, TileShape::T64)
}

/// Whether a kernel file includes the tiled product (and so is compiled once per tile shape).
pub fn is_tiled(name: &str) -> bool {
    raw(name).is_some_and(|s| s.lines().any(|l| l.trim() == "//!include gemm_tile.wgsl"))
}

/// The source of a kernel file with its includes expanded; `gemm_tile.wgsl` is preceded by the
/// constants of `shape`.
pub fn composed_with(name: &str, shape: TileShape) -> String {
    let src = raw(name).unwrap_or_else(|| panic!("unknown shader {name}"));
    let mut out = String::with_capacity(src.len() * 2);
    for line in src.lines() {
        if let Some(inc) = line.trim().strip_prefix("//!include ") {
            let inc = inc.trim();
            let body = raw(inc).unwrap_or_else(|| panic!("{name}: unknown include {inc}"));
            if inc == "gemm_tile.wgsl" {
                out.push_str(&shape.wgsl_constants());
            }
            out.push_str(body);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Compiles a kernel file into a shader module.
pub fn module(ctx: &GpuContext, name: &str) -> wgpu::ShaderModule {
    module_with(ctx, name, TileShape::T64)
}

/// Compiles a kernel file whose products use the tile `shape`. Without `ctx.shader_checks`, the
/// module is compiled without wgpu's injected bounds checks and loop bounding (the hot loops of
/// the products index workgroup memory with indices the compiler cannot prove in range).
pub fn module_with(ctx: &GpuContext, name: &str, shape: TileShape) -> wgpu::ShaderModule {
    let label = format!("{name} ({shape})");
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(&label),
        source: wgpu::ShaderSource::Wgsl(composed_with(name, shape).into()),
    };
    if ctx.shader_checks {
        return ctx.device.create_shader_module(desc);
    }
    let mut checks = wgpu::ShaderRuntimeChecks::checked();
    checks.bounds_checks = false;
    checks.force_loop_bounding = false;
    // SAFETY: every kernel guards each buffer and workgroup-memory index against the sizes it is
    // given (the CPU-reference tests run on lavapipe with and without the checks, on sizes that
    // are multiples of no tile), and every loop is bounded by a size or a constant.
    unsafe { ctx.device.create_shader_module_trusted(desc, checks) }
}
