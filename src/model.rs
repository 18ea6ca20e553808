//! The model description: a chain of dense layers, its activations, loss and initialisation,
//! and the parameters as plain host arrays in PyTorch `nn.Linear` layout.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    Linear,
    Relu,
    LeakyRelu,
    Tanh,
    Sigmoid,
}

impl Activation {
    /// The code the kernels switch on (see `shaders/common.wgsl`).
    pub fn code(self) -> u32 {
        match self {
            Activation::Linear => 0,
            Activation::Relu => 1,
            Activation::LeakyRelu => 2,
            Activation::Tanh => 3,
            Activation::Sigmoid => 4,
        }
    }
    pub const LEAKY_SLOPE: f64 = 0.01;

    pub fn f(self, a: f64) -> f64 {
        match self {
            Activation::Linear => a,
            Activation::Relu => a.max(0.0),
            Activation::LeakyRelu => {
                if a > 0.0 {
                    a
                } else {
                    Self::LEAKY_SLOPE * a
                }
            }
            Activation::Tanh => a.tanh(),
            Activation::Sigmoid => 1.0 / (1.0 + (-a).exp()),
        }
    }

    /// Derivative at the pre-activation `a` (ReLU's is taken as 0 at 0, like PyTorch).
    pub fn df(self, a: f64) -> f64 {
        match self {
            Activation::Linear => 1.0,
            Activation::Relu => {
                if a > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::LeakyRelu => {
                if a > 0.0 {
                    1.0
                } else {
                    Self::LEAKY_SLOPE
                }
            }
            Activation::Tanh => 1.0 - a.tanh().powi(2),
            Activation::Sigmoid => {
                let s = 1.0 / (1.0 + (-a).exp());
                s * (1.0 - s)
            }
        }
    }
}

impl FromStr for Activation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "linear" => Activation::Linear,
            "relu" => Activation::Relu,
            "leaky-relu" | "leaky_relu" => Activation::LeakyRelu,
            "tanh" => Activation::Tanh,
            "sigmoid" => Activation::Sigmoid,
            _ => {
                return Err(Error::Config(format!(
                    "unknown activation '{s}' (expected relu, leaky-relu, tanh, sigmoid or linear)"
                )));
            }
        })
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Activation::Linear => "linear",
            Activation::Relu => "relu",
            Activation::LeakyRelu => "leaky-relu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
        })
    }
}

/// `mse`: linear output, loss Σ(x_L − y)². `ce`: softmax cross-entropy on the last layer's logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    Mse,
    Ce,
}

impl FromStr for Loss {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mse" => Ok(Loss::Mse),
            "ce" => Ok(Loss::Ce),
            _ => Err(Error::Config(format!(
                "unknown loss '{s}' (expected mse or ce)"
            ))),
        }
    }
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Loss::Mse => "mse",
            Loss::Ce => "ce",
        })
    }
}

impl Loss {
    /// The output activation the loss implies (the softmax of `ce` lives in the loss).
    pub fn output_activation(self) -> &'static str {
        match self {
            Loss::Mse => "linear",
            Loss::Ce => "softmax",
        }
    }
}

/// Sum over batch and outputs (the paper's), or the mean over the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reduction {
    Sum,
    Mean,
}

impl FromStr for Reduction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sum" => Ok(Reduction::Sum),
            "mean" => Ok(Reduction::Mean),
            _ => Err(Error::Config(format!(
                "unknown reduction '{s}' (expected sum or mean)"
            ))),
        }
    }
}

impl fmt::Display for Reduction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reduction::Sum => "sum",
            Reduction::Mean => "mean",
        })
    }
}

impl Reduction {
    /// The factor applied to the loss gradient for a batch of `b`.
    pub fn scale(self, b: usize) -> f64 {
        match self {
            Reduction::Sum => 1.0,
            Reduction::Mean => 1.0 / b as f64,
        }
    }
}

/// Weight initialisation. `Normal(σ)` is the paper's N(0, σ) with σ = 0.05; `FanIn` draws
/// N(0, 1/n_in) (LeCun), which keeps activations O(1) in deep or wide nets; `Pytorch` is
/// PyTorch's default for `nn.Linear` and `nn.Conv2d`: weights and biases U(−1/√n_in, 1/√n_in),
/// a √3 smaller spread than `FanIn`. Other inits start biases
/// at zero.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    Normal(f64),
    FanIn,
    Pytorch,
}

impl Init {
    /// One weight of a layer with `fan_in` inputs.
    pub fn weight(self, fan_in: usize, rng: &mut Rng) -> f32 {
        let scale = 1.0 / (fan_in as f64).sqrt();
        (match self {
            Init::Normal(sd) => rng.normal() * sd,
            Init::FanIn => rng.normal() * scale,
            Init::Pytorch => (2.0 * rng.uniform() - 1.0) * scale,
        }) as f32
    }

    /// A layer's `n` biases, drawn after its weights.
    pub fn biases(self, fan_in: usize, n: usize, rng: &mut Rng) -> Vec<f32> {
        match self {
            Init::Pytorch => (0..n)
                .map(|_| ((2.0 * rng.uniform() - 1.0) / (fan_in as f64).sqrt()) as f32)
                .collect(),
            _ => vec![0.0; n],
        }
    }
}

