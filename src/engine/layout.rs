//! Where every layer's tensors live inside the packed GPU buffers.
//!
//! Packing all layers into one buffer per kind (parameters, activities, derivatives, relaxation
//! state) is what lets one dispatch relax every layer at once while binding only a handful of
//! buffers (WebGPU allows 8 storage buffers per stage by default).

use bytemuck::{Pod, Zeroable};

use crate::gpu::tile::{TileChoice, TileShape};
use crate::model::ModelSpec;

/// Mirror of `struct Layer` in `shaders/common.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct LayerEntry {
    pub n_in: u32,
    pub n_out: u32,
    pub w: u32,
    pub b: u32,
    pub x_in: u32,
    pub x_out: u32,
    pub fp: u32,
    pub r_in: u32,
    pub r_out: u32,
    pub act: u32,
    pub pad: [u32; 2],
}

/// Mirror of `struct Pass` in `shaders/common.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct PassUniform {
    pub first: u32,
    pub count: u32,
    pub batch: u32,
    pub flags: u32,
    /// The relaxation rate η (relax.wgsl), the loss scale (forward_fused's output error), or
    /// the lr (the gradient kernel's SGD entry).
    pub rate: f32,
    /// The weight gradients' K chunks (grad.wgsl; 0 or 1: none), and the floats between two
    /// chunks' partial sums.
    pub split: u32,
    pub part_len: u32,
    /// The gradient kernel's SGD entry with [`FLAG_SGD_FEEDBACK`]: ψ's weight decay.
    pub decay: f32,
}

pub const FLAG_NO_RELAX_DERIV: u32 = 1;
pub const FLAG_NO_UPDATE_DERIV: u32 = 2;
pub const FLAG_ADAPTIVE: u32 = 4;
pub const FLAG_FPRIME_ONLY: u32 = 8;
/// `forward_fused`: the hidden layer's output is also written as the relaxation start.
pub const FLAG_WRITE_START: u32 = 16;
/// `forward_fused`: the output layer's dispatch also computes the output error.
pub const FLAG_OUTPUT_ERROR: u32 = 32;
/// With [`FLAG_OUTPUT_ERROR`]: the loss is cross-entropy (else MSE).
pub const FLAG_LOSS_CE: u32 = 64;
/// ψ (learned feedback) takes the SGD step too, with its decay, where a gradient kernel's SGD
/// entry (`param_grad_sgd`, `grad_sum_sgd`) takes one.
pub const FLAG_SGD_FEEDBACK: u32 = 256;

/// Element offsets of every tensor, for one model, batch size and replica count.
///
/// Replicas are independent copies of the model (say, one per seed) trained in the same
/// dispatches. The layer table is layer-major (entry `l·K + k` is layer l of replica k), so the
/// entries of one layer, or of every hidden layer, stay one contiguous range of the table and
/// every kernel covers all replicas without knowing they exist. Activities, derivatives and
/// relaxation states are layer-major too ([K, B, n_l] per layer); parameters are replica-major,
/// so one replica's W and b are one slice.
#[derive(Clone, Debug)]
pub struct Layout {
    pub batch: usize,
    pub replicas: usize,
    pub widths: Vec<usize>,
    /// `replicas × depth` entries, layer-major.
    pub layers: Vec<LayerEntry>,
    /// Length of the packed parameter buffer (every replica's W_l, b_l).
    pub params_len: usize,
    /// Length of one replica's parameters.
    pub replica_params_len: usize,
    /// Length of the activity buffer (x_0 … x_L).
    pub x_len: usize,
    /// Length of the derivative buffer (f'_0 … f'_{L−1}).
    pub fp_len: usize,
    /// Length of each relaxation buffer (r_1 … r_L); r_l sits at x_l's offset minus K·B·n_0, so
    /// the forward start is one buffer copy.
    pub r_len: usize,
}

impl Layout {
    pub fn new(spec: &ModelSpec, batch: usize) -> Self {
        Self::replicated(spec, batch, 1)
    }

    pub fn replicated(spec: &ModelSpec, batch: usize, replicas: usize) -> Self {
        let w = &spec.widths;
        let depth = spec.depth();
        let rows = replicas * batch;
        let mut x_off = vec![0usize; depth + 1];
        for l in 1..=depth {
            x_off[l] = x_off[l - 1] + rows * w[l - 1];
        }
        let x_len = x_off[depth] + rows * w[depth];
        let r_base = rows * w[0];
        let mut p_off = vec![0usize; depth];
        let mut fp_off = vec![0usize; depth];
        for l in 1..depth {
            p_off[l] = p_off[l - 1] + w[l - 1] * w[l] + w[l];
            fp_off[l] = fp_off[l - 1] + rows * w[l];
        }
        let replica_params_len = p_off[depth - 1] + w[depth - 1] * w[depth] + w[depth];
        let mut layers = Vec::with_capacity(depth * replicas);
        for l in 0..depth {
            let (n_in, n_out) = (w[l], w[l + 1]);
            for k in 0..replicas {
                let p_at = k * replica_params_len + p_off[l];
                let x_in = x_off[l] + k * batch * n_in;
                let x_out = x_off[l + 1] + k * batch * n_out;
                layers.push(LayerEntry {
                    n_in: n_in as u32,
                    n_out: n_out as u32,
                    w: p_at as u32,
                    b: (p_at + n_in * n_out) as u32,
                    x_in: x_in as u32,
                    x_out: x_out as u32,
                    fp: (fp_off[l] + k * batch * n_out) as u32,
                    r_in: x_in.saturating_sub(r_base) as u32,
                    r_out: (x_out - r_base) as u32,
                    act: spec.activation(l).code(),
                    pad: [0; 2],
                });
            }
        }
        Self {
            batch,
            replicas,
            widths: w.clone(),
            layers,
            params_len: replicas * replica_params_len,
            replica_params_len,
            x_len,
            fp_len: fp_off[depth - 1] + rows * w[depth],
            r_len: x_len - r_base,
        }
    }

