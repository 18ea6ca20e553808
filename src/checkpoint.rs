//! safetensors files: parameters under PyTorch `nn.Linear` names (`layers.{i}.weight` [out, in],
//! `layers.{i}.bias`), so a checkpoint loads into PyTorch, plus free-form f32 tensors for dumps.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::model::{ModelSpec, Params};
use crate::util::write_atomic;
use crate::{Error, Result};

/// An f32 tensor with its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }
}

/// Named tensors plus string metadata, as one safetensors file holds them.
#[derive(Clone, Debug, Default)]
pub struct TensorFile {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

impl TensorFile {
    pub fn insert(&mut self, name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) {
        self.tensors.insert(name.into(), Tensor::new(shape, data));
    }

    /// Adds `{prefix}layers.{i}.weight` / `.bias` for every layer.
    pub fn insert_params(&mut self, prefix: &str, spec: &ModelSpec, p: &Params) {
        for l in 0..spec.depth() {
            let (n_in, n_out) = (spec.widths[l], spec.widths[l + 1]);
            self.insert(
                format!("{prefix}layers.{l}.weight"),
                vec![n_out, n_in],
                p.weights[l].clone(),
            );
            self.insert(
                format!("{prefix}layers.{l}.bias"),
                vec![n_out],
                p.biases[l].clone(),
            );
        }
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(k, t)| {
                let b: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                (k.clone(), b, t.shape.clone())
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(k, b, s)| {
                TensorView::new(Dtype::F32, s.clone(), b)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| Error::Other(format!("tensor {k}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        // No metadata is written as none: safetensors 0.8 serialises an empty map with no
        // tensors as a header it cannot read back (`{},"__metadata__":{}}`).
        let meta = (!self.metadata.is_empty())
            .then(|| self.metadata.clone().into_iter().collect::<HashMap<_, _>>());
        safetensors::serialize(views, meta).map_err(|e| Error::Other(format!("safetensors: {e}")))
    }

    /// Writes atomically (temporary file, sync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::file(path, format!("not a valid safetensors file ({e})")))?;
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::file(path, format!("not a valid safetensors file ({e})")))?;
        let mut out = TensorFile::default();
        if let Some(m) = meta.metadata() {
            out.metadata = m.clone().into_iter().collect();
        }
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(Error::file(
                    path,
                    format!(
                        "tensor '{name}' is {:?}; only F32 is supported",
                        view.dtype()
                    ),
                ));
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            out.insert(name, view.shape().to_vec(), data);
        }
        Ok(out)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
        Self::from_bytes(path, &bytes)
    }

    /// Reads `{prefix}layers.{i}.weight/bias` for `spec`, checking every name and shape.
    /// The tensor `name`, checked to have `shape` (errors name `path`, the file read, and
    /// `model`, what needs the tensor).
    pub fn tensor(&self, path: &Path, name: &str, shape: &[usize], model: &str) -> Result<&Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::file(path, format!("tensor '{name}' is missing for {model}")))?;
        if t.shape != shape {
            return Err(Error::file(
                path,
                format!(
                    "tensor '{name}' has shape {:?} but the model needs {shape:?}",
                    t.shape
                ),
            ));
        }
        Ok(t)
    }

    pub fn params(&self, path: &Path, prefix: &str, spec: &ModelSpec) -> Result<Params> {
        let mut p = Params::zeros_like(spec);
        for l in 0..spec.depth() {
            let (n_in, n_out) = (spec.widths[l], spec.widths[l + 1]);
            for (name, shape, dst) in [
                (
                    format!("{prefix}layers.{l}.weight"),
                    vec![n_out, n_in],
                    &mut p.weights[l],
                ),
                (
                    format!("{prefix}layers.{l}.bias"),
                    vec![n_out],
                    &mut p.biases[l],
                ),
            ] {
                let model = format!("model {}", spec.describe());
                let t = self.tensor(path, &name, &shape, &model)?;
                dst.copy_from_slice(&t.data);
            }
        }
        Ok(p)
    }
}
