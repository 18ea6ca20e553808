//! One front for both engines: the MLP engine (`--layers`: one fused dispatch per relaxation
//! step, adaptive relaxation, the sweep schedule) and the graph engine (`--model FILE`). The
//! training loop, gradcheck and checkpoints see parameters as named groups either way.

use crate::engine::Ops as _;
use std::path::Path;
use std::sync::Arc;

use super::feed::BatchTarget;
use super::graph::GraphEngine;
use super::{Algorithm, Engine, EngineOptions, Feedback};
use crate::Result;
use crate::checkpoint::TensorFile;
use crate::gpu::tile::TileShape;
use crate::gpu::{GpuContext, Needs};
use crate::graph::{Graph, GraphParams, NodeKind};
use crate::model::{Init, Loss, ModelSpec, Params};
use crate::rng::Rng;

/// The parameters of one layer or node: `{name}.weight` and `{name}.bias` in checkpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamGroup {
    pub name: String,
    pub weight_shape: Vec<usize>,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// What to build: an MLP from `--layers`, or a graph from a model file.
#[derive(Clone, Debug)]
pub enum Model {
    Mlp(ModelSpec),
    Graph(Graph),
}

impl Model {
    pub fn describe(&self) -> String {
        match self {
            Model::Mlp(s) => s.describe(),
            Model::Graph(g) => g.describe(),
        }
    }
    pub fn input_width(&self) -> usize {
        match self {
            Model::Mlp(s) => s.input_width(),
            Model::Graph(g) => g.input_size(),
        }
    }
    pub fn output_width(&self) -> usize {
        match self {
            Model::Mlp(s) => s.output_width(),
            Model::Graph(g) => g.output_size(),
        }
    }
    pub fn loss(&self) -> Loss {
        match self {
            Model::Mlp(s) => s.loss,
            Model::Graph(g) => g.loss,
        }
    }
    /// Floating-point operations of one batch, counting 2 per multiply-add of the products:
    /// (forward, one relaxation step, weight gradients). The relaxation counts the VJPs into
    /// hidden nodes only (the input does not relax); pooling, joins and the leaky update are
    /// memory work and not counted.
    pub fn flops(&self, batch: usize) -> (f64, f64, f64) {
        let b = batch as f64;
        match self {
            Model::Mlp(s) => {
                let w = &s.widths;
                let layer = |l: usize| 2.0 * b * w[l] as f64 * w[l + 1] as f64;
                let fwd: f64 = (0..s.depth()).map(layer).sum();
                let relax: f64 = (1..s.depth()).map(layer).sum();
                (fwd, relax, fwd)
            }
            Model::Graph(g) => {
                let (mut fwd, mut relax) = (0.0, 0.0);
                for n in &g.nodes {
                    let per_sample = match n.kind {
                        NodeKind::Dense { units, .. } => {
                            (units * g.nodes[n.inputs[0]].shape.size()) as f64
                        }
                        NodeKind::Conv2d { kernel, .. } => {
                            let c_in = g.nodes[n.inputs[0]].shape.c;
                            (n.shape.size() * c_in * kernel * kernel) as f64
                        }
                        _ => 0.0,
                    };
                    fwd += 2.0 * b * per_sample;
                    if n.inputs.first().is_some_and(|&p| p != 0) {
                        relax += 2.0 * b * per_sample;
                    }
                }
                (fwd, relax, fwd)
            }
        }
    }

    pub fn needs(&self, batch: usize) -> Needs {
        self.needs_replicated(batch, 1)
    }

    /// What `replicas` copies side by side need.
    pub fn needs_replicated(&self, batch: usize, replicas: usize) -> Needs {
        match self {
            Model::Mlp(s) => super::needs(s, batch, replicas),
            Model::Graph(g) => super::graph::needs(g, batch, replicas),
        }
    }
    /// Parameter groups of freshly drawn weights (biases zero), seeded like `Params::init`.
    pub fn random_groups(&self, init: Init, rng: &mut Rng) -> Vec<ParamGroup> {
        match self {
            Model::Mlp(s) => mlp_groups(s, &Params::random(s, init, rng)),
            Model::Graph(g) => graph_groups(g, &GraphParams::random(g, init, rng)),
        }
    }
}

