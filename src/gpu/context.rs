//! Adapter selection, device creation with just the limits a model needs, and bounded waits.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How long any single wait on the GPU may take before we call it hung.
/// Generous because lavapipe runs large problems slowly; a real GPU finishes a step in milliseconds.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(600);

/// Which adapter to use. `name` is a case-insensitive substring of the adapter's name; when unset,
/// `WGPU_ADAPTER_NAME` is honoured, then the system's high-performance choice.
#[derive(Clone, Debug, Default)]
pub struct AdapterRequest {
    pub name: Option<String>,
}

/// What a model needs from the device beyond WebGPU's defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    /// Largest single storage binding in bytes.
    pub max_binding_bytes: u64,
    /// Largest buffer in bytes.
    pub max_buffer_bytes: u64,
    /// Ask for timestamp queries when the adapter has them (benchmarks).
    pub timestamps: bool,
    /// Invocations per workgroup and workgroup memory (bytes) beyond WebGPU's defaults (256 and
    /// 16 KiB), for forced tile shapes; 0 means the defaults.
    pub workgroup_threads: u32,
    pub workgroup_bytes: u32,
    /// Open the device with as many invocations per workgroup (up to 1024) and as much
    /// workgroup memory (up to 48 KiB) as the adapter offers: the resident relaxation kernel
    /// sizes its workgroups to the device.
    pub wide_workgroups: bool,
}

impl Needs {
    /// These needs, raised to what `tile` asks of a workgroup.
    pub fn with_tiles(mut self, tile: crate::gpu::tile::TileChoice) -> Self {
        let (threads, bytes) = tile.workgroup_needs();
        self.workgroup_threads = self.workgroup_threads.max(threads);
        self.workgroup_bytes = self.workgroup_bytes.max(bytes);
        self
    }
}

pub struct GpuContext {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// The limits the device was created with (what we asked for, not the adapter's maximum).
    pub limits: wgpu::Limits,
    pub timestamps: bool,
    /// Compile kernels with wgpu's runtime bounds checks (ARELAX_SHADER_CHECKS=1); off by default,
    /// since every kernel checks its own indices (see `gpu::shader::module_with`).
    pub shader_checks: bool,
    /// Unroll the tiled product's register loops (see `gpu::shader`); `ARELAX_UNROLL=0` leaves
    /// them as loops, for measuring the difference.
    pub unroll: bool,
    errors: Arc<Mutex<Vec<String>>>,
    lost: Arc<Mutex<Option<String>>>,
    pub wait_timeout: Duration,
    /// How long [`Self::wait`] polls without blocking before it blocks
    /// (`ARELAX_WAIT_SPIN_US`, microseconds; 0, the default, blocks at once). A blocking wait
    /// returns only once the thread is woken after the GPU signals; polling sees the signal
    /// sooner, at the cost of a busy CPU core while it polls.
    pub wait_spin: Duration,
}

/// `ARELAX_WAIT_SPIN_US` (unset or empty: 0), or why it is not a number of microseconds.
fn wait_spin_from_env() -> Result<Duration> {
    match std::env::var("ARELAX_WAIT_SPIN_US") {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().map(Duration::from_micros).map_err(|_| {
                Error::Config(format!(
                    "ARELAX_WAIT_SPIN_US must be a whole number of microseconds, not '{v}'"
                ))
            })
        }
        _ => Ok(Duration::ZERO),
    }
}

const NO_ADAPTER_HINT: &str = "no GPU adapter found. Install a Vulkan, Metal or DX12 driver; \
on Debian/Ubuntu without a GPU, `apt-get install mesa-vulkan-drivers` gives the lavapipe software \
adapter (select it with --adapter llvmpipe)";

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Every adapter the instance can see, for `arelax info` and for error messages.
pub fn list_adapters() -> Vec<wgpu::AdapterInfo> {
    pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(|a| a.get_info())
        .collect()
}

fn pick_adapter(instance: &wgpu::Instance, request: &AdapterRequest) -> Result<wgpu::Adapter> {
    let wanted = request
        .name
        .clone()
        .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
        .filter(|s| !s.is_empty());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    if adapters.is_empty() {
        return Err(Error::Gpu(NO_ADAPTER_HINT.into()));
    }
    if let Some(wanted) = wanted {
        let needle = wanted.to_lowercase();
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&needle))
            .ok_or_else(|| {
                Error::Gpu(format!(
                    "no adapter matches '{wanted}'; available: {}",
                    names.join(", ")
                ))
            });
    }
    let preferred = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }));
    match preferred {
        Ok(a) => Ok(a),
        // Some systems only expose a CPU adapter; take whatever exists.
        Err(_) => Ok(adapters.into_iter().next().expect("checked non-empty")),
    }
}