impl FromStr for Init {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == "fan-in" {
            return Ok(Init::FanIn);
        }
        if s == "pytorch" {
            return Ok(Init::Pytorch);
        }
        if let Some(sd) = s.strip_prefix("normal:").or(s.strip_prefix("normal=")) {
            let sd: f64 = sd
                .parse()
                .map_err(|_| Error::Config(format!("bad init '{s}': '{sd}' is not a number")))?;
            if !(sd.is_finite() && sd > 0.0) {
                return Err(Error::Config(format!(
                    "bad init '{s}': the standard deviation must be positive"
                )));
            }
            return Ok(Init::Normal(sd));
        }
        if s == "normal" {
            return Ok(Init::Normal(0.05));
        }
        Err(Error::Config(format!(
            "unknown init '{s}' (expected normal, normal:SD, fan-in or pytorch)"
        )))
    }
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Init::Normal(sd) => write!(f, "normal:{sd}"),
            Init::FanIn => f.write_str("fan-in"),
            Init::Pytorch => f.write_str("pytorch"),
        }
    }
}

/// A multilayer perceptron: widths n_0 … n_L, one hidden activation, and the loss.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub widths: Vec<usize>,
    pub hidden: Activation,
    pub loss: Loss,
}

impl ModelSpec {
    pub fn new(widths: Vec<usize>, hidden: Activation, loss: Loss) -> Result<Self> {
        if widths.len() < 2 {
            return Err(Error::Config(format!(
                "--layers needs at least an input and an output width, got {widths:?}"
            )));
        }
        if let Some(i) = widths.iter().position(|&w| w == 0) {
            return Err(Error::Config(format!(
                "--layers: width {i} is zero; every layer needs at least one unit"
            )));
        }
        if widths.iter().any(|&w| w > 1 << 20) {
            return Err(Error::Config(
                "--layers: widths above 1048576 are not supported".into(),
            ));
        }
        Ok(Self {
            widths,
            hidden,
            loss,
        })
    }

    /// Parses "784,300,10".
    pub fn parse_widths(s: &str) -> Result<Vec<usize>> {
        s.split(',')
            .map(|p| {
                p.trim().parse::<usize>().map_err(|_| {
                    Error::Config(format!(
                        "--layers '{s}': '{}' is not a positive integer",
                        p.trim()
                    ))
                })
            })
            .collect()
    }

    /// Number of weight layers L.
    pub fn depth(&self) -> usize {
        self.widths.len() - 1
    }

    /// Activation of weight layer `l`: the hidden one, or linear for the last (softmax lives in `ce`).
    pub fn activation(&self, l: usize) -> Activation {
        if l + 1 == self.depth() {
            Activation::Linear
        } else {
            self.hidden
        }
    }

    pub fn input_width(&self) -> usize {
        self.widths[0]
    }

    pub fn output_width(&self) -> usize {
        *self.widths.last().expect("validated non-empty")
    }

    pub fn param_count(&self) -> usize {
        self.widths.windows(2).map(|w| w[1] * w[0] + w[1]).sum()
    }

    pub fn describe(&self) -> String {
        let w: Vec<String> = self.widths.iter().map(|w| w.to_string()).collect();
        format!(
            "MLP {} ({} hidden, {} output, {} loss)",
            w.join("-"),
            self.hidden,
            self.loss.output_activation(),
            self.loss
        )
    }
}

/// Parameters of every layer on the host, f32 as on the GPU. `weights[l]` is [n_{l+1}, n_l].
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub weights: Vec<Vec<f32>>,
    pub biases: Vec<Vec<f32>>,
}

impl Params {
    /// Seeded initialisation from `init`.
    pub fn init(spec: &ModelSpec, init: Init, seed: u64) -> Self {
        let mut rng = Rng::stream(seed, 1);
        Self::random(spec, init, &mut rng)
    }

    /// Weights drawn from `init` using `rng` (also used for fixed random feedback weights).
    pub fn random(spec: &ModelSpec, init: Init, rng: &mut Rng) -> Self {
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        for w in spec.widths.windows(2) {
            let (n_in, n_out) = (w[0], w[1]);
            weights.push((0..n_in * n_out).map(|_| init.weight(n_in, rng)).collect());
            biases.push(init.biases(n_in, n_out, rng));
        }
        Self { weights, biases }
    }

    pub fn zeros_like(spec: &ModelSpec) -> Self {
        Self {
            weights: spec
                .widths
                .windows(2)
                .map(|w| vec![0.0; w[0] * w[1]])
                .collect(),
            biases: spec.widths[1..].iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    /// All values, layer by layer (W_0, b_0, W_1, b_1, …): the GPU's packed layout.
    pub fn packed(&self) -> Vec<f32> {
        let mut out = Vec::new();
        for (w, b) in self.weights.iter().zip(&self.biases) {
            out.extend_from_slice(w);
            out.extend_from_slice(b);
        }
        out
    }

    /// Inverse of [`Params::packed`].
    pub fn unpack(spec: &ModelSpec, flat: &[f32]) -> Self {
        let mut p = Self::zeros_like(spec);
        let mut at = 0;
        for l in 0..spec.depth() {
            let nw = p.weights[l].len();
            p.weights[l].copy_from_slice(&flat[at..at + nw]);
            at += nw;
            let nb = p.biases[l].len();
            p.biases[l].copy_from_slice(&flat[at..at + nb]);
            at += nb;
        }
        p
    }

    pub fn all_finite(&self) -> bool {
        self.weights
            .iter()
            .chain(&self.biases)
            .all(|v| v.iter().all(|x| x.is_finite()))
    }
}