fn mlp_groups(s: &ModelSpec, p: &Params) -> Vec<ParamGroup> {
    (0..s.depth())
        .map(|l| ParamGroup {
            name: format!("layers.{l}"),
            weight_shape: vec![s.widths[l + 1], s.widths[l]],
            weight: p.weights[l].clone(),
            bias: p.biases[l].clone(),
        })
        .collect()
}

fn graph_groups(g: &Graph, p: &GraphParams) -> Vec<ParamGroup> {
    (0..g.nodes.len())
        .filter_map(|i| {
            g.param_shape(i).map(|(shape, _)| ParamGroup {
                name: g.nodes[i].id.clone(),
                weight_shape: shape,
                weight: p.weights[i].clone(),
                bias: p.biases[i].clone(),
            })
        })
        .collect()
}

fn mlp_params(groups: &[ParamGroup]) -> Params {
    Params {
        weights: groups.iter().map(|g| g.weight.clone()).collect(),
        biases: groups.iter().map(|g| g.bias.clone()).collect(),
    }
}

fn graph_params(g: &Graph, groups: &[ParamGroup]) -> GraphParams {
    let mut p = GraphParams::zeros_like(g);
    let mut it = groups.iter();
    for i in 0..g.nodes.len() {
        if g.param_shape(i).is_some()
            && let Some(grp) = it.next()
        {
            p.weights[i] = grp.weight.clone();
            p.biases[i] = grp.bias.clone();
        }
    }
    p
}

/// Adds groups to a checkpoint under `{prefix}{name}.weight/.bias`.
pub fn insert_groups(file: &mut TensorFile, prefix: &str, groups: &[ParamGroup]) {
    for g in groups {
        file.insert(
            format!("{prefix}{}.weight", g.name),
            g.weight_shape.clone(),
            g.weight.clone(),
        );
        file.insert(
            format!("{prefix}{}.bias", g.name),
            vec![g.bias.len()],
            g.bias.clone(),
        );
    }
}

/// Reads groups shaped like `like` from a checkpoint, checking every name and shape.
pub fn read_groups(
    file: &TensorFile,
    path: &Path,
    prefix: &str,
    like: &[ParamGroup],
) -> Result<Vec<ParamGroup>> {
    like.iter()
        .map(|g| {
            let mut out = g.clone();
            for (suffix, shape, dst) in [
                ("weight", g.weight_shape.clone(), &mut out.weight),
                ("bias", vec![g.bias.len()], &mut out.bias),
            ] {
                let name = format!("{prefix}{}.{suffix}", g.name);
                let t = file.tensor(path, &name, &shape, "this model")?;
                dst.clone_from(&t.data);
            }
            Ok(out)
        })
        .collect()
}

// One Net lives per run, so the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Net {
    Mlp(Engine),
    Graph(GraphEngine),
}

macro_rules! both {
    ($self:expr, $e:ident => $body:expr) => {
        match $self {
            Net::Mlp($e) => $body,
            Net::Graph($e) => $body,
        }
    };
}

impl Net {
    pub fn new(ctx: Arc<GpuContext>, model: &Model, opts: EngineOptions) -> Result<Self> {
        Ok(match model {
            Model::Mlp(s) => Net::Mlp(Engine::new(ctx, s, opts)?),
            Model::Graph(g) => Net::Graph(GraphEngine::new(ctx, g, opts)?),
        })
    }

    pub fn model(&self) -> Model {
        match self {
            Net::Mlp(e) => Model::Mlp(e.spec.clone()),
            Net::Graph(e) => Model::Graph(e.graph.clone()),
        }
    }

    pub fn opts(&self) -> &EngineOptions {
        both!(self, e => &e.opts)
    }

    pub fn has_feedback(&self) -> bool {
        self.opts().feedback != Feedback::Transpose
    }

