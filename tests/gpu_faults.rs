//! GPU faults surface as errors with context, never as hangs or panics: a validation error, a
//! read of a buffer that cannot be copied, and a lost (destroyed) device.

use arelax::gpu::{AdapterRequest, GpuContext};

fn fresh() -> GpuContext {
    GpuContext::new(&AdapterRequest::default(), Default::default()).expect("an adapter")
}

#[test]
fn a_validation_error_is_reported_at_the_next_wait() {
    let ctx = fresh();
    // A copy past the end of a buffer is a validation error.
    let small = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("small"),
        size: 16,
        usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let other = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("other"),
        size: 16,
        usage: wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(&small, 0, &other, 8, 16);
    ctx.queue.submit([enc.finish()]);
    let err = ctx.wait().expect_err("the invalid copy must be reported");
    let msg = err.to_string();
    eprintln!("validation: {msg}");
    assert!(msg.starts_with("GPU: "), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn reading_a_buffer_that_cannot_be_copied_fails_instead_of_hanging() {
    let ctx = fresh();
    let storage_only = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("no copy-src"),
        size: 64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let err = ctx
        .read_f32(&storage_only, 0, 4)
        .expect_err("no COPY_SRC usage");
    eprintln!("no copy-src: {err}");
    assert!(err.to_string().contains("GPU"), "{err}");
}

#[test]
fn a_lost_device_is_an_error() {
    let ctx = fresh();
    ctx.device.destroy();
    let buf = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("after loss"),
        size: 16,
        usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let err = ctx.read_f32(&buf, 0, 4).expect_err("the device is gone");
    eprintln!("lost: {err}");
    assert!(err.to_string().contains("GPU"), "{err}");
}

/// A tile shape beyond WebGPU's defaults needs a device opened for it: without that, building an
/// engine names the shortfall; with it, the engine builds; beyond the adapter, opening fails
/// with the limit's name.
#[test]
fn wide_tile_shapes_need_a_device_opened_for_them() {
    use arelax::engine::{Engine, EngineOptions};
    use arelax::gpu::Needs;
    use arelax::gpu::tile::{TileChoice, TileShape};
    use arelax::model::{Activation, Loss, ModelSpec};
    use std::sync::Arc;
    let spec = ModelSpec::new(vec![8, 6, 4], Activation::Tanh, Loss::Mse).unwrap();
    let wide: TileShape = "32x32-r4x4-k8-s8".parse().unwrap();
    let mut opts = EngineOptions::new(4);
    opts.tile = TileChoice::Fixed(wide);

    let plain = Arc::new(fresh());
    let err = Engine::new(plain, &spec, opts.clone())
        .err()
        .expect("an error");
    let msg = err.to_string();
    assert!(
        msg.contains("512 invocations") && msg.contains("32x32-r4x4-k8-s8"),
        "{msg}"
    );

    let needs = Needs::default().with_tiles(opts.tile);
    let opened = GpuContext::new(&AdapterRequest::default(), needs).expect("an adapter");
    assert!(opened.limits.max_compute_invocations_per_workgroup >= 512);
    Engine::new(Arc::new(opened), &spec, opts).expect("the engine builds");

    let too_much = Needs {
        workgroup_bytes: 1 << 30,
        ..Needs::default()
    };
    let msg = GpuContext::new(&AdapterRequest::default(), too_much)
        .err()
        .expect("an error")
        .to_string();
    assert!(msg.contains("bytes of workgroup memory"), "{msg}");
}
