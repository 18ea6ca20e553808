//! WGSL sources, embedded at build time, with a one-line include directive so that kernels can
//! share the tiled matrix-product loop instead of repeating it.
//!
//! A line `//!include NAME.wgsl` is replaced by that file's text (one level deep is all we use).

/// Every file in `shaders/`, by name.
pub const SOURCES: &[(&str, &str)] = &[
    ("common.wgsl", include_str!("../../shaders/common.wgsl")),
    (
        "gemm_tile.wgsl",
        include_str!("../../shaders/gemm_tile.wgsl"),
    ),
    ("forward.wgsl", include_str!("../../shaders/forward.wgsl")),
    ("loss.wgsl", include_str!("../../shaders/loss.wgsl")),
    ("relax.wgsl", include_str!("../../shaders/relax.wgsl")),
    (
        "relax_check.wgsl",
        include_str!("../../shaders/relax_check.wgsl"),
    ),
    ("grad.wgsl", include_str!("../../shaders/grad.wgsl")),
    ("sgd.wgsl", include_str!("../../shaders/sgd.wgsl")),
    ("batch.wgsl", include_str!("../../shaders/batch.wgsl")),
    ("gather.wgsl", include_str!("../../shaders/gather.wgsl")),
    (
        "accumulate.wgsl",
        include_str!("../../shaders/accumulate.wgsl"),
    ),
];

/// Files that are only ever included, never compiled on their own.
pub const FRAGMENTS: &[&str] = &["common.wgsl", "gemm_tile.wgsl", "batch.wgsl"];

fn raw(name: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// The complete source of a kernel file with its includes expanded.
pub fn composed(name: &str) -> String {
    let src = raw(name).unwrap_or_else(|| panic!("unknown shader {name}"));
    let mut out = String::with_capacity(src.len() * 2);
    for line in src.lines() {
        if let Some(inc) = line.trim().strip_prefix("//!include ") {
            let body = raw(inc.trim()).unwrap_or_else(|| panic!("{name}: unknown include {inc}"));
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
    device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(name),
        source: wgpu::ShaderSource::Wgsl(composed(name).into()),
    })
}
