//! Training settings: defaults (the paper's), named presets for its conditions, a TOML file and
//! command-line flags, resolved in that order (later wins), then validated.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::engine::net::Model;
use crate::engine::{Algorithm, EngineOptions, Feedback, RelaxKernel, RelaxStart};
use crate::graph::Graph;
use crate::model::{Activation, Init, Loss, ModelSpec, Reduction};
use crate::{Error, Result};

/// The order in which layers relax within one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Every layer from the previous step's values at once (Jacobi; the paper's description).
    Parallel,
    /// Top-down, in place (Gauss–Seidel; the authors' code).
    Sweep,
}

/// Where a derivative f'(a) is evaluated (the second AR paper's "no frozen forward pass").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FprimeAt {
    /// At the stored forward pre-activation.
    Frozen,
    /// At the current relaxing state, a_l = r_l W_lᵀ + b_l.
    Current,
}

/// The pre-synaptic activity of the weight update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateInput {
    /// The stored forward activity x̄_l.
    Frozen,
    /// The relaxed state r_l.
    Relaxed,
}

/// How a run dispatches its relaxation (see [`RelaxKernel`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelChoice {
    /// Measured when the run starts (or taken from the run directory when resuming).
    Auto,
    #[default]
    Tiled,
    Resident,
    Cooperative,
}

impl From<RelaxKernel> for KernelChoice {
    fn from(k: RelaxKernel) -> Self {
        match k {
            RelaxKernel::Tiled => Self::Tiled,
            RelaxKernel::Resident => Self::Resident,
            RelaxKernel::Cooperative => Self::Cooperative,
        }
    }
}

/// Every setting of a training run, fully resolved. Written to `config.toml` in the run
/// directory; that file can be passed back with `--config`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub dataset: String,
    pub data: Option<PathBuf>,
    /// A model description file (graph); when set it replaces `layers`, `activation` and `loss`.
    pub model: Option<PathBuf>,
    pub layers: String,
    pub activation: Activation,
    pub loss: Loss,
    pub reduction: Reduction,
    pub init: String,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub relax_steps: usize,
    pub relax_rate: f64,
    /// Stop a batch's relaxation early once the largest relative change of a step is below this.
    pub relax_tol: Option<f64>,
    pub seed: u64,
    pub preset: Option<String>,
    pub algorithm: Algorithm,
    pub feedback: Feedback,
    pub feedback_init: String,
    pub feedback_decay: f64,
    pub relax_derivative: bool,
    pub update_derivative: bool,
    pub relax_start: RelaxStart,
    pub schedule: Schedule,
    /// How the parallel relaxation is dispatched (a speed choice; the result is the same up to
    /// rounding). `auto` is measured on the device when the run starts and recorded here, so
    /// two runs of the same seed may differ in the last bits; the default, `tiled`, never does.
    #[serde(default)]
    pub relax_kernel: KernelChoice,
    /// The cooperative kernel's workgroups per dispatch at most (unset: the adapter's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooperative_groups: Option<usize>,
    /// The resident kernel's shape, e.g. "r4-t1024" (see `gpu::resident::ResidentShape`), or
    /// "tune": the fastest of a few shapes timed at the start of a new run (see
    /// `engine::tune`; a resumed run keeps the shape its directory records). Unset: chosen
    /// from the batch size and the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident_shape: Option<String>,
    /// K chunks of the weight-gradient product (unset: 1, no split; see
    /// `EngineOptions::grad_split`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_split: Option<usize>,
    /// Where f' in the relaxation is evaluated: at the frozen forward pass or the current state.
    pub relax_fprime: FprimeAt,
    /// Where f' in the weight update is evaluated.
    pub update_fprime: FprimeAt,
    /// The weight update's pre-synaptic activity: the stored forward x̄ or the relaxed state.
    pub update_input: UpdateInput,
    /// Training samples held out (the last ones) as a validation split; 0 for none.
    pub validation: usize,
    /// Use only the first N training samples (quick runs and CI).
    pub train_limit: Option<usize>,
    /// Use only the first N test samples.
    pub test_limit: Option<usize>,
}