    fn to_groups(&self, p: Option<ParamsOf>) -> Option<Vec<ParamGroup>> {
        match (self, p?) {
            (Net::Mlp(e), ParamsOf::Mlp(p)) => Some(mlp_groups(&e.spec, &p)),
            (Net::Graph(e), ParamsOf::Graph(p)) => Some(graph_groups(&e.graph, &p)),
            _ => None,
        }
    }

    /// Copies of the model trained side by side (see [`EngineOptions::replicas`]).
    pub fn replicas(&self) -> usize {
        self.opts().replicas
    }

    pub fn params(&self) -> Result<Vec<ParamGroup>> {
        self.replica_params(0)
    }

    pub fn replica_params(&self, replica: usize) -> Result<Vec<ParamGroup>> {
        let p = match self {
            Net::Mlp(e) => ParamsOf::Mlp(e.replica_params(replica)?),
            Net::Graph(e) => ParamsOf::Graph(e.replica_params(replica)?),
        };
        Ok(self.to_groups(Some(p)).expect("same kind"))
    }

    pub fn feedback(&self) -> Result<Option<Vec<ParamGroup>>> {
        self.replica_feedback(0)
    }

    pub fn replica_feedback(&self, replica: usize) -> Result<Option<Vec<ParamGroup>>> {
        let p = match self {
            Net::Mlp(e) => e.replica_feedback(replica)?.map(ParamsOf::Mlp),
            Net::Graph(e) => e.replica_feedback(replica)?.map(ParamsOf::Graph),
        };
        Ok(self.to_groups(p))
    }

    pub fn grads(&self) -> Result<Vec<ParamGroup>> {
        self.replica_grads(0)
    }

    /// The last computed gradients of one replica.
    pub fn replica_grads(&self, replica: usize) -> Result<Vec<ParamGroup>> {
        let p = match self {
            Net::Mlp(e) => ParamsOf::Mlp(e.replica_grads(replica)?),
            Net::Graph(e) => ParamsOf::Graph(e.replica_grads(replica)?),
        };
        Ok(self.to_groups(Some(p)).expect("same kind"))
    }

    pub fn set_params(&self, groups: &[ParamGroup]) -> Result<()> {
        self.set_replica_params(0, groups)
    }

    pub fn set_replica_params(&self, replica: usize, groups: &[ParamGroup]) -> Result<()> {
        match self {
            Net::Mlp(e) => e.set_replica_params(replica, &mlp_params(groups)),
            Net::Graph(e) => e.set_replica_params(replica, &graph_params(&e.graph, groups)),
        }
    }

    pub fn set_feedback(&self, groups: &[ParamGroup]) -> Result<()> {
        self.set_replica_feedback(0, groups)
    }

    pub fn set_replica_feedback(&self, replica: usize, groups: &[ParamGroup]) -> Result<()> {
        match self {
            Net::Mlp(e) => e.set_replica_feedback(replica, &mlp_params(groups)),
            Net::Graph(e) => e.set_replica_feedback(replica, &graph_params(&e.graph, groups)),
        }
    }

    /// Seeded initial weights (stream 1) and, for random or learned feedback, ψ (stream 4).
    pub fn initialise(&self, init: Init, feedback_init: Init, seed: u64) -> Result<()> {
        self.initialise_replica(0, init, feedback_init, seed)
    }

    /// [`Self::initialise`] for one replica: the same draws as a single net with that seed.
    pub fn initialise_replica(
        &self,
        replica: usize,
        init: Init,
        feedback_init: Init,
        seed: u64,
    ) -> Result<()> {
        let model = self.model();
        let w = model.random_groups(init, &mut Rng::stream(seed, 1));
        self.set_replica_params(replica, &w)?;
        if self.has_feedback() {
            let psi = model.random_groups(feedback_init, &mut Rng::stream(seed, 4));
            self.set_replica_feedback(replica, &psi)?;
        }
        Ok(())
    }

    /// Parameters (and ψ under `feedback.`) into a checkpoint.
    pub fn save_state(&self, file: &mut TensorFile) -> Result<()> {
        self.save_replica_state(0, file)
    }

