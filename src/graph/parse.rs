//! Reading a model file (TOML) into a validated [`Graph`].
//!
//! ```toml
//! loss = "mse"                 # or "ce"; default mse
//! [[node]]
//! id = "image"
//! kind = "input"
//! shape = [1, 28, 28]          # or: size = 784
//! [[node]]
//! id = "conv1"
//! kind = "conv2d"              # input, dense, conv2d, max-pool, avg-pool, flatten, add, concat
//! inputs = ["image"]
//! channels = 6
//! kernel = 5
//! stride = 1                   # default 1
//! padding = 0                  # default 0
//! activation = "tanh"          # default relu (linear for the output node)
//! ```
//!
//! Every check happens here, before anything runs, so that a bad file fails in a second with a
//! message naming the file, the node and the problem rather than deep inside the GPU engine.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use toml::{Table, Value};

use super::{Graph, KIND_NAMES, Node, NodeKind, Shape};
use crate::model::{Activation, Loss};
use crate::{Error, Result};

/// Largest value of any integer setting: far above any real model, low enough that products of a
/// few of them cannot overflow before [`MAX_ELEMENTS`] is checked.
const MAX_DIM: usize = 1 << 24;
/// Largest per-sample tensor or weight tensor, in elements.
const MAX_ELEMENTS: usize = 1 << 30;

/// The keys every node may have.
const COMMON_KEYS: [&str; 3] = ["id", "kind", "inputs"];

/// The keys each kind adds to [`COMMON_KEYS`].
fn kind_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "input" => &["shape", "size"],
        "dense" => &["units", "activation"],
        "conv2d" => &["channels", "kernel", "stride", "padding", "activation"],
        "max-pool" | "avg-pool" => &["kernel", "stride"],
        _ => &[],
    }
}

/// A node as written, before the graph is known. The activation stays unresolved because its
/// default depends on whether the node turns out to be the output.
struct RawNode {
    id: String,
    kind: RawKind,
    inputs: Vec<String>,
}

enum RawKind {
    Input(Shape),
    Dense {
        units: usize,
        activation: Option<Activation>,
    },
    Conv2d {
        channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        activation: Option<Activation>,
    },
    MaxPool {
        kernel: usize,
        stride: usize,
    },
    AvgPool {
        kernel: usize,
        stride: usize,
    },
    Flatten,
    Add,
    Concat,
}

impl RawKind {
    fn name(&self) -> &'static str {
        match self {
            RawKind::Input(_) => "input",
            RawKind::Dense { .. } => "dense",
            RawKind::Conv2d { .. } => "conv2d",
            RawKind::MaxPool { .. } => "max-pool",
            RawKind::AvgPool { .. } => "avg-pool",
            RawKind::Flatten => "flatten",
            RawKind::Add => "add",
            RawKind::Concat => "concat",
        }
    }
}

/// Parses and validates a model file's text; `path` is only used in messages.
pub fn parse(path: &Path, text: &str) -> Result<Graph> {
    Parser { path }.parse(text)
}

struct Parser<'a> {
    path: &'a Path,
}

