//! A data split resident on the GPU (images as u8, labels, the epoch's sample order) and the
//! kernels that gather a batch into the engine's input and accumulate loss and accuracy.
//!
//! Per batch the host chooses only a dynamic offset into a table of batch entries built once;
//! per epoch it uploads the shuffled order (4 bytes a sample) and reads six numbers back.
//! An engine with replicas gets K batches at once, each replica through its own order.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use crate::data::Split;
use crate::gpu::GpuContext;
use crate::gpu::buffers::{self, Dispatch, Kernel, Slot, record_at};
use crate::gpu::shader;
use crate::{Error, Result};

/// Mirror of `BatchPass` in `shaders/batch.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct BatchEntry {
    start: u32,
    count: u32,
    batch: u32,
    pixels: u32,
    classes: u32,
    index: u32,
    replicas: u32,
    len: u32,
}

/// What a data split feeds: any engine with an input, a target and a stats buffer.
pub trait BatchTarget {
    fn context(&self) -> &Arc<GpuContext>;
    fn batch(&self) -> usize;
    /// Copies of the model side by side, each fed its own batch (1 for most engines).
    fn replicas(&self) -> usize {
        1
    }
    fn input_width(&self) -> usize;
    fn output_width(&self) -> usize;
    /// The input activities (x_0 first), the targets and the per-sample stats.
    fn batch_buffers(&self) -> [&wgpu::Buffer; 3];
    /// Forward pass and output error of the uploaded batch.
    fn encode_forward(&self, enc: &mut wgpu::CommandEncoder);
}

/// Uploads one batch from the host: `input` [K·B, n_0] and `target` [K·B, n_L], row-major.
pub fn upload_batch(engine: &impl BatchTarget, input: &[f32], target: &[f32]) -> Result<()> {
    let b = engine.batch() * engine.replicas();
    let (n0, nl) = (engine.input_width(), engine.output_width());
    if input.len() != b * n0 || target.len() != b * nl {
        return Err(Error::Config(format!(
            "batch of {} inputs / {} targets does not match [{b}, {n0}] / [{b}, {nl}]",
            input.len(),
            target.len()
        )));
    }
    let [x, t, _] = engine.batch_buffers();
    let queue = &engine.context().queue;
    queue.write_buffer(x, 0, bytemuck::cast_slice(input));
    queue.write_buffer(t, 0, bytemuck::cast_slice(target));
    Ok(())
}

impl BatchTarget for super::Engine {
    fn context(&self) -> &Arc<GpuContext> {
        super::Engine::context(self)
    }
    fn batch(&self) -> usize {
        self.opts.batch
    }
    fn replicas(&self) -> usize {
        self.opts.replicas
    }
    fn input_width(&self) -> usize {
        self.spec.input_width()
    }
    fn output_width(&self) -> usize {
        self.spec.output_width()
    }
    fn batch_buffers(&self) -> [&wgpu::Buffer; 3] {
        [&self.bufs.x, &self.bufs.target, &self.bufs.stats]
    }
    fn encode_forward(&self, enc: &mut wgpu::CommandEncoder) {
        super::Engine::encode_forward(self, enc)
    }
}

impl BatchTarget for super::graph::GraphEngine {
    fn context(&self) -> &Arc<GpuContext> {
        super::graph::GraphEngine::context(self)
    }
    fn batch(&self) -> usize {
        self.opts.batch
    }
    fn replicas(&self) -> usize {
        self.opts.replicas
    }
    fn input_width(&self) -> usize {
        self.graph.input_size()
    }
    fn output_width(&self) -> usize {
        self.graph.output_size()
    }
    fn batch_buffers(&self) -> [&wgpu::Buffer; 3] {
        [&self.bufs.x, &self.bufs.target, &self.bufs.stats]
    }
    fn encode_forward(&self, enc: &mut wgpu::CommandEncoder) {
        super::graph::GraphEngine::encode_forward(self, enc)
    }
}

/// Per-row loss and correctness of the last output-error pass (every replica's rows).
pub fn batch_stats(engine: &impl BatchTarget) -> Result<(Vec<f32>, Vec<bool>)> {
    let rows = engine.batch() * engine.replicas();
    let [_, _, stats] = engine.batch_buffers();
    let v = engine.context().read_f32(stats, 0, 2 * rows as u64)?;
    Ok((
        v[..rows].to_vec(),
        v[rows..].iter().map(|&c| c > 0.5).collect(),
    ))
}

