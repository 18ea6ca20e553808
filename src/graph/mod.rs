//! Arbitrary computation graphs: a DAG of dense, convolution, pooling, flatten, add and concat
//! nodes, read from a TOML model file (see [`parse`]) or built from an MLP spec.
//!
//! AR generalises to a DAG unchanged: every hidden node relaxes towards the sum of its children's
//! vector–Jacobian products while the single output is clamped to the loss gradient, and the fixed
//! point is the multivariate chain rule. [`mod@reference`] is the float64 CPU truth for every node
//! kind. Conventions follow the MLP's: per-sample tensors are `[c, h, w]` row-major, batches are
//! `[B, size]`, dense weights are `[units, in]` (PyTorch `nn.Linear`), convolution weights are
//! `[c_out, c_in, k, k]` (PyTorch `Conv2d`).

pub mod parse;
pub mod reference;

use std::fmt;
use std::path::Path;

use crate::Result;
use crate::model::{Activation, Init, Loss, ModelSpec, Params};
use crate::rng::Rng;

/// Per-sample tensor shape `[channels, height, width]`, row-major (c outermost). A dense/flat
/// tensor is `(n, 1, 1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    pub fn new(c: usize, h: usize, w: usize) -> Shape {
        Shape { c, h, w }
    }

    /// Elements per sample.
    pub fn size(&self) -> usize {
        self.c * self.h * self.w
    }

    /// A flat vector of `n` elements.
    pub fn flat(n: usize) -> Shape {
        Shape { c: n, h: 1, w: 1 }
    }

    pub fn is_flat(&self) -> bool {
        self.h == 1 && self.w == 1
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_flat() {
            write!(f, "{}", self.c)
        } else {
            write!(f, "{}x{}x{}", self.c, self.h, self.w)
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// The data; exactly one per graph, always `nodes[0]`.
    Input,
    /// `y = f(W·flatten(x) + b)`, `W` is `[units, in_size]`.
    Dense {
        units: usize,
        activation: Activation,
    },
    /// Square kernel, zero padding; `W` is `[c_out, c_in, k, k]`, bias `[c_out]`.
    Conv2d {
        channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        activation: Activation,
    },
    /// No padding; ties go to the first max in row-major window order.
    MaxPool { kernel: usize, stride: usize },
    /// No padding; the mean over the `k*k` window.
    AvgPool { kernel: usize, stride: usize },
    /// `[c, h, w] -> (c*h*w, 1, 1)`; the memory layout is unchanged.
    Flatten,
    /// Elementwise sum of two or more inputs of identical shape.
    Add,
    /// Along channels, in the order of the inputs; inputs share h and w.
    Concat,
}

/// Every kind's name in a model file, in a fixed order (used in error messages).
pub const KIND_NAMES: [&str; 8] = [
    "input", "dense", "conv2d", "max-pool", "avg-pool", "flatten", "add", "concat",
];

impl NodeKind {
    /// The name of the kind in a model file.
    pub fn name(&self) -> &'static str {
        match self {
            NodeKind::Input => "input",
            NodeKind::Dense { .. } => "dense",
            NodeKind::Conv2d { .. } => "conv2d",
            NodeKind::MaxPool { .. } => "max-pool",
            NodeKind::AvgPool { .. } => "avg-pool",
            NodeKind::Flatten => "flatten",
            NodeKind::Add => "add",
            NodeKind::Concat => "concat",
        }
    }

    pub fn has_params(&self) -> bool {
        matches!(self, NodeKind::Dense { .. } | NodeKind::Conv2d { .. })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub id: String,
    pub kind: NodeKind,
    /// Indices of the parents, in the order the file lists them (it matters for concat).
    pub inputs: Vec<usize>,
    /// The output shape.
    pub shape: Shape,
}

/// A validated computation graph. Invariants (established by [`Graph::parse`] and
/// [`Graph::mlp`]): nodes are topologically ordered (every input index is below the node's own),
/// `nodes[0]` is the only input node, no node lists an input twice, and `output` is the only node
/// without children, a dense node with a linear activation (the logits for `ce`). Since every
/// other node leads to the output, the output is also the last node.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub output: usize,
    pub loss: Loss,
    /// The model file's text (kept in checkpoints and dumps); for [`Graph::mlp`] an equivalent
    /// generated file.
    pub source: String,
}