impl Parser<'_> {
    fn err(&self, message: impl std::fmt::Display) -> Error {
        Error::file(self.path, message)
    }

    fn node_err(&self, id: &str, message: impl std::fmt::Display) -> Error {
        Error::file(self.path, format!("node '{id}': {message}"))
    }

    fn parse(&self, text: &str) -> Result<Graph> {
        let doc: Table = toml::from_str(text).map_err(|e| {
            // The full Display of a TOML error spans several lines; ours are one line.
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            let message = e.message().trim().replace('\n', " ");
            match line {
                Some(l) => self.err(format!("not valid TOML (line {l}): {message}")),
                None => self.err(format!("not valid TOML: {message}")),
            }
        })?;
        for key in doc.keys() {
            if key != "loss" && key != "node" {
                return Err(self.err(format!(
                    "unknown top-level key '{key}' (a model file has 'loss' and [[node]] tables)"
                )));
            }
        }
        let loss = match doc.get("loss") {
            None => Loss::Mse,
            Some(Value::String(s)) => Loss::from_str(s)
                .map_err(|_| self.err(format!("unknown loss '{s}' (expected mse or ce)")))?,
            Some(_) => return Err(self.err("'loss' must be a string: \"mse\" or \"ce\"")),
        };
        let tables = match doc.get("node") {
            None => {
                return Err(self.err(
                    "no [[node]] tables: a model needs an input node and a linear dense output",
                ));
            }
            Some(Value::Array(a)) => a,
            Some(_) => return Err(self.err("'node' must be an array of tables ([[node]])")),
        };
        let raw = tables
            .iter()
            .enumerate()
            .map(|(pos, v)| self.raw_node(pos, v))
            .collect::<Result<Vec<_>>>()?;
        let graph = self.build(&raw, loss)?;
        Ok(Graph {
            source: text.to_string(),
            ..graph
        })
    }

    /// Reads one `[[node]]` table: its id, kind, inputs and settings, checking keys and types.
    fn raw_node(&self, pos: usize, value: &Value) -> Result<RawNode> {
        let nth = ordinal(pos + 1);
        let Value::Table(t) = value else {
            return Err(self.err(format!("the {nth} [[node]] is not a table")));
        };
        let id = match t.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(self.err(format!("the {nth} [[node]]: 'id' must be a string"))),
            None => return Err(self.err(format!("the {nth} [[node]] has no 'id'"))),
        };
        // Ids name tensors in checkpoints and dumps, so keep them plain.
        if id.is_empty()
            || !id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch))
        {
            return Err(self.err(format!(
                "the {nth} [[node]]: id '{id}' must be non-empty and use only letters, digits, \
                 '_', '-' and '.'"
            )));
        }
        let kind = match t.get("kind") {
            Some(Value::String(s)) if KIND_NAMES.contains(&s.as_str()) => s.as_str(),
            Some(Value::String(s)) => {
                return Err(self.node_err(
                    &id,
                    format!(
                        "unknown kind '{s}' (known kinds: {})",
                        KIND_NAMES.join(", ")
                    ),
                ));
            }
            Some(_) => return Err(self.node_err(&id, "'kind' must be a string")),
            None => {
                return Err(self.node_err(
                    &id,
                    format!("no 'kind' (known kinds: {})", KIND_NAMES.join(", ")),
                ));
            }
        };
        let allowed = kind_keys(kind);
        for key in t.keys() {
            if !COMMON_KEYS.contains(&key.as_str()) && !allowed.contains(&key.as_str()) {
                let mut keys: Vec<&str> = COMMON_KEYS.to_vec();
                keys.extend_from_slice(allowed);
                return Err(self.node_err(
                    &id,
                    format!(
                        "unknown key '{key}' for {} node (allowed: {})",
                        a_kind(kind),
                        keys.join(", ")
                    ),
                ));
            }
        }
        let inputs = match t.get("inputs") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(self.node_err(&id, "'inputs' must be a list of node ids (strings)")),
                })
                .collect::<Result<Vec<_>>>()?,
            Some(_) => {
                return Err(self.node_err(&id, "'inputs' must be a list of node ids (strings)"));
            }
        };
        let f = Fields {
            parser: self,
            id: &id,
            kind,
            t,
        };
        let kind = match kind {
            "input" => RawKind::Input(f.input_shape()?),
            "dense" => RawKind::Dense {
                units: f.required("units", 1)?,
                activation: f.activation()?,
            },
            "conv2d" => RawKind::Conv2d {
                channels: f.required("channels", 1)?,
                kernel: f.required("kernel", 1)?,
                stride: f.optional("stride", 1)?.unwrap_or(1),
                padding: f.optional("padding", 0)?.unwrap_or(0),
                activation: f.activation()?,
            },
            "max-pool" | "avg-pool" => {
                let kernel = f.required("kernel", 1)?;
                // PyTorch's default: non-overlapping windows.
                let stride = f.optional("stride", 1)?.unwrap_or(kernel);
                if kind == "max-pool" {
                    RawKind::MaxPool { kernel, stride }
                } else {
                    RawKind::AvgPool { kernel, stride }
                }
            }
            "flatten" => RawKind::Flatten,
            "add" => RawKind::Add,
            "concat" => RawKind::Concat,
            _ => unreachable!("kind checked against KIND_NAMES"),
        };
        Ok(RawNode { id, kind, inputs })
    }

    /// Resolves names, sorts topologically, infers shapes and checks the graph as a whole.
    fn build(&self, raw: &[RawNode], loss: Loss) -> Result<Graph> {
        // Ids are unique.
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, node) in raw.iter().enumerate() {
            if let Some(&j) = index.get(node.id.as_str()) {
                return Err(self.node_err(
                    &node.id,
                    format!(
                        "duplicate id: the {} and the {} [[node]] share it",
                        ordinal(j + 1),
                        ordinal(i + 1)
                    ),
                ));
            }
            index.insert(&node.id, i);
        }

        // Exactly one input node.
        let inputs: Vec<usize> = (0..raw.len())
            .filter(|&i| matches!(raw[i].kind, RawKind::Input(_)))
            .collect();
        match inputs.as_slice() {
            [] => return Err(self.err("no input node: one node needs kind = \"input\"")),
            [_] => {}
            [first, second, ..] => {
                return Err(self.node_err(
                    &raw[*second].id,
                    format!(
                        "a second input node (the first is '{}'); a model has exactly one input",
                        raw[*first].id
                    ),
                ));
            }
        }

        // Inputs name existing nodes, each once, and their number suits the kind.
        let mut parents: Vec<Vec<usize>> = Vec::with_capacity(raw.len());
        for node in raw {
            let mut ps = Vec::new();
            for name in &node.inputs {
                let Some(&p) = index.get(name.as_str()) else {
                    return Err(self.node_err(
                        &node.id,
                        format!("input '{name}' names no node in the file"),
                    ));
                };
                if ps.contains(&p) {
                    return Err(self.node_err(
                        &node.id,
                        format!("input '{name}' is listed twice (duplicate inputs)"),
                    ));
                }
                ps.push(p);
            }
            let kind = node.kind.name();
            let n = ps.len();
            match node.kind {
                RawKind::Input(_) if n != 0 => {
                    return Err(self.node_err(
                        &node.id,
                        format!("an input node takes no inputs, but it lists {n}"),
                    ));
                }
                RawKind::Add | RawKind::Concat if n < 2 => {
                    return Err(self.node_err(
                        &node.id,
                        format!("{} node needs at least 2 inputs, got {n}", a_kind(kind)),
                    ));
                }
                RawKind::Input(_) | RawKind::Add | RawKind::Concat => {}
                _ if n != 1 => {
                    return Err(self.node_err(
                        &node.id,
                        format!("{} node takes exactly 1 input, got {n}", a_kind(kind)),
                    ));
                }
                _ => {}
            }
            parents.push(ps);
        }

        let order = self.topological_order(raw, &parents)?;
        let mut new_index = vec![0; raw.len()];
        for (new, &old) in order.iter().enumerate() {
            new_index[old] = new;
        }

        // The output is the one node nobody takes as input.
        let mut has_child = vec![false; raw.len()];
        for ps in &parents {
            for &p in ps {
                has_child[p] = true;
            }
        }
        let sinks: Vec<usize> = order.iter().copied().filter(|&i| !has_child[i]).collect();
        let output_old = match sinks.as_slice() {
            [one] => *one,
            [] => return Err(self.err("no output node (every node feeds another)")),
            many => {
                let names: Vec<String> = many.iter().map(|&i| format!("'{}'", raw[i].id)).collect();
                return Err(self.err(format!(
                    "nodes {} are all outputs (no node takes them as input); a model has \
                     exactly one output, so combine or remove the others",
                    names.join(", ")
                )));
            }
        };

        // Shapes, node by node in topological order (parents are always known already).
        let mut nodes: Vec<Node> = Vec::with_capacity(raw.len());
        for &old in &order {
            let node = &raw[old];
            let is_output = old == output_old;
            let inputs: Vec<usize> = parents[old].iter().map(|&p| new_index[p]).collect();
            let in_shapes: Vec<Shape> = inputs.iter().map(|&p| nodes[p].shape).collect();
            let (kind, shape) = self.resolve(node, &inputs, &in_shapes, &nodes, is_output)?;
            nodes.push(Node {
                id: node.id.clone(),
                kind,
                inputs,
                shape,
            });
        }

        let output = new_index[output_old];
        match nodes[output].kind {
            NodeKind::Dense {
                activation: Activation::Linear,
                ..
            } => {}
            NodeKind::Dense { activation, .. } => {
                return Err(self.node_err(
                    &nodes[output].id,
                    format!(
                        "the output node must have activation \"linear\" (the loss applies its \
                         own output function), got \"{activation}\""
                    ),
                ));
            }
            ref other => {
                return Err(self.node_err(
                    &nodes[output].id,
                    format!(
                        "the output node (the one no node takes as input) must be a dense node \
                         with a linear activation, not kind \"{}\"",
                        other.name()
                    ),
                ));
            }
        }
        debug_assert_eq!(output, nodes.len() - 1, "every node leads to the output");
        Ok(Graph {
            nodes,
            output,
            loss,
            source: String::new(),
        })
    }

    /// Kahn's algorithm, always taking the ready node that comes first in the file, so the order
    /// is deterministic and keeps the file's order among independent nodes. The input node is the
    /// only one without inputs, so it comes first.
    fn topological_order(&self, raw: &[RawNode], parents: &[Vec<usize>]) -> Result<Vec<usize>> {
        let n = raw.len();
        let mut placed = vec![false; n];
        let mut order = Vec::with_capacity(n);
        while order.len() < n {
            let next = (0..n).find(|&i| !placed[i] && parents[i].iter().all(|&p| placed[p]));
            let Some(i) = next else {
                return Err(self.cycle_error(raw, parents, &placed));
            };
            placed[i] = true;
            order.push(i);
        }
        Ok(order)
    }

    /// Names a cycle among the unplaced nodes: each has an unplaced parent, so walking up from
    /// any of them must revisit a node, and the walk from that node on is the cycle.
    fn cycle_error(&self, raw: &[RawNode], parents: &[Vec<usize>], placed: &[bool]) -> Error {
        let start = (0..raw.len())
            .find(|&i| !placed[i])
            .expect("called with unplaced nodes");
        let mut path = vec![start];
        loop {
            let at = *path.last().expect("non-empty");
            let up = parents[at]
                .iter()
                .copied()
                .find(|&p| !placed[p])
                .expect("an unplaced node has an unplaced parent");
            if let Some(pos) = path.iter().position(|&q| q == up) {
                // The walk went child -> parent; print the cycle in data-flow order, from and
                // back to the node it names.
                let mut cycle = vec![up];
                cycle.extend(path[pos + 1..].iter().rev());
                cycle.push(up);
                let ids: Vec<&str> = cycle.iter().map(|&q| raw[q].id.as_str()).collect();
                return self.node_err(
                    &raw[up].id,
                    format!(
                        "part of a cycle ({}); a model must be acyclic",
                        ids.join(" -> ")
                    ),
                );
            }
            path.push(up);
        }
    }

    /// The node's final kind (activation defaults resolved) and its output shape, checking that
    /// its inputs' shapes suit it.
    fn resolve(
        &self,
        node: &RawNode,
        inputs: &[usize],
        in_shapes: &[Shape],
        nodes: &[Node],
        is_output: bool,
    ) -> Result<(NodeKind, Shape)> {
        let id = node.id.as_str();
        let name = |k: usize| nodes[inputs[k]].id.as_str();
        // Hidden nodes default to relu; the output to linear (the only activation it may have).
        let default_act = if is_output {
            Activation::Linear
        } else {
            Activation::Relu
        };
        let (kind, shape) = match node.kind {
            RawKind::Input(shape) => (NodeKind::Input, shape),
            RawKind::Dense { units, activation } => {
                let in_size = in_shapes[0].size();
                self.check_elements(id, "weight", units.checked_mul(in_size))?;
                (
                    NodeKind::Dense {
                        units,
                        activation: activation.unwrap_or(default_act),
                    },
                    Shape::flat(units),
                )
            }
            RawKind::Conv2d {
                channels,
                kernel,
                stride,
                padding,
                activation,
            } => {
                let s = in_shapes[0];
                let (h, w) =
                    self.window_output(id, "conv2d", name(0), s, kernel, stride, padding)?;
                self.check_elements(
                    id,
                    "weight",
                    channels
                        .checked_mul(s.c)
                        .and_then(|v| v.checked_mul(kernel * kernel)),
                )?;
                (
                    NodeKind::Conv2d {
                        channels,
                        kernel,
                        stride,
                        padding,
                        activation: activation.unwrap_or(default_act),
                    },
                    Shape::new(channels, h, w),
                )
            }
            RawKind::MaxPool { kernel, stride } | RawKind::AvgPool { kernel, stride } => {
                let s = in_shapes[0];
                let kind_name = node.kind.name();
                let (h, w) = self.window_output(id, kind_name, name(0), s, kernel, stride, 0)?;
                let kind = if matches!(node.kind, RawKind::MaxPool { .. }) {
                    NodeKind::MaxPool { kernel, stride }
                } else {
                    NodeKind::AvgPool { kernel, stride }
                };
                (kind, Shape::new(s.c, h, w))
            }
            RawKind::Flatten => (NodeKind::Flatten, Shape::flat(in_shapes[0].size())),
            RawKind::Add => {
                let first = in_shapes[0];
                for (k, &s) in in_shapes.iter().enumerate().skip(1) {
                    if s != first {
                        return Err(self.node_err(
                            id,
                            format!(
                                "shape mismatch: input '{}' is {} but '{}' is {}; add needs \
                                 identical shapes",
                                name(k),
                                s,
                                name(0),
                                first
                            ),
                        ));
                    }
                }
                (NodeKind::Add, first)
            }
            RawKind::Concat => {
                let first = in_shapes[0];
                for (k, &s) in in_shapes.iter().enumerate().skip(1) {
                    if (s.h, s.w) != (first.h, first.w) {
                        return Err(self.node_err(
                            id,
                            format!(
                                "shape mismatch: input '{}' is {} but '{}' is {}; concat joins \
                                 channels and needs the same height and width",
                                name(k),
                                s,
                                name(0),
                                first
                            ),
                        ));
                    }
                }
                let c = in_shapes.iter().map(|s| s.c).sum();
                (NodeKind::Concat, Shape::new(c, first.h, first.w))
            }
        };
        let size = shape
            .c
            .checked_mul(shape.h)
            .and_then(|v| v.checked_mul(shape.w));
        self.check_elements(id, "output", size)?;
        Ok((kind, shape))
    }

    /// Output height and width of a sliding window (conv or pool), or an error if the window
    /// does not fit the padded input.
    #[allow(clippy::too_many_arguments)]
    fn window_output(
        &self,
        id: &str,
        kind: &str,
        input: &str,
        s: Shape,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<(usize, usize)> {
        let (ph, pw) = (s.h + 2 * padding, s.w + 2 * padding);
        if kernel > ph || kernel > pw {
            let padded = if padding > 0 {
                format!(" (padded by {padding} to {ph}x{pw})")
            } else {
                String::new()
            };
            return Err(self.node_err(
                id,
                format!(
                    "shape mismatch: the {kernel}x{kernel} {kind} window is larger than its input \
                     '{input}', which is {s}{padded}"
                ),
            ));
        }
        Ok(((ph - kernel) / stride + 1, (pw - kernel) / stride + 1))
    }

    fn check_elements(&self, id: &str, what: &str, n: Option<usize>) -> Result<()> {
        match n {
            Some(n) if n <= MAX_ELEMENTS => Ok(()),
            _ => Err(self.node_err(
                id,
                format!("the {what} tensor is too large (more than {MAX_ELEMENTS} elements)"),
            )),
        }
    }
}