    pub fn depth(&self) -> usize {
        self.widths.len() - 1
    }

    /// The table range (first entry, count) of layers `first..first+count` of every replica.
    pub fn entries(&self, first: usize, count: usize) -> (u32, u32) {
        (
            (first * self.replicas) as u32,
            (count * self.replicas) as u32,
        )
    }

    /// A dispatch's settings for layers `first..first+count` of every replica (no K chunks).
    pub fn pass(&self, first: usize, count: usize, rate: f32, flags: u32) -> PassUniform {
        let (first, count) = self.entries(first, count);
        PassUniform {
            first,
            count,
            batch: self.batch as u32,
            flags,
            rate,
            split: 0,
            part_len: 0,
            decay: 0.0,
        }
    }

    /// Batch rows of all replicas together (K·B).
    pub fn rows(&self) -> usize {
        self.replicas * self.batch
    }

    /// Where the relaxation buffers start in the activity buffer (after x_0).
    pub fn r_base(&self) -> usize {
        self.rows() * self.widths[0]
    }

    /// Workgroups of a 64×64-tiled product of an M×N output (the graph engine's shape).
    pub fn tiles(m: usize, n: usize) -> u32 {
        TileShape::T64.tiles(m, n)
    }

    /// The outputs (M × N) of layer l's forward product: x_{l+1} is [B, n_{l+1}].
    pub fn forward_product(&self, l: usize) -> Vec<(usize, usize)> {
        vec![(self.batch, self.widths[l + 1]); self.replicas]
    }

    /// The outputs of relaxing layers `first..first+count` in one dispatch (r_l is [B, n_l]).
    pub fn relax_products(&self, first: usize, count: usize) -> Vec<(usize, usize)> {
        (first..first + count)
            .flat_map(|l| vec![(self.batch, self.widths[l]); self.replicas])
            .collect()
    }

    /// The outputs of every layer's weight and bias gradient ([n_out, n_in + 1]: the bias is the
    /// last column, see `shaders/grad.wgsl`) in one dispatch.
    pub fn grad_products(&self) -> Vec<(usize, usize)> {
        (0..self.depth())
            .flat_map(|l| vec![(self.widths[l + 1], self.widths[l] + 1); self.replicas])
            .collect()
    }

    /// The outputs of f' at the current state of every relaxing layer (layers 1…L−1).
    pub fn derivative_products(&self) -> Vec<(usize, usize)> {
        (1..self.depth())
            .flat_map(|l| vec![(self.batch, self.widths[l + 1]); self.replicas])
            .collect()
    }

    /// Offset and length of r_l (l ≥ 1) of every replica in a relaxation buffer.
    pub fn r_block(&self, l: usize) -> (usize, usize) {
        let (x, n) = self.x_block(l);
        (x - self.r_base(), n)
    }

    /// Offset and length of x_l of every replica in the activity buffer.
    pub fn x_block(&self, l: usize) -> (usize, usize) {
        let k = self.replicas;
        let start = if l == self.depth() {
            self.layers[(l - 1) * k].x_out
        } else {
            self.layers[l * k].x_in
        } as usize;
        (start, self.rows() * self.widths[l])
    }

    /// The hidden part of the relaxation buffer (r_1 … r_{L−1}): what the start initialises.
    pub fn hidden_r_len(&self) -> usize {
        self.r_block(self.depth()).0
    }

    /// The largest buffer in bytes (for device limits).
    pub fn max_buffer_bytes(&self) -> u64 {
        let n = [
            self.params_len,
            self.x_len,
            self.fp_len,
            self.r_len,
            self.rows() * self.widths[self.depth()],
        ];
        n.iter().copied().max().unwrap_or(1) as u64 * 4
    }
}

/// Workgroups for a dispatch of `shape` tiles over `products`.
pub fn groups(shape: TileShape, products: &[(usize, usize)]) -> u32 {
    products.iter().map(|&(m, n)| shape.tiles(m, n)).sum()
}

/// The tile shape of every tiled dispatch an engine records, decided once per model and batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shapes {
    /// One per layer (each layer's forward product is its own dispatch).
    pub forward: Vec<TileShape>,
    /// All hidden layers at once (the Jacobi step).
    pub relax: TileShape,
    /// One per layer (exact backprop and the sweep schedule relax one layer at a time).
    pub single: Vec<TileShape>,
    pub derivative: TileShape,
    pub grad: TileShape,
}

impl Shapes {
    pub fn new(layout: &Layout, choice: TileChoice) -> Self {
        let depth = layout.depth();
        Self {
            forward: (0..depth)
                .map(|l| choice.pick(&layout.forward_product(l)))
                .collect(),
            relax: choice.pick(&layout.relax_products(1, depth.saturating_sub(1))),
            single: (0..depth)
                .map(|l| choice.pick(&layout.relax_products(l, 1)))
                .collect(),
            derivative: choice.pick(&layout.derivative_products()),
            grad: choice.pick(&layout.grad_products()),
        }
    }

    /// Every shape some relaxation or backprop dispatch uses.
    pub fn relax_shapes(&self) -> Vec<TileShape> {
        let mut v = self.single.clone();
        v.push(self.relax);
        v
    }
}