impl Default for TrainConfig {
    /// The paper's MLP settings with exact AR.
    fn default() -> Self {
        Self {
            dataset: "mnist".into(),
            data: None,
            model: None,
            layers: "784,300,300,100,10".into(),
            activation: Activation::Relu,
            loss: Loss::Mse,
            reduction: Reduction::Sum,
            init: "normal".into(),
            epochs: 10,
            batch_size: 64,
            lr: 0.0005,
            relax_steps: 100,
            relax_rate: 0.1,
            relax_tol: None,
            seed: 1,
            preset: None,
            algorithm: Algorithm::Ar,
            feedback: Feedback::Transpose,
            feedback_init: "normal".into(),
            feedback_decay: 0.0,
            relax_derivative: true,
            update_derivative: true,
            relax_start: RelaxStart::Forward,
            schedule: Schedule::Parallel,
            relax_kernel: KernelChoice::Tiled,
            cooperative_groups: None,
            resident_shape: None,
            grad_split: None,
            relax_fprime: FprimeAt::Frozen,
            update_fprime: FprimeAt::Frozen,
            update_input: UpdateInput::Frozen,
            validation: 0,
            train_limit: None,
            test_limit: None,
        }
    }
}

/// The presets: the paper's seven conditions.
pub const PRESETS: &[(&str, &str)] = &[
    ("ar", "exact activation relaxation"),
    ("bp", "exact backprop (the baseline)"),
    (
        "learned-backward",
        "learned backward weights (Kolen-Pollack update)",
    ),
    ("feedback-alignment", "fixed random feedback weights"),
    ("no-derivative", "no nonlinear derivative in the relaxation"),
    ("fa-no-derivative", "random feedback and no derivative"),
    (
        "full-construct",
        "learned backward weights and no derivative",
    ),
];

impl TrainConfig {
    /// Sets the variant fields of a named preset (other fields are left alone).
    pub fn apply_preset(&mut self, name: &str) -> Result<()> {
        let (alg, fb, deriv) = match name {
            "ar" => (Algorithm::Ar, Feedback::Transpose, true),
            "bp" => (Algorithm::Bp, Feedback::Transpose, true),
            "learned-backward" => (Algorithm::Ar, Feedback::Learned, true),
            "feedback-alignment" => (Algorithm::Ar, Feedback::Random, true),
            "no-derivative" => (Algorithm::Ar, Feedback::Transpose, false),
            "fa-no-derivative" => (Algorithm::Ar, Feedback::Random, false),
            "full-construct" => (Algorithm::Ar, Feedback::Learned, false),
            _ => {
                let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
                return Err(Error::Config(format!(
                    "unknown preset '{name}' (expected one of: {})",
                    names.join(", ")
                )));
            }
        };
        self.algorithm = alg;
        self.feedback = fb;
        self.relax_derivative = deriv;
        self.update_derivative = true;
        self.preset = Some(name.to_string());
        Ok(())
    }

    /// The network to build: the model file's graph, or the MLP of `layers`.
    pub fn model(&self) -> Result<Model> {
        match &self.model {
            Some(path) => Ok(Model::Graph(Graph::load(path)?)),
            None => Ok(Model::Mlp(self.spec()?)),
        }
    }

    pub fn spec(&self) -> Result<ModelSpec> {
        ModelSpec::new(
            ModelSpec::parse_widths(&self.layers)?,
            self.activation,
            self.loss,
        )
    }

    pub fn init(&self) -> Result<Init> {
        self.init.parse()
    }

    pub fn feedback_init(&self) -> Result<Init> {
        self.feedback_init.parse()
    }

    /// What the run needs from the device with `replicas` seeds side by side: the model's
    /// buffers, and the widest workgroups the adapter offers where the resident kernel may run.
    pub fn needs(&self, replicas: usize) -> Result<crate::gpu::Needs> {
        let mut needs = self
            .model()?
            .needs_replicated(self.batch_size, replicas.max(1));
        needs.wide_workgroups = matches!(
            self.relax_kernel,
            KernelChoice::Resident | KernelChoice::Auto
        );
        Ok(needs)
    }