/// Sums over an epoch, read back once.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EpochSums {
    pub loss: f64,
    pub correct: f64,
    pub samples: f64,
    /// The first batch (index within the epoch) whose loss was not finite.
    pub diverged_at: Option<usize>,
}

impl EpochSums {
    pub fn mean_loss(&self) -> f64 {
        self.loss / self.samples.max(1.0)
    }
    pub fn accuracy(&self) -> f64 {
        self.correct / self.samples.max(1.0)
    }
}

pub struct DeviceSplit {
    pub len: usize,
    pub batches: usize,
    pub replicas: usize,
    stride: u32,
    order: wgpu::Buffer,
    acc: wgpu::Buffer,
    gather: Kernel,
    accumulate: Kernel,
    gather_bind: wgpu::BindGroup,
    accumulate_bind: wgpu::BindGroup,
}

impl DeviceSplit {
    /// Uploads `split` for `engine`. With `drop_last`, a final partial batch is skipped (training,
    /// where the engine's batch size is fixed); without, it runs with its valid rows (evaluation).
    pub fn new(engine: &impl BatchTarget, split: &Split, drop_last: bool) -> Result<Self> {
        let ctx = engine.context();
        let device = &ctx.device;
        let b = engine.batch();
        let replicas = engine.replicas();
        let pixels = engine.input_width();
        let classes = engine.output_width();
        if split.len == 0 {
            return Err(Error::Config("the data split is empty".into()));
        }
        if split.images.len() != split.len * pixels {
            return Err(Error::Config(format!(
                "the model's input width {pixels} does not match the data's {} pixels per image",
                split.images.len() / split.len
            )));
        }
        if let Some(&bad) = split.labels.iter().find(|&&l| l as usize >= classes) {
            return Err(Error::Config(format!(
                "the model has {classes} outputs but the data has label {bad}"
            )));
        }
        let image_bytes = split.images.len() as u64;
        let limit = ctx.limits.max_storage_buffer_binding_size;
        if image_bytes > limit {
            return Err(Error::Gpu(format!(
                "the images need {} MiB on the GPU but max_storage_buffer_binding_size is {} MiB",
                image_bytes >> 20,
                limit >> 20
            )));
        }
        let batches = if drop_last {
            split.len / b
        } else {
            split.len.div_ceil(b)
        };
        if batches == 0 {
            return Err(Error::Config(format!(
                "batch size {b} is larger than the {} samples of the split",
                split.len
            )));
        }
        let stride = device.limits().min_uniform_buffer_offset_alignment;
        let words: Vec<u32> = split
            .images
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(w)
            })
            .collect();
        let labels: Vec<u32> = split.labels.iter().map(|&l| l as u32).collect();
        let images = buffers::storage_init(device, "images", &words);
        let labels = buffers::storage_init(device, "labels", &labels);
        let identity: Vec<u32> = (0..replicas).flat_map(|_| 0..split.len as u32).collect();
        let order = buffers::storage_init(device, "order", &identity);
        let acc = buffers::storage(device, "epoch sums", 8 * replicas);
        let mut table = vec![0u8; batches * stride as usize];
        for k in 0..batches {
            let e = BatchEntry {
                start: (k * b) as u32,
                count: b.min(split.len - k * b) as u32,
                batch: b as u32,
                pixels: pixels as u32,
                classes: classes as u32,
                index: k as u32,
                replicas: replicas as u32,
                len: split.len as u32,
            };
            let at = k * stride as usize;
            table[at..at + std::mem::size_of::<BatchEntry>()]
                .copy_from_slice(bytemuck::bytes_of(&e));
        }
        let table = wgpu::util::DeviceExt::create_buffer_init(
            device,
            &wgpu::util::BufferInitDescriptor {
                label: Some("batch table"),
                contents: &table,
                usage: wgpu::BufferUsages::UNIFORM,
            },
        );
        let window = Some(std::mem::size_of::<BatchEntry>() as u64);
        use Slot::*;
        let gm = shader::module(ctx, "gather.wgsl");
        let am = shader::module(ctx, "accumulate.wgsl");
        let gather = Kernel::new(
            ctx,
            &gm,
            "gather",
            &[DynamicUniform, Read, Read, Read, ReadWrite, ReadWrite],
        );
        let accumulate = Kernel::new(ctx, &am, "accumulate", &[DynamicUniform, Read, ReadWrite]);
        let [x, target, stats] = engine.batch_buffers();
        let gather_bind = gather.bind_windowed(
            device,
            &[&table, &images, &labels, &order, x, target],
            window,
        );
        let accumulate_bind = accumulate.bind_windowed(device, &[&table, stats, &acc], window);
        Ok(Self {
            len: split.len,
            batches,
            replicas,
            stride,
            order,
            acc,
            gather,
            accumulate,
            gather_bind,
            accumulate_bind,
        })
    }

    /// Sets the order in which every replica visits the samples (a permutation of 0..len).
    pub fn set_order(&self, engine: &impl BatchTarget, order: &[u32]) -> Result<()> {
        (0..self.replicas).try_for_each(|k| self.set_replica_order(engine, k, order))
    }

    /// Sets the order in which replica `replica` visits the samples.
    pub fn set_replica_order(
        &self,
        engine: &impl BatchTarget,
        replica: usize,
        order: &[u32],
    ) -> Result<()> {
        if order.len() != self.len {
            return Err(Error::Config(format!(
                "order has {} entries for a split of {}",
                order.len(),
                self.len
            )));
        }
        if replica >= self.replicas {
            return Err(Error::Config(format!(
                "replica {replica} does not exist; the split feeds {}",
                self.replicas
            )));
        }
        engine.context().queue.write_buffer(
            &self.order,
            (replica * self.len * 4) as u64,
            bytemuck::cast_slice(order),
        );
        Ok(())
    }

    /// Writes batch `k` into the engine's input and target buffers.
    pub fn encode_gather(
        &self,
        engine: &impl BatchTarget,
        enc: &mut wgpu::CommandEncoder,
        k: usize,
    ) {
        let elems = self.replicas * engine.batch() * engine.input_width();
        let mut pass = enc.begin_compute_pass(&Default::default());
        record_at(
            &mut pass,
            Dispatch {
                kernel: &self.gather,
                bind: &self.gather_bind,
                groups: elems.div_ceil(256) as u32,
            },
            k as u32 * self.stride,
        );
    }

    /// Adds batch `k`'s loss and accuracy (from the last output-error pass) to the sums.
    pub fn encode_accumulate(&self, enc: &mut wgpu::CommandEncoder, k: usize) {
        let mut pass = enc.begin_compute_pass(&Default::default());
        record_at(
            &mut pass,
            Dispatch {
                kernel: &self.accumulate,
                bind: &self.accumulate_bind,
                groups: self.replicas as u32,
            },
            k as u32 * self.stride,
        );
    }

    pub fn encode_reset(&self, enc: &mut wgpu::CommandEncoder) {
        enc.clear_buffer(&self.acc, 0, None);
    }

    /// The sums of replica 0.
    pub fn read_sums(&self, engine: &impl BatchTarget) -> Result<EpochSums> {
        Ok(self.read_replica_sums(engine)?[0])
    }

    /// The sums of every replica.
    pub fn read_replica_sums(&self, engine: &impl BatchTarget) -> Result<Vec<EpochSums>> {
        let v = engine
            .context()
            .read_f32(&self.acc, 0, 8 * self.replicas as u64)?;
        Ok(v.chunks(8)
            .map(|v| EpochSums {
                loss: v[0] as f64,
                correct: v[2] as f64,
                samples: v[3] as f64,
                diverged_at: (v[4] != 0.0).then_some(v[5] as usize),
            })
            .collect())
    }

    /// [`Self::evaluate_replicas`] for replica 0.
    pub fn evaluate(&self, engine: &impl BatchTarget) -> Result<EpochSums> {
        Ok(self.evaluate_replicas(engine)?[0])
    }

    /// Forward pass and loss over every batch (no update), returning each replica's sums. Used
    /// for test and validation accuracy.
    pub fn evaluate_replicas(&self, engine: &impl BatchTarget) -> Result<Vec<EpochSums>> {
        let ctx = engine.context();
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        self.encode_reset(&mut enc);
        for k in 0..self.batches {
            self.encode_gather(engine, &mut enc, k);
            engine.encode_forward(&mut enc);
            self.encode_accumulate(&mut enc, k);
        }
        ctx.queue.submit([enc.finish()]);
        self.read_replica_sums(engine)
    }
}