    pub fn save_replica_state(&self, replica: usize, file: &mut TensorFile) -> Result<()> {
        insert_groups(file, "", &self.replica_params(replica)?);
        if let Some(f) = self.replica_feedback(replica)? {
            insert_groups(file, "feedback.", &f);
        }
        Ok(())
    }

    /// Parameters (and ψ, when this net has one) from a checkpoint.
    pub fn load_state(&self, file: &TensorFile, path: &Path) -> Result<()> {
        self.load_replica_state(0, file, path)
    }

    pub fn load_replica_state(&self, replica: usize, file: &TensorFile, path: &Path) -> Result<()> {
        let like = self.replica_params(replica)?;
        self.set_replica_params(replica, &read_groups(file, path, "", &like)?)?;
        if self.has_feedback() {
            self.set_replica_feedback(replica, &read_groups(file, path, "feedback.", &like)?)?;
        }
        Ok(())
    }

    pub fn set_batch(&self, input: &[f32], target: &[f32]) -> Result<()> {
        both!(self, e => e.set_batch(input, target))
    }

    pub fn encode_train_step(
        &mut self,
        enc: &mut wgpu::CommandEncoder,
        alg: Algorithm,
        steps: usize,
    ) {
        both!(self, e => e.encode_train_step(enc, alg, steps))
    }

    pub fn train_step(&mut self, alg: Algorithm, steps: usize) {
        both!(self, e => e.train_step(alg, steps))
    }

    pub fn encode_relax_counter_reset(&self, enc: &mut wgpu::CommandEncoder) {
        if let Net::Mlp(e) = self {
            e.encode_relax_counter_reset(enc);
        }
    }

    pub fn relax_steps_used(&self, batches: usize, cap: usize) -> Result<f64> {
        match self {
            Net::Mlp(e) => e.relax_steps_used(batches, cap),
            Net::Graph(_) => Ok(cap as f64),
        }
    }

    pub fn last_relax_steps(&self) -> Result<Option<usize>> {
        match self {
            Net::Mlp(e) => e.last_relax_steps(),
            Net::Graph(_) => Ok(None),
        }
    }

    pub fn bp_gradients(&mut self) -> Result<Vec<ParamGroup>> {
        both!(self, e => e.submit_bp_gradients());
        self.grads()
    }

    pub fn ar_gradients(&mut self, steps: usize) -> Result<Vec<ParamGroup>> {
        both!(self, e => e.submit_ar_gradients(steps));
        self.grads()
    }

    /// Backprop's gradients of every replica.
    pub fn replica_bp_gradients(&mut self) -> Result<Vec<Vec<ParamGroup>>> {
        both!(self, e => e.submit_bp_gradients());
        self.all_replica_grads()
    }

    /// AR's gradients of every replica after `steps` relaxation steps.
    pub fn replica_ar_gradients(&mut self, steps: usize) -> Result<Vec<Vec<ParamGroup>>> {
        both!(self, e => e.submit_ar_gradients(steps));
        self.all_replica_grads()
    }

    fn all_replica_grads(&self) -> Result<Vec<Vec<ParamGroup>>> {
        (0..self.replicas())
            .map(|r| self.replica_grads(r))
            .collect()
    }

    pub fn ar_gradient_series(&mut self, checkpoints: &[usize]) -> Result<Vec<Vec<ParamGroup>>> {
        let series = match self {
            Net::Mlp(e) => e
                .ar_gradient_series(checkpoints)?
                .into_iter()
                .map(ParamsOf::Mlp)
                .collect::<Vec<_>>(),
            Net::Graph(e) => e
                .ar_gradient_series(checkpoints)?
                .into_iter()
                .map(ParamsOf::Graph)
                .collect(),
        };
        Ok(series
            .into_iter()
            .map(|p| self.to_groups(Some(p)).expect("same kind"))
            .collect())
    }

    /// Times every later pass by phase with timestamp queries. False when the device has none.
    pub fn enable_profiling(&mut self) -> bool {
        both!(self, e => e.enable_profiling())
    }