    /// Rejects settings that cannot work, naming the setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, why: String| Err(Error::Config(format!("{k}: {why}")));
        self.model()?;
        self.init()?;
        self.feedback_init()?;
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad("lr", format!("{} must be finite and non-negative", self.lr));
        }
        if self.relax_steps == 0 {
            return bad("relax_steps", "must be at least 1".into());
        }
        if !(self.relax_rate.is_finite() && self.relax_rate > 0.0 && self.relax_rate <= 2.0) {
            return bad(
                "relax_rate",
                format!("{} is outside (0, 2]", self.relax_rate),
            );
        }
        if let Some(t) = self.relax_tol
            && !(t.is_finite() && t > 0.0)
        {
            return bad("relax_tol", format!("{t} must be positive"));
        }
        if let Some(r) = &self.resident_shape
            && let Err(e) = r.parse::<crate::engine::tune::ResidentSetting>()
        {
            return bad("resident_shape", e);
        }
        if let Some(g) = self.grad_split
            && !(1..=crate::engine::MAX_GRAD_SPLIT).contains(&g)
        {
            return bad(
                "grad_split",
                format!("{g} chunks: 1 to {}", crate::engine::MAX_GRAD_SPLIT),
            );
        }
        if !(self.feedback_decay.is_finite() && self.feedback_decay >= 0.0) {
            return bad(
                "feedback_decay",
                format!("{} must be finite and non-negative", self.feedback_decay),
            );
        }
        if self.dataset.parse::<crate::data::DatasetKind>().is_err() {
            return bad(
                "dataset",
                format!(
                    "unknown data set '{}' (expected mnist or fashion-mnist)",
                    self.dataset
                ),
            );
        }
        if self.train_limit == Some(0) || self.test_limit == Some(0) {
            return bad("train_limit/test_limit", "must be at least 1".into());
        }
        Ok(())
    }

    pub fn engine_options(&self) -> EngineOptions {
        let mut o = EngineOptions::new(self.batch_size);
        o.reduction = self.reduction;
        o.relax_rate = self.relax_rate as f32;
        o.relax_derivative = self.relax_derivative;
        o.update_derivative = self.update_derivative;
        o.start = self.relax_start;
        o.feedback = if self.algorithm == Algorithm::Bp {
            Feedback::Transpose
        } else {
            self.feedback
        };
        o.lr = self.lr as f32;
        o.feedback_decay = self.feedback_decay as f32;
        o.relax_tol = self.relax_tol.map(|t| t as f32);
        o.sweep = self.schedule == Schedule::Sweep;
        o.relax_kernel = match self.relax_kernel {
            KernelChoice::Resident => RelaxKernel::Resident,
            KernelChoice::Cooperative => RelaxKernel::Cooperative,
            KernelChoice::Tiled | KernelChoice::Auto => RelaxKernel::Tiled,
        };
        o.cooperative_groups = self.cooperative_groups;
        // "tune" is settled before an engine is built (train::run_seeds); unsettled, auto.
        o.resident = self
            .resident_shape
            .as_deref()
            .and_then(|s| s.parse::<crate::engine::tune::ResidentSetting>().ok())
            .unwrap_or_default()
            .shape();
        o.relax_fprime_current = self.relax_fprime == FprimeAt::Current;
        o.update_fprime_current = self.update_fprime == FprimeAt::Current;
        o.update_input_relaxed = self.update_input == UpdateInput::Relaxed;
        o.grad_split = self.grad_split.unwrap_or(1);
        o
    }

    /// Resolves defaults ← preset ← file ← flags. The preset comes from the flags or the file.
    pub fn resolve(file: Option<&Overrides>, flags: &Overrides) -> Result<Self> {
        let mut cfg = TrainConfig::default();
        let preset = flags
            .preset
            .clone()
            .or_else(|| file.and_then(|f| f.preset.clone()));
        if let Some(p) = preset {
            cfg.apply_preset(&p)?;
        }
        if let Some(f) = file {
            cfg.apply(f)?;
        }
        cfg.apply(flags)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn apply(&mut self, o: &Overrides) -> Result<()> {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &o.$f { self.$f = v.clone(); } )* };
        }
        macro_rules! parse {
            ($($f:ident),*) => { $( if let Some(v) = &o.$f {
                self.$f = parse_named(stringify!($f), v)?;
            } )* };
        }
        set!(
            dataset,
            layers,
            init,
            epochs,
            batch_size,
            lr,
            relax_steps,
            relax_rate,
            seed
        );
        set!(feedback_init, feedback_decay, validation);
        parse!(
            activation,
            loss,
            reduction,
            algorithm,
            feedback,
            relax_start,
            schedule,
            relax_kernel
        );
        parse!(relax_fprime, update_fprime, update_input);
        if let Some(d) = &o.data {
            self.data = Some(d.clone());
        }
        if let Some(m) = &o.model {
            self.model = Some(m.clone());
        }
        if let Some(t) = o.relax_tol {
            self.relax_tol = Some(t);
        }
        if let Some(g) = o.cooperative_groups {
            self.cooperative_groups = Some(g);
        }
        if let Some(r) = &o.resident_shape {
            self.resident_shape = Some(r.clone());
        }
        if let Some(g) = o.grad_split {
            self.grad_split = Some(g);
        }
        if let Some(t) = o.train_limit {
            self.train_limit = Some(t);
        }
        if let Some(t) = o.test_limit {
            self.test_limit = Some(t);
        }
        if let Some(t) = &o.relax_derivative {
            self.relax_derivative = t.0;
        }
        if let Some(t) = &o.update_derivative {
            self.update_derivative = t.0;
        }
        Ok(())
    }

    /// Reads a TOML file of [`Overrides`]; unknown keys and bad values name the key.
    pub fn read_file(path: &Path) -> Result<Overrides> {
        let text = crate::util::read_settings(path)?;
        parse_overrides(path, &text)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serialises")
    }
}