impl Graph {
    /// Parses and validates a model file; every problem is an [`Error::File`](crate::Error::File) naming `path` and,
    /// where there is one, the node.
    pub fn parse(path: &Path, text: &str) -> Result<Graph> {
        parse::parse(path, text)
    }

    /// Reads and parses a model file.
    pub fn load(path: &Path) -> Result<Graph> {
        let text = crate::util::read_settings(path)?;
        Self::parse(path, &text)
    }

    /// The chain `input(n_0) -> dense -> … -> dense(linear)` equivalent to an MLP spec, with ids
    /// `input`, `layers.0`, `layers.1`, … (node `l + 1` is layer `l`).
    pub fn mlp(spec: &ModelSpec) -> Graph {
        let mut nodes = vec![Node {
            id: "input".into(),
            kind: NodeKind::Input,
            inputs: Vec::new(),
            shape: Shape::flat(spec.input_width()),
        }];
        for l in 0..spec.depth() {
            let units = spec.widths[l + 1];
            nodes.push(Node {
                id: format!("layers.{l}"),
                kind: NodeKind::Dense {
                    units,
                    activation: spec.activation(l),
                },
                inputs: vec![l],
                shape: Shape::flat(units),
            });
        }
        let mut g = Graph {
            output: nodes.len() - 1,
            nodes,
            loss: spec.loss,
            source: String::new(),
        };
        let widths: Vec<String> = spec.widths.iter().map(|w| w.to_string()).collect();
        g.source = format!(
            "# Generated from --layers {} ({} hidden): the MLP as a graph.\n{}",
            widths.join(","),
            spec.hidden,
            g.to_toml()
        );
        g
    }

    /// The nodes that take node `i` as an input, ascending.
    pub fn children(&self, i: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&j| self.nodes[j].inputs.contains(&i))
            .collect()
    }

    /// Index of the node called `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// `(weight shape, bias length)` of a dense (`[units, in]`) or conv2d (`[c_out, c_in, k, k]`)
    /// node; `None` for parameter-free nodes.
    pub fn param_shape(&self, i: usize) -> Option<(Vec<usize>, usize)> {
        let node = &self.nodes[i];
        let parent = || self.nodes[node.inputs[0]].shape;
        match node.kind {
            NodeKind::Dense { units, .. } => Some((vec![units, parent().size()], units)),
            NodeKind::Conv2d {
                channels, kernel, ..
            } => Some((vec![channels, parent().c, kernel, kernel], channels)),
            _ => None,
        }
    }

    /// Weights and biases of every node together.
    pub fn param_count(&self) -> usize {
        (0..self.nodes.len())
            .filter_map(|i| self.param_shape(i))
            .map(|(w, b)| w.iter().product::<usize>() + b)
            .sum()
    }

    pub fn input_size(&self) -> usize {
        self.nodes[0].shape.size()
    }

    pub fn output_size(&self) -> usize {
        self.nodes[self.output].shape.size()
    }

    /// The longest path, in edges, from the input to the output: with η = 1 the Jacobi relaxation
    /// is exact after this many steps.
    pub fn depth(&self) -> usize {
        let mut d = vec![0usize; self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            d[i] = node.inputs.iter().map(|&p| d[p] + 1).max().unwrap_or(0);
        }
        d[self.output]
    }

    /// The activation of a dense or conv2d node.
    pub fn activation(&self, i: usize) -> Option<Activation> {
        match self.nodes[i].kind {
            NodeKind::Dense { activation, .. } | NodeKind::Conv2d { activation, .. } => {
                Some(activation)
            }
            _ => None,
        }
    }

    /// One line for logs, e.g. for `examples/cnn.toml`:
    /// "graph input 1x28x28 -> 10, 8 nodes, depth 7, 141302 parameters, mse loss".
    pub fn describe(&self) -> String {
        format!(
            "graph input {} -> {}, {} nodes, depth {}, {} parameters, {} loss",
            self.nodes[0].shape,
            self.nodes[self.output].shape,
            self.nodes.len(),
            self.depth(),
            self.param_count(),
            self.loss
        )
    }

    /// A model file describing this graph with every setting spelled out; parsing it gives back
    /// the same nodes in the same order.
    pub fn to_toml(&self) -> String {
        // Value's Display quotes and escapes a string the TOML way.
        let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut out = format!("loss = \"{}\"\n", self.loss);
        for node in &self.nodes {
            out.push_str("\n[[node]]\n");
            out.push_str(&format!("id = {}\n", quote(&node.id)));
            out.push_str(&format!("kind = \"{}\"\n", node.kind.name()));
            if !node.inputs.is_empty() {
                let names: Vec<String> = node
                    .inputs
                    .iter()
                    .map(|&p| quote(&self.nodes[p].id))
                    .collect();
                out.push_str(&format!("inputs = [{}]\n", names.join(", ")));
            }
            match node.kind {
                NodeKind::Input => {
                    let s = node.shape;
                    if s.is_flat() {
                        out.push_str(&format!("size = {}\n", s.c));
                    } else {
                        out.push_str(&format!("shape = [{}, {}, {}]\n", s.c, s.h, s.w));
                    }
                }
                NodeKind::Dense { units, activation } => {
                    out.push_str(&format!("units = {units}\nactivation = \"{activation}\"\n"));
                }
                NodeKind::Conv2d {
                    channels,
                    kernel,
                    stride,
                    padding,
                    activation,
                } => {
                    out.push_str(&format!(
                        "channels = {channels}\nkernel = {kernel}\nstride = {stride}\n\
                         padding = {padding}\nactivation = \"{activation}\"\n"
                    ));
                }
                NodeKind::MaxPool { kernel, stride } | NodeKind::AvgPool { kernel, stride } => {
                    out.push_str(&format!("kernel = {kernel}\nstride = {stride}\n"));
                }
                NodeKind::Flatten | NodeKind::Add | NodeKind::Concat => {}
            }
        }
        out
    }
}

