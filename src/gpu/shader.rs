//! WGSL sources, embedded at build time, with a one-line include directive so that kernels can
//! share the tiled matrix-product loop instead of repeating it.
//!
//! A line `//!include NAME.wgsl` is replaced by that file's text (one level deep is all we use).

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
    "conv_vjp.wgsl",
    "pool_vjp.wgsl",
    "combine.wgsl",
    "conv_grad.wgsl",
    "derivative.wgsl",
];

/// Files that are only ever included, never compiled on their own.
pub const FRAGMENTS: &[&str] = &[
    "common.wgsl",
    "gemm_tile.wgsl",
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
pub fn module(device: &wgpu::Device, name: &str) -> wgpu::ShaderModule {
    module_with(device, name, TileShape::T64)
}

/// Compiles a kernel file whose products use the tile `shape`.
pub fn module_with(device: &wgpu::Device, name: &str, shape: TileShape) -> wgpu::ShaderModule {
    let label = format!("{name} ({shape})");
    device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(&label),
        source: wgpu::ShaderSource::Wgsl(composed_with(name, shape).into()),
    })
}