    /// Times each dispatch as its own phase (graphs: one per kernel kind of the relaxation and
    /// the gradients; MLPs: each forward layer, the output error and the gradient kernels).
    pub fn set_kernel_times(&mut self, on: bool) {
        both!(self, e => e.set_kernel_times(on))
    }

    /// With profiling enabled, stops (true) or resumes (false) writing timestamps, so that wall
    /// time can be measured without them.
    pub fn pause_profiling(&mut self, paused: bool) {
        both!(self, e => e.pause_profiling(paused))
    }

    /// Milliseconds of GPU time per phase since the last call.
    pub fn phase_times(&self) -> Result<Vec<(&'static str, f64)>> {
        both!(self, e => e.phase_times())
    }

    /// The tile shapes of (relaxation, each forward product, weight gradients); for graphs, of
    /// the dense nodes' products.
    /// An error if the relaxations since the engine was built went wrong (the cooperative
    /// kernel's check, see [`Engine::check_relaxation`]); one small read-back.
    pub fn check_relaxation(&self) -> Result<()> {
        match self {
            Net::Mlp(e) => e.check_relaxation(),
            Net::Graph(_) => Ok(()),
        }
    }

    /// The cooperative kernel's workgroups per dispatch and tiles per step, when in use.
    pub fn cooperative_size(&self) -> Option<(u32, u32)> {
        match self {
            Net::Mlp(e) => e.cooperative_size(),
            Net::Graph(_) => None,
        }
    }

    /// The resident kernel's split of the work, when it is in use.
    pub fn resident_plan(&self) -> Option<&crate::gpu::resident::ResidentPlan> {
        match self {
            Net::Mlp(e) => e.resident_plan(),
            Net::Graph(_) => None,
        }
    }

    pub fn tile_shapes(&self) -> (TileShape, Vec<TileShape>, TileShape) {
        match self {
            Net::Mlp(e) => (e.shapes.relax, e.shapes.forward.clone(), e.shapes.grad),
            Net::Graph(e) => {
                // The graph keeps one shape per dense entry, that is per node and replica.
                let forward = e.shapes.forward.iter().step_by(e.opts.replicas);
                (e.shapes.vjp, forward.copied().collect(), e.shapes.grad)
            }
        }
    }

    /// Uploads a seeded random batch (inputs uniform in [0, 1), one-hot targets): for timing,
    /// where the data does not matter.
    pub fn set_random_batch(&self, seed: u64) -> Result<()> {
        let model = self.model();
        let b = self.opts().batch * self.replicas();
        let mut rng = Rng::new(seed);
        let input: Vec<f32> = (0..b * model.input_width())
            .map(|_| rng.uniform() as f32)
            .collect();
        let n = model.output_width();
        let mut target = vec![0.0; b * n];
        for i in 0..b {
            target[i * n + rng.below(n)] = 1.0;
        }
        self.set_batch(&input, &target)
    }

    pub fn finish(&self) -> Result<()> {
        both!(self, e => e.finish())
    }
}

enum ParamsOf {
    Mlp(Params),
    Graph(GraphParams),
}

impl BatchTarget for Net {
    fn context(&self) -> &Arc<GpuContext> {
        both!(self, e => BatchTarget::context(e))
    }
    fn batch(&self) -> usize {
        both!(self, e => BatchTarget::batch(e))
    }
    fn replicas(&self) -> usize {
        both!(self, e => BatchTarget::replicas(e))
    }
    fn input_width(&self) -> usize {
        both!(self, e => BatchTarget::input_width(e))
    }
    fn output_width(&self) -> usize {
        both!(self, e => BatchTarget::output_width(e))
    }
    fn batch_buffers(&self) -> [&wgpu::Buffer; 3] {
        both!(self, e => BatchTarget::batch_buffers(e))
    }
    fn encode_forward(&self, enc: &mut wgpu::CommandEncoder) {
        both!(self, e => BatchTarget::encode_forward(e, enc))
    }
}
