//! Small helpers for creating storage and uniform buffers and compute pipelines.

use wgpu::util::DeviceExt;

use super::tile::TileShape;
use super::{GpuContext, shader};

pub const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// A zeroed f32 storage buffer of `len` elements (at least one, so empty layers still bind).
pub fn storage(device: &wgpu::Device, label: &str, len: usize) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (len.max(1) * 4) as u64,
        usage: STORAGE,
        mapped_at_creation: false,
    })
}

/// A storage buffer holding `data`.
pub fn storage_init<T: bytemuck::Pod>(
    device: &wgpu::Device,
    label: &str,
    data: &[T],
) -> wgpu::Buffer {
    let bytes: &[u8] = bytemuck::cast_slice(data);
    if bytes.is_empty() {
        return storage(device, label, 1);
    }
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytes,
        usage: STORAGE,
    })
}

/// A uniform buffer holding `data`, written once.
pub fn uniform<T: bytemuck::Pod>(device: &wgpu::Device, label: &str, data: &T) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytemuck::bytes_of(data),
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
    })
}

/// Binding kinds, in binding-index order, for an explicit bind group layout.
#[derive(Clone, Copy, Debug)]
pub enum Slot {
    Uniform,
    /// A uniform bound with a dynamic offset (one entry per batch, chosen at dispatch).
    DynamicUniform,
    Read,
    ReadWrite,
}

/// A compute pipeline with an explicit layout of one bind group described by `slots`.
pub struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    pub name: &'static str,
}

/// A bind group layout with one entry per slot, in binding-index order.
pub fn bind_layout(device: &wgpu::Device, label: &str, slots: &[Slot]) -> wgpu::BindGroupLayout {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: match s {
                Slot::Uniform | Slot::DynamicUniform => wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: matches!(s, Slot::DynamicUniform),
                    min_binding_size: None,
                },
                Slot::Read | Slot::ReadWrite => wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: matches!(s, Slot::Read),
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
            },
            count: None,
        })
        .collect();
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries: &entries,
    })
}

impl Kernel {
    pub fn new(
        ctx: &GpuContext,
        module: &wgpu::ShaderModule,
        entry: &'static str,
        slots: &[Slot],
    ) -> Self {
        let layout = bind_layout(&ctx.device, entry, slots);
        Self::with_layout(ctx, module, entry, layout)
    }

    /// A pipeline for `entry` using an existing bind group layout (shared by tile variants, so
    /// one bind group serves them all).
    pub fn with_layout(
        ctx: &GpuContext,
        module: &wgpu::ShaderModule,
        entry: &'static str,
        layout: wgpu::BindGroupLayout,
    ) -> Self {
        let device = &ctx.device;
        let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(entry),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(&pl),
            module,
            entry_point: Some(entry),
            // Every kernel writes its workgroup memory before reading it, so the zeroing wgpu
            // adds at the start of each workgroup is skipped, except with the shader checks on.
            compilation_options: wgpu::PipelineCompilationOptions {
                zero_initialize_workgroup_memory: ctx.shader_checks,
                ..Default::default()
            },
            cache: None,
        });
        Self {
            pipeline,
            layout,
            name: entry,
        }
    }

    /// Binds whole buffers in binding-index order.
    pub fn bind(&self, device: &wgpu::Device, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        self.bind_windowed(device, buffers, None)
    }

    /// Like [`Kernel::bind`], but binding 0 is a window of `window` bytes (for dynamic offsets).
    pub fn bind_windowed(
        &self,
        device: &wgpu::Device,
        buffers: &[&wgpu::Buffer],
        window: Option<u64>,
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: match (i, window) {
                    (0, Some(size)) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: b,
                        offset: 0,
                        size: wgpu::BufferSize::new(size),
                    }),
                    _ => b.as_entire_binding(),
                },
            })
            .collect();
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(self.name),
            layout: &self.layout,
            entries: &entries,
        })
    }
}

/// One tiled-product kernel compiled for several tile shapes, all sharing one bind group
/// layout: bind groups are made once and serve every shape.
pub struct TiledKernel {
    variants: Vec<(TileShape, Kernel)>,
    layout: wgpu::BindGroupLayout,
    name: &'static str,
}

impl TiledKernel {
    /// Compiles `entry` of `file` for each distinct shape in `shapes`.
    pub fn new(
        ctx: &GpuContext,
        file: &str,
        entry: &'static str,
        slots: &[Slot],
        shapes: &[TileShape],
    ) -> Self {
        let device = &ctx.device;
        let layout = bind_layout(device, entry, slots);
        let mut variants: Vec<(TileShape, Kernel)> = Vec::new();
        for &s in shapes {
            if variants.iter().all(|(v, _)| *v != s) {
                let module = shader::module_with(ctx, file, s);
                variants.push((s, Kernel::with_layout(ctx, &module, entry, layout.clone())));
            }
        }
        Self {
            variants,
            layout,
            name: entry,
        }
    }

    /// The pipeline for `shape` (compiled at construction; asking for another is a bug).
    pub fn get(&self, shape: TileShape) -> &Kernel {
        self.variants
            .iter()
            .find(|(s, _)| *s == shape)
            .map(|(_, k)| k)
            .unwrap_or_else(|| panic!("{}: tile shape {shape} was not compiled", self.name))
    }

    /// Binds whole buffers in binding-index order (valid for every shape).
    pub fn bind(&self, device: &wgpu::Device, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(self.name),
            layout: &self.layout,
            entries: &entries,
        })
    }
}

/// One recorded dispatch: a kernel, its bind group and its workgroup count.
#[derive(Clone, Copy)]
pub struct Dispatch<'a> {
    pub kernel: &'a Kernel,
    pub bind: &'a wgpu::BindGroup,
    pub groups: u32,
}

/// Records a dispatch whose binding 0 takes a dynamic offset.
pub fn record_at(pass: &mut wgpu::ComputePass<'_>, d: Dispatch<'_>, offset: u32) {
    record_with(pass, d, &[offset]);
}

/// WebGPU's default (and common) limit on workgroups per dispatch dimension.
pub const MAX_GROUPS_PER_DIM: u32 = 65535;

/// Records one dispatch into a compute pass (wgpu inserts the barriers between dispatches).
/// Counts above the per-dimension limit spill into y; kernels linearise the workgroup index.
pub fn record(pass: &mut wgpu::ComputePass<'_>, d: Dispatch<'_>) {
    record_with(pass, d, &[]);
}

fn record_with(pass: &mut wgpu::ComputePass<'_>, d: Dispatch<'_>, offsets: &[u32]) {
    if d.groups == 0 {
        return;
    }
    pass.set_pipeline(&d.kernel.pipeline);
    pass.set_bind_group(0, d.bind, offsets);
    let x = d.groups.min(MAX_GROUPS_PER_DIM);
    pass.dispatch_workgroups(x, d.groups.div_ceil(x), 1);
}