impl GpuContext {
    /// Opens a device on the chosen adapter with WebGPU's default limits raised only as far as
    /// `needs` requires. Fails with the limit's name and both numbers when the adapter falls short.
    pub fn new(request: &AdapterRequest, needs: Needs) -> Result<Self> {
        let instance = instance();
        let adapter = pick_adapter(&instance, request)?;
        let info = adapter.get_info();
        let have = adapter.limits();
        let mut limits = wgpu::Limits::default();
        let check = |what: &str, need: u64, has: u64| -> Result<()> {
            if need > has {
                Err(Error::Gpu(format!(
                    "adapter '{}' allows {what} = {has} bytes but the model needs {need} \
                     ({} MiB over); use a smaller batch size or narrower layers",
                    info.name,
                    (need - has).div_ceil(1 << 20)
                )))
            } else {
                Ok(())
            }
        };
        check(
            "max_storage_buffer_binding_size",
            needs.max_binding_bytes,
            have.max_storage_buffer_binding_size,
        )?;
        check(
            "max_buffer_size",
            needs.max_buffer_bytes,
            have.max_buffer_size,
        )?;
        limits.max_storage_buffer_binding_size = limits
            .max_storage_buffer_binding_size
            .max(needs.max_binding_bytes);
        limits.max_buffer_size = limits
            .max_buffer_size
            .max(needs.max_buffer_bytes)
            .max(limits.max_storage_buffer_binding_size);
        let (threads_offered, bytes_offered) = workgroup_room(&have);
        let mut needs = needs;
        if needs.wide_workgroups {
            needs.workgroup_threads = needs.workgroup_threads.max(threads_offered.min(1024));
            needs.workgroup_bytes = needs.workgroup_bytes.max(bytes_offered.min(48 << 10));
        }
        for (what, need, has) in [
            (
                "invocations per workgroup",
                needs.workgroup_threads,
                threads_offered,
            ),
            (
                "bytes of workgroup memory",
                needs.workgroup_bytes,
                bytes_offered,
            ),
        ] {
            if need > has {
                return Err(Error::Gpu(format!(
                    "adapter '{}' allows {has} {what} but the tile shape needs {need}; choose a \
                     smaller --tile",
                    info.name
                )));
            }
        }
        if needs.workgroup_threads > limits.max_compute_invocations_per_workgroup {
            limits.max_compute_invocations_per_workgroup = needs.workgroup_threads;
            limits.max_compute_workgroup_size_x = needs.workgroup_threads;
        }
        limits.max_compute_workgroup_storage_size = limits
            .max_compute_workgroup_storage_size
            .max(needs.workgroup_bytes);
        // Keep requests within what the adapter offers (some mobile/CPU adapters are below defaults).
        let limits = clamp_limits(limits, &have);
        let timestamps =
            needs.timestamps && adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let mut features = wgpu::Features::empty();
        if timestamps {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("arelax"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Gpu(format!("could not open device on '{}': {e}", info.name)))?;

        // Record errors instead of panicking in wgpu's default handler; they surface at the next wait.
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                // wgpu's messages span lines ("Caused by: ..."); keep them on one.
                let text: Vec<String> = e
                    .to_string()
                    .lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty() && l != "Caused by:")
                    .collect();
                v.push(text.join(": "));
            }
        }));
        let lost = Arc::new(Mutex::new(None));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if let Ok(mut l) = lost_sink.lock() {
                let detail = if msg.is_empty() {
                    String::new()
                } else {
                    format!(": {msg}")
                };
                *l = Some(format!("the device was lost ({reason:?}){detail}"));
            }
        });
        Ok(Self {
            adapter,
            device,
            queue,
            info,
            limits,
            timestamps,
            shader_checks: std::env::var("ARELAX_SHADER_CHECKS")
                .is_ok_and(|v| !v.is_empty() && v != "0"),
            unroll: std::env::var("ARELAX_UNROLL").map_or(true, |v| v != "0"),
            errors,
            lost,
            wait_timeout: DEFAULT_WAIT,
            wait_spin: wait_spin_from_env()?,
        })
    }

    /// One line naming the adapter, for logs and reports.
    pub fn describe(&self) -> String {
        let i = &self.info;
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            i.name, i.backend, i.device_type, i.driver, i.driver_info
        )
    }

    /// Fails with the first recorded validation error or device loss, if any.
    pub fn check(&self) -> Result<()> {
        if let Some(l) = self.lost.lock().ok().and_then(|l| l.clone()) {
            return Err(Error::Device(l));
        }
        if let Ok(mut errs) = self.errors.lock()
            && let Some(first) = errs.first().cloned()
        {
            let n = errs.len();
            errs.clear();
            return Err(Error::Device(if n > 1 {
                format!("{first} (and {} more errors)", n - 1)
            } else {
                first
            }));
        }
        Ok(())
    }

    /// Waits for all submitted work: polls for up to `wait_spin`, then blocks, bounded by
    /// `wait_timeout`.
    pub fn wait(&self) -> Result<()> {
        let failed = |e: wgpu::PollError| Error::Device(format!("waiting for the GPU failed: {e}"));
        if !self.wait_spin.is_zero() {
            let start = Instant::now();
            while start.elapsed() < self.wait_spin {
                if self
                    .device
                    .poll(wgpu::PollType::Poll)
                    .map_err(failed)?
                    .is_queue_empty()
                {
                    return self.check();
                }
                std::hint::spin_loop();
            }
        }
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(self.wait_timeout),
            })
            .map_err(failed)?;
        self.check()
    }

    /// Waits for one submission (earlier ones included), bounded by `wait_timeout`.
    pub fn wait_for(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: Some(self.wait_timeout),
            })
            .map_err(|e| Error::Device(format!("waiting for the GPU failed: {e}")))?;
        self.check()
    }

    /// Copies `bytes` bytes from `src` at `offset` into a staging buffer and reads them back.
    pub fn read_bytes(&self, src: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.copy_buffer_to_buffer(src, offset, &staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        let slice = staging.slice(..bytes);
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        let mapped = pollster::block_on(rx.receive())
            .ok_or_else(|| Error::Device("buffer map was cancelled".into()))?;
        mapped.map_err(|e| Error::Device(format!("mapping a buffer for readback failed: {e}")))?;
        let view = slice
            .get_mapped_range()
            .map_err(|e| Error::Device(format!("reading a mapped buffer failed: {e}")))?;
        let out = view.to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// Reads `count` f32 values starting at element `offset` of `src`.
    pub fn read_f32(&self, src: &wgpu::Buffer, offset: u64, count: u64) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(src, offset * 4, count * 4)?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    /// Whether the device was opened with the limits a tile choice needs (see
    /// [`Needs::with_tiles`]): a clear error instead of wgpu's validation failure.
    pub fn check_tiles(&self, tile: crate::gpu::tile::TileChoice) -> Result<()> {
        let (threads, bytes) = tile.workgroup_needs();
        let (have_threads, have_bytes) = workgroup_room(&self.limits);
        if threads > have_threads || bytes > have_bytes {
            return Err(Error::Gpu(format!(
                "tile shape {tile} needs {threads} invocations and {bytes} bytes of workgroup \
                 memory per workgroup; the device was opened with {have_threads} and \
                 {have_bytes} (open it with Needs::with_tiles)"
            )));
        }
        Ok(())
    }

    /// The invocations (one-dimensional) and bytes of workgroup memory a workgroup may use on
    /// this device (as opened, not the adapter's maximum).
    pub fn workgroup_room(&self) -> (u32, u32) {
        workgroup_room(&self.limits)
    }

    /// Reads `count` u32 values starting at element `offset` of `src`.
    pub fn read_u32(&self, src: &wgpu::Buffer, offset: u64, count: u64) -> Result<Vec<u32>> {
        let bytes = self.read_bytes(src, offset * 4, count * 4)?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }
}

/// The invocations (a one-dimensional workgroup) and workgroup memory in bytes that `l` allows.
fn workgroup_room(l: &wgpu::Limits) -> (u32, u32) {
    let threads = l
        .max_compute_invocations_per_workgroup
        .min(l.max_compute_workgroup_size_x);
    (threads, l.max_compute_workgroup_storage_size)
}

/// Never ask for more than the adapter has: take the smaller of each "max" limit.
fn clamp_limits(want: wgpu::Limits, have: &wgpu::Limits) -> wgpu::Limits {
    let mut l = want;
    l.max_storage_buffer_binding_size = l
        .max_storage_buffer_binding_size
        .min(have.max_storage_buffer_binding_size);
    l.max_buffer_size = l.max_buffer_size.min(have.max_buffer_size);
    l.max_compute_workgroup_storage_size = l
        .max_compute_workgroup_storage_size
        .min(have.max_compute_workgroup_storage_size);
    l.max_compute_invocations_per_workgroup = l
        .max_compute_invocations_per_workgroup
        .min(have.max_compute_invocations_per_workgroup);
    l.max_compute_workgroup_size_x = l
        .max_compute_workgroup_size_x
        .min(have.max_compute_workgroup_size_x);
    l.max_compute_workgroups_per_dimension = l
        .max_compute_workgroups_per_dimension
        .min(have.max_compute_workgroups_per_dimension);
    l
}
