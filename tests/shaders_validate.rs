//! Parses and validates every WGSL kernel with naga. Needs no adapter, so it runs everywhere.

use arelax::gpu::shader::{FRAGMENTS, SOURCES, composed};

#[test]
fn every_kernel_parses_and_validates() {
    let mut checked = 0;
    for (name, _) in SOURCES {
        if FRAGMENTS.contains(name) {
            continue;
        }
        let src = composed(name);
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&src)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&src)));
        assert!(!module.entry_points.is_empty(), "{name} has no entry point");
        checked += 1;
    }
    assert_eq!(checked, SOURCES.len() - FRAGMENTS.len());
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
