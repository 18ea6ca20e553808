//! WGSL sources, embedded at build time, with a one-line include directive so that kernels can
//! share the tiled matrix-product loop instead of repeating it.
//!
//! A line `//!include NAME.wgsl` is replaced by that file's text (one level deep is all we use).
//!
//! Lines between `//!unroll VAR < BOUND` and `//!end` are repeated BOUND times with `{VAR}`
//! replaced by `0u`, `1u`, ... (blocks nest). WGSL has no unroll attribute, and a driver that
//! keeps such a loop rolled must keep the private arrays it indexes (a thread's accumulators in
//! the tiled product) in addressable memory instead of registers. BOUND names a tile constant
//! ([`TileShape::unroll_bound`]) or a `const NAME: u32 = Nu;` of the kernel's source. With
//! `ARELAX_UNROLL=0` the blocks become plain `for` loops instead (the same arithmetic in the
//! same order), to measure what unrolling is worth on a device.

use super::GpuContext;
use super::resident::ResidentPlan;
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
    "output_error.wgsl",
    "forward.wgsl",
    "loss.wgsl",
    "relax.wgsl",
    "relax_check.wgsl",
    "grad.wgsl",
    "sgd.wgsl",
    "grad_sum.wgsl",
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
    "output_error.wgsl",
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
    composed_as(name, shape, true)
}

/// [`composed_with`], with the `//!unroll` blocks unrolled or left as loops.
pub fn composed_as(name: &str, shape: TileShape, unrolled: bool) -> String {
    composed_prefixed(name, shape, unrolled, &example_constants(name))
}

/// The constants of a kernel whose sizes the host generates (see [`composed_prefixed`]), for a
/// typical model, where no plan is at hand (validation); empty for the others.
fn example_constants(name: &str) -> String {
    if name == "relax_resident.wgsl" {
        ResidentPlan::example().constants()
    } else {
        String::new()
    }
}

/// [`composed_as`] with `prefix` (generated WGSL constants) before the source; `//!unroll`
/// bounds may name its constants.
pub fn composed_prefixed(name: &str, shape: TileShape, unrolled: bool, prefix: &str) -> String {
    let src = raw(name).unwrap_or_else(|| panic!("unknown shader {name}"));
    let mut out = String::with_capacity(src.len() * 2 + prefix.len());
    out.push_str(prefix);
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
    let lines: Vec<&str> = out.lines().collect();
    let mut expanded = String::with_capacity(out.len() * 4);
    let bound = |b: &str| shape.unroll_bound(b).or_else(|| literal_const(&lines, b));
    unroll(&lines, &bound, unrolled, &mut expanded)
        .unwrap_or_else(|e| panic!("{name} ({shape}): {e}"));
    expanded
}

/// The value of a `const NAME: u32 = Nu;` line of the source, if it has one.
fn literal_const(lines: &[&str], name: &str) -> Option<u32> {
    let prefix = format!("const {name}: u32 = ");
    lines.iter().find_map(|l| {
        let v = l.trim().strip_prefix(&prefix)?.strip_suffix("u;")?;
        v.parse().ok()
    })
}

