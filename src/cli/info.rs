//! `arelax info`: the adapter, backend, driver and limits.

use clap::Args as ClapArgs;

use super::common::DeviceArgs;
use crate::Result;
use crate::gpu::context::list_adapters;
use crate::gpu::tile::{FEW_GROUPS, TARGET_GROUPS, TileChoice};

#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: Args) -> Result<()> {
    let all = list_adapters();
    println!("adapters found: {}", all.len());
    for a in &all {
        println!("  - {} ({:?}, {:?})", a.name, a.backend, a.device_type);
    }
    let ctx = args.device.open(Default::default())?;
    let i = &ctx.info;
    let have = ctx.adapter.limits();
    println!("selected adapter: {}", i.name);
    println!("  backend:      {:?}", i.backend);
    println!("  device type:  {:?}", i.device_type);
    println!("  driver:       {} {}", i.driver, i.driver_info);
    println!("  vendor/device: {:#06x}/{:#06x}", i.vendor, i.device);
    println!(
        "  subgroup size: {}..{}",
        i.subgroup_min_size, i.subgroup_max_size
    );
    println!(
        "  timestamp queries: {}",
        ctx.adapter
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    );
    println!(
        "  shader runtime checks: {}",
        if ctx.shader_checks {
            "on (ARELAX_SHADER_CHECKS)"
        } else {
            "off (kernels check their own indices; ARELAX_SHADER_CHECKS=1 turns them on)"
        }
    );
    let tiles = match TileChoice::Auto.for_adapter(i.device_type) {
        TileChoice::Fixed(s) => format!("{s} throughout (a CPU adapter)"),
        TileChoice::Auto => format!(
            "per dispatch, the largest shape giving {TARGET_GROUPS} workgroups, else 32x32, or 16x16 where 32x32 gives under {FEW_GROUPS} (GPU adapter)"
        ),
    };
    println!("  tile shapes (auto): {tiles}");
    println!("adapter limits (arelax asks only for what a model needs):");
    println!(
        "  max_storage_buffer_binding_size: {} MiB",
        have.max_storage_buffer_binding_size >> 20
    );
    println!("  max_buffer_size: {} MiB", have.max_buffer_size >> 20);
    println!(
        "  max_storage_buffers_per_shader_stage: {}",
        have.max_storage_buffers_per_shader_stage
    );
    println!(
        "  max_compute_workgroup_storage_size: {} KiB",
        have.max_compute_workgroup_storage_size >> 10
    );
    println!(
        "  max_compute_invocations_per_workgroup: {}",
        have.max_compute_invocations_per_workgroup
    );
    println!(
        "  max_compute_workgroups_per_dimension: {}",
        have.max_compute_workgroups_per_dimension
    );
    Ok(())
}