/// Parameters per node, in node order; empty vectors for parameter-free nodes. f32 like the GPU.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphParams {
    pub weights: Vec<Vec<f32>>,
    pub biases: Vec<Vec<f32>>,
}

impl GraphParams {
    /// Seeded initialisation from `init`. For [`Graph::mlp`] this draws exactly what
    /// [`Params::init`] draws (same stream, same order).
    pub fn init(g: &Graph, init: Init, seed: u64) -> Self {
        let mut rng = Rng::stream(seed, 1);
        Self::random(g, init, &mut rng)
    }

    /// Parameters drawn from `init` using `rng`, node by node in order (also used for fixed
    /// random feedback weights); the fan-in is `in_size` for dense and `c_in*k*k` for conv2d.
    pub fn random(g: &Graph, init: Init, rng: &mut Rng) -> Self {
        let mut p = Self::zeros_like(g);
        for (i, (w, b)) in p.weights.iter_mut().zip(&mut p.biases).enumerate() {
            let Some((shape, _)) = g.param_shape(i) else {
                continue;
            };
            let fan_in: usize = shape[1..].iter().product();
            for v in w.iter_mut() {
                *v = init.weight(fan_in, rng);
            }
            *b = init.biases(fan_in, b.len(), rng);
        }
        p
    }

    pub fn zeros_like(g: &Graph) -> Self {
        let (mut weights, mut biases) = (Vec::new(), Vec::new());
        for i in 0..g.nodes.len() {
            let (nw, nb) = g
                .param_shape(i)
                .map_or((0, 0), |(w, b)| (w.iter().product(), b));
            weights.push(vec![0.0; nw]);
            biases.push(vec![0.0; nb]);
        }
        Self { weights, biases }
    }

    /// The layer parameters of an MLP as the parameters of its [`Graph::mlp`] (the input node
    /// has none, so layer `l` becomes node `l + 1`).
    pub fn from_mlp(p: &Params) -> Self {
        let mut weights = vec![Vec::new()];
        weights.extend(p.weights.iter().cloned());
        let mut biases = vec![Vec::new()];
        biases.extend(p.biases.iter().cloned());
        Self { weights, biases }
    }

    pub fn all_finite(&self) -> bool {
        self.weights
            .iter()
            .chain(&self.biases)
            .all(|v| v.iter().all(|x| x.is_finite()))
    }
}