/// Typed access to one node's settings, with messages naming the node.
struct Fields<'a> {
    parser: &'a Parser<'a>,
    id: &'a str,
    kind: &'a str,
    t: &'a Table,
}

impl Fields<'_> {
    /// An integer setting `>= min` if present.
    fn optional(&self, key: &str, min: usize) -> Result<Option<usize>> {
        let Some(v) = self.t.get(key) else {
            return Ok(None);
        };
        let bound = if min == 0 {
            "a non-negative integer"
        } else {
            "a positive integer"
        };
        let Value::Integer(n) = v else {
            return Err(self
                .parser
                .node_err(self.id, format!("'{key}' must be {bound}, got {v}")));
        };
        if *n < min as i64 {
            return Err(self.parser.node_err(
                self.id,
                format!("'{key}' is {n}; it must be {bound} (at least {min})"),
            ));
        }
        if *n as u64 > MAX_DIM as u64 {
            return Err(self.parser.node_err(
                self.id,
                format!("'{key}' is {n}, too large (at most {MAX_DIM})"),
            ));
        }
        Ok(Some(*n as usize))
    }

    fn required(&self, key: &str, min: usize) -> Result<usize> {
        self.optional(key, min)?.ok_or_else(|| {
            self.parser
                .node_err(self.id, format!("{} node needs '{key}'", a_kind(self.kind)))
        })
    }

    fn activation(&self) -> Result<Option<Activation>> {
        match self.t.get("activation") {
            None => Ok(None),
            Some(Value::String(s)) => Activation::from_str(s).map(Some).map_err(|_| {
                self.parser.node_err(
                    self.id,
                    format!(
                        "unknown activation '{s}' (expected relu, leaky-relu, tanh, sigmoid or \
                         linear)"
                    ),
                )
            }),
            Some(v) => Err(self.parser.node_err(
                self.id,
                format!("'activation' must be a string such as \"relu\", got {v}"),
            )),
        }
    }

    /// `shape = [c, h, w]` or `size = n`, exactly one of them.
    fn input_shape(&self) -> Result<Shape> {
        let err = |m: String| self.parser.node_err(self.id, m);
        match (self.t.get("shape"), self.t.contains_key("size")) {
            (Some(_), true) => Err(err(
                "give either 'shape' or 'size' for an input node, not both".into(),
            )),
            (None, false) => Err(err(
                "an input node needs 'shape = [channels, height, width]' or 'size = n'".into(),
            )),
            (None, true) => Ok(Shape::flat(self.required("size", 1)?)),
            (Some(Value::Array(a)), false) if a.len() == 3 => {
                let mut dims = [0usize; 3];
                for (d, v) in dims.iter_mut().zip(a) {
                    *d = match v {
                        Value::Integer(n) if *n >= 1 && *n as u64 <= MAX_DIM as u64 => *n as usize,
                        _ => {
                            return Err(err(format!(
                                "'shape' entries must be positive integers (at most {MAX_DIM}), \
                                 got {v}"
                            )));
                        }
                    };
                }
                let shape = Shape::new(dims[0], dims[1], dims[2]);
                match dims[0]
                    .checked_mul(dims[1])
                    .and_then(|v| v.checked_mul(dims[2]))
                {
                    Some(n) if n <= MAX_ELEMENTS => Ok(shape),
                    _ => Err(err(format!(
                        "the input shape is too large (more than {MAX_ELEMENTS} elements)"
                    ))),
                }
            }
            (Some(v), false) => Err(err(format!(
                "'shape' must be [channels, height, width], got {v}"
            ))),
        }
    }
}

/// "a dense", "an add": the kind with its article.
fn a_kind(kind: &str) -> String {
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {kind}")
}

/// "1st", "2nd", "3rd", "4th", … for messages about tables that have no usable id.
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}