/// Parses TOML text into overrides; the error names the file, line and key.
pub fn parse_overrides(path: &Path, text: &str) -> Result<Overrides> {
    toml::from_str::<Overrides>(text).map_err(|e| {
        let msg = e.message().to_string();
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        Error::file(
            path,
            match line {
                Some(l) => format!("line {l}: {msg}"),
                None => msg,
            },
        )
    })
}

fn parse_named<T: serde::de::DeserializeOwned>(key: &str, v: &str) -> Result<T> {
    T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(v))
        .map_err(|_| Error::Config(format!("{key}: '{v}' is not a valid value")))
}

/// on/off (also true/false), for flags and TOML alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Toggle(pub bool);

impl std::str::FromStr for Toggle {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "on" | "true" | "yes" => Ok(Toggle(true)),
            "off" | "false" | "no" => Ok(Toggle(false)),
            _ => Err(format!("'{s}' is not on or off")),
        }
    }
}

impl<'de> Deserialize<'de> for Toggle {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(b) => Ok(Toggle(b)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Settings as given by a TOML file or the command line: everything optional. Field names are
/// the keys of `config.toml`; flags are the same names with dashes.
#[derive(Args, Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// A named condition: ar, bp, learned-backward, feedback-alignment, no-derivative,
    /// fa-no-derivative, full-construct.
    #[arg(long)]
    pub preset: Option<String>,
    /// mnist or fashion-mnist [default: mnist].
    #[arg(long)]
    pub dataset: Option<String>,
    /// Directory with the four IDX files, plain or .gz [default: data/mnist, or
    /// /usr/share/datasets/fashion-mnist].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A model description file (TOML graph; see examples/); replaces --layers, --activation
    /// and --loss.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Layer widths from input to output [default: 784,300,300,100,10].
    #[arg(long)]
    pub layers: Option<String>,
    /// Hidden activation: relu, leaky-relu, tanh, sigmoid, linear [default: relu].
    #[arg(long)]
    pub activation: Option<String>,
    /// mse or ce [default: mse].
    #[arg(long)]
    pub loss: Option<String>,
    /// sum or mean [default: sum].
    #[arg(long)]
    pub reduction: Option<String>,
    /// normal, normal:SD, fan-in or pytorch [default: normal = N(0, 0.05)].
    #[arg(long)]
    pub init: Option<String>,
    /// [default: 10]
    #[arg(long)]
    pub epochs: Option<usize>,
    /// [default: 64]
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// SGD learning rate [default: 0.0005].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Relaxation steps per batch (the cap when --relax-tol is set) [default: 100].
    #[arg(long)]
    pub relax_steps: Option<usize>,
    /// Relaxation rate η in (0, 2] [default: 0.1].
    #[arg(long)]
    pub relax_rate: Option<f64>,
    /// Stop relaxing a batch once the largest relative change of a layer over one step is below this.
    #[arg(long)]
    pub relax_tol: Option<f64>,
    /// [default: 1]
    #[arg(long)]
    pub seed: Option<u64>,
    /// ar or bp [default: ar].
    #[arg(long)]
    pub algorithm: Option<String>,
    /// transpose, random or learned [default: transpose].
    #[arg(long)]
    pub feedback: Option<String>,
    /// Initialisation of random/learned feedback weights [default: normal].
    #[arg(long)]
    pub feedback_init: Option<String>,
    /// Weight decay on W and ψ with learned feedback, which aligns them [default: 0].
    #[arg(long)]
    pub feedback_decay: Option<f64>,
    /// Use f' in the relaxation: on or off [default: on].
    #[arg(long)]
    pub relax_derivative: Option<Toggle>,
    /// Use f' in the weight update: on or off [default: on].
    #[arg(long)]
    pub update_derivative: Option<Toggle>,
    /// Hidden state start: forward or zero [default: forward].
    #[arg(long)]
    pub relax_start: Option<String>,
    /// parallel (Jacobi) or sweep (top-down in place) [default: parallel].
    #[arg(long)]
    pub schedule: Option<String>,
    /// tiled (one dispatch per step), resident (several steps per dispatch, a workgroup per few
    /// samples; MLPs with hidden widths up to 1024), cooperative (the tiled steps, many per
    /// dispatch, with a grid barrier between them; MLPs) or auto (the fastest, measured on the
    /// device when the run starts and recorded in config.toml) [default: tiled].
    #[arg(long)]
    pub relax_kernel: Option<String>,
    /// The cooperative kernel's workgroups per dispatch at most [default: 256 on a GPU, 1 on a
    /// CPU adapter]. It needs them all running at once: lower it if the run reports that a grid
    /// barrier gave up.
    #[arg(long)]
    pub cooperative_groups: Option<usize>,
    /// The resident kernel's shape: rR-tT-uU-pP-wN-b-c-z, each part optional (rows and threads
    /// per workgroup, loads in flight per thread, workgroups per row block, columns per work
    /// item, extra items packed by the host: b or b0, weights kept in registers: c or c0, K
    /// walked down on odd steps: z or z0), e.g. r2-p4; or tune (a few shapes timed at the
    /// start, the fastest kept) [default: chosen from the batch size and the device].
    #[arg(long)]
    pub resident_shape: Option<String>,
    /// K chunks of the weight-gradient product (K is the batch), each output tile computed by
    /// that many workgroups and their partial sums added by a second dispatch; MLPs only
    /// [default: 1, no split].
    #[arg(long)]
    pub grad_split: Option<usize>,
    /// f' in the relaxation at the frozen forward pass or the current state: frozen or current
    /// [default: frozen].
    #[arg(long)]
    pub relax_fprime: Option<String>,
    /// f' in the weight update: frozen or current [default: frozen].
    #[arg(long)]
    pub update_fprime: Option<String>,
    /// Pre-synaptic activity of the update: frozen (x̄) or relaxed (r) [default: frozen].
    #[arg(long)]
    pub update_input: Option<String>,
    /// Hold out the last N training samples as a validation split [default: 0].
    #[arg(long)]
    pub validation: Option<usize>,
    /// Train on the first N training samples only.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Evaluate on the first N test samples only.
    #[arg(long)]
    pub test_limit: Option<usize>,
}
