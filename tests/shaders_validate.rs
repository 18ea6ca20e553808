//! Parses and validates every WGSL kernel with naga. Needs no adapter, so it runs everywhere.

use arelax::gpu::shader::{FRAGMENTS, SOURCES, composed, composed_as, composed_with, is_tiled};
use arelax::gpu::tile::TileShape;

fn validate(name: &str, src: &str) -> naga::Module {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    module
}

#[test]
fn every_kernel_parses_and_validates() {
    let mut checked = 0;
    for (name, _) in SOURCES {
        if FRAGMENTS.contains(name) {
            continue;
        }
        let module = validate(name, &composed(name));
        assert!(!module.entry_points.is_empty(), "{name} has no entry point");
        // ARELAX_UNROLL=0: any //!unroll blocks as loops.
        validate(
            &format!("{name} (rolled)"),
            &composed_as(name, TileShape::T64, false),
        );
        checked += 1;
    }
    assert_eq!(checked, SOURCES.len() - FRAGMENTS.len());
}

#[test]
fn every_tiled_kernel_validates_for_every_tile_shape() {
    let tiled: Vec<&str> = SOURCES
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !FRAGMENTS.contains(n) && is_tiled(n))
        .collect();
    assert!(tiled.len() >= 4, "tiled kernels: {tiled:?}");
    for name in tiled {
        for shape in TileShape::ALL {
            validate(&format!("{name} ({shape})"), &composed_with(name, shape));
            // ARELAX_UNROLL=0: the same blocks as loops.
            validate(
                &format!("{name} ({shape}, rolled)"),
                &composed_as(name, shape, false),
            );
        }
    }
}

#[test]
fn every_shader_file_is_registered() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".wgsl") {
            assert!(
                SOURCES.iter().any(|(n, _)| *n == name),
                "shaders/{name} is not listed in gpu::shader::SOURCES"
            );
        }
    }
}

/// The point of `//!unroll`: in the unrolled kernels no thread-private array (a local variable,
/// or an array a function returned, such as the tiled product's accumulators) is indexed by a
/// runtime value, which a driver could only serve from memory. The same kernels with the loops
/// left rolled do index them at run time, so the check can tell.
#[test]
fn unrolled_kernels_index_private_arrays_by_constants_only() {
    use naga::Expression;
    fn private_root(f: &naga::Function, mut h: naga::Handle<Expression>) -> bool {
        loop {
            match &f.expressions[h] {
                Expression::LocalVariable(_) | Expression::CallResult(_) => return true,
                Expression::Access { base, .. } | Expression::AccessIndex { base, .. } => h = *base,
                _ => return false,
            }
        }
    }
    let runtime_indexes = |src: &str| -> usize {
        let m = naga::front::wgsl::parse_str(src).unwrap();
        let functions = m.functions.iter().map(|(_, f)| f);
        functions
            .chain(m.entry_points.iter().map(|e| &e.function))
            .map(|f| {
                f.expressions
                    .iter()
                    .filter(|(_, e)| {
                        matches!(e, Expression::Access { base, .. } if private_root(f, *base))
                    })
                    .count()
            })
            .sum()
    };
    let kernels: Vec<&str> = SOURCES
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !FRAGMENTS.contains(n) && (is_tiled(n) || *n == "relax_resident.wgsl"))
        .collect();
    for name in kernels {
        for shape in TileShape::ALL {
            let unrolled = runtime_indexes(&composed_with(name, shape));
            assert_eq!(unrolled, 0, "{name} ({shape})");
            let rolled = runtime_indexes(&composed_as(name, shape, false));
            assert!(
                rolled > 0,
                "{name} ({shape}): the check sees nothing rolled"
            );
        }
    }
}

/// The resident kernel is compiled with constants generated per model (rows as f32, vec2 or
/// vec4, threads, items per thread, zigzag or not, parts or not): every row layout validates,
/// unrolled and rolled.
#[test]
fn the_resident_kernel_validates_for_every_row_layout() {
    use arelax::gpu::resident::{ResidentPlan, ResidentShape};
    use arelax::gpu::shader::composed_prefixed;
    let mut checked = 0;
    for widths in [
        &[784, 300, 300, 100, 10][..],
        &[13, 11, 7, 5],
        &[8, 1100, 4],
    ] {
        for rows in [1, 2, 4, 8, 16, 32] {
            for threads in [256, 1024] {
                let shape = ResidentShape {
                    rows: Some(rows),
                    threads: Some(threads),
                    // Loads in flight and both ways of walking K vary over the shapes.
                    loads: Some([4, 8, 16, 32][rows.ilog2() as usize % 4]),
                    // One workgroup per row block, or parts (the default at this batch).
                    parts: (rows % 4 == 1).then_some(1),
                    // Units of 1, 2 and 4 columns.
                    wide: Some([1, 2, 4][(rows.ilog2() + threads / 512) as usize % 3]),
                    // Extra items dealt round robin or packed.
                    packed: Some(rows % 8 == 0),
                    zigzag: Some((rows + threads / 256) % 2 == 1),
                    cache: None,
                };
                let Ok(plan) = ResidentPlan::new(widths, 64, 1, shape, (1024, 49152)) else {
                    continue;
                };
                for unrolled in [true, false] {
                    let src = composed_prefixed(
                        "relax_resident.wgsl",
                        TileShape::T64,
                        unrolled,
                        &plan.constants(),
                    );
                    validate(
                        &format!("relax_resident {widths:?} {shape} {unrolled}"),
                        &src,
                    );
                }
                checked += 1;
            }
        }
    }
    // Only 32 rows of the paper's MLP are over 48 KiB.
    assert!(checked >= 30, "{checked} shapes validated");
}