/// Expands the `//!unroll` blocks of `lines` (see the module docs) into `out`: repeated when
/// `unrolled`, else as `for` loops.
fn unroll(
    lines: &[&str],
    bound: &dyn Fn(&str) -> Option<u32>,
    unrolled: bool,
    out: &mut String,
) -> Result<(), String> {
    let mut i = 0;
    while i < lines.len() {
        let Some(head) = lines[i].trim().strip_prefix("//!unroll ") else {
            if lines[i].trim() == "//!end" {
                return Err(format!("line {}: //!end without //!unroll", i + 1));
            }
            out.push_str(lines[i]);
            out.push('\n');
            i += 1;
            continue;
        };
        let (var, name) = head
            .split_once('<')
            .map(|(v, b)| (v.trim(), b.trim()))
            .ok_or_else(|| format!("line {}: expected //!unroll VAR < BOUND", i + 1))?;
        let n = bound(name).ok_or_else(|| format!("line {}: unknown bound {name}", i + 1))?;
        // The matching //!end, counting nested blocks.
        let mut depth = 1;
        let mut end = i + 1;
        while end < lines.len() {
            let t = lines[end].trim();
            if t.starts_with("//!unroll ") {
                depth += 1;
            } else if t == "//!end" {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            end += 1;
        }
        if depth != 0 {
            return Err(format!("line {}: //!unroll without //!end", i + 1));
        }
        let key = format!("{{{var}}}");
        let values: Vec<String> = if unrolled {
            (0..n).map(|v| format!("{v}u")).collect()
        } else {
            out.push_str(&format!("for (var {var} = 0u; {var} < {n}u; {var}++) {{\n"));
            vec![var.to_string()]
        };
        for v in values {
            let body: Vec<String> = lines[i + 1..end]
                .iter()
                .map(|l| l.replace(&key, &v))
                .collect();
            let body: Vec<&str> = body.iter().map(String::as_str).collect();
            unroll(&body, bound, unrolled, out)?;
        }
        if !unrolled {
            out.push_str("}\n");
        }
        i = end + 1;
    }
    Ok(())
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
    compile(ctx, &label, composed_as(name, shape, ctx.unroll))
}

/// Compiles a kernel file after the generated constants `prefix` (see [`composed_prefixed`]).
pub fn module_prefixed(ctx: &GpuContext, name: &str, prefix: &str) -> wgpu::ShaderModule {
    let src = composed_prefixed(name, TileShape::T64, ctx.unroll, prefix);
    compile(ctx, name, src)
}

fn compile(ctx: &GpuContext, label: &str, src: String) -> wgpu::ShaderModule {
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(src.into()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(text: &str) -> Result<String, String> {
        let lines: Vec<&str> = text.lines().collect();
        let mut out = String::new();
        let bound = |b: &str| match b {
            "TWO" => Some(2),
            "THREE" => Some(3),
            _ => None,
        };
        unroll(&lines, &bound, true, &mut out).map(|()| out)
    }

    #[test]
    fn unroll_repeats_nested_blocks_with_constant_indices() {
        let text = "a;\n//!unroll i < TWO\nx[{i}];\n//!unroll j < THREE\ny[{i}][{j}];\n//!end\n//!end\nb;\n";
        assert_eq!(
            expand(text).unwrap(),
            "a;\nx[0u];\ny[0u][0u];\ny[0u][1u];\ny[0u][2u];\n\
             x[1u];\ny[1u][0u];\ny[1u][1u];\ny[1u][2u];\nb;\n"
        );
    }

    #[test]
    fn rolled_blocks_are_for_loops() {
        let lines = ["//!unroll i < TWO", "x[{i}];", "//!end"];
        let mut out = String::new();
        unroll(&lines, &|_| Some(2), false, &mut out).unwrap();
        assert_eq!(out, "for (var i = 0u; i < 2u; i++) {\nx[i];\n}\n");
    }

    #[test]
    fn malformed_unroll_blocks_are_errors() {
        assert!(
            expand("//!unroll i < TWO\nx;\n")
                .unwrap_err()
                .contains("without //!end")
        );
        assert!(
            expand("x;\n//!end\n")
                .unwrap_err()
                .contains("without //!unroll")
        );
        assert!(
            expand("//!unroll i < NOPE\n//!end\n")
                .unwrap_err()
                .contains("unknown bound NOPE")
        );
        assert!(
            expand("//!unroll i TWO\n//!end\n")
                .unwrap_err()
                .contains("VAR < BOUND")
        );
    }

    #[test]
    fn kernels_leave_no_directive_or_placeholder_behind() {
        for (name, _) in SOURCES {
            if FRAGMENTS.contains(name) {
                continue;
            }
            for shape in TileShape::ALL {
                let src = composed_with(name, shape);
                assert!(
                    !src.lines().any(|l| l.trim().starts_with("//!")),
                    "{name} ({shape})"
                );
                for var in [
                    "{i}", "{j}", "{c}", "{s}", "{kk}", "{row}", "{q}", "{u}", "{b}",
                ] {
                    assert!(!src.contains(var), "{name} ({shape}): {var}");
                }
            }
        }
    }
}
