//! Comparing AR's gradients with backprop's: cosine, angle and relative error per tensor.

use serde::Serialize;

use crate::engine::net::ParamGroup;
use crate::model::Params;

/// Agreement between an approximate gradient `a` and the exact one `e`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Agreement {
    pub cosine: f64,
    /// The angle between the two as vectors, in degrees.
    pub angle_deg: f64,
    /// ‖a − e‖ / ‖e‖ (Frobenius).
    pub rel_error: f64,
}

pub fn agreement(a: &[f32], e: &[f32]) -> Agreement {
    assert_eq!(a.len(), e.len(), "tensors of different sizes");
    let (mut dot, mut na, mut ne, mut nd) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(e) {
        let (x, y) = (x as f64, y as f64);
        dot += x * y;
        na += x * x;
        ne += y * y;
        nd += (x - y) * (x - y);
    }
    let cosine = if na == 0.0 && ne == 0.0 {
        1.0
    } else if na == 0.0 || ne == 0.0 {
        0.0
    } else {
        (dot / (na.sqrt() * ne.sqrt())).clamp(-1.0, 1.0)
    };
    let rel_error = if ne == 0.0 {
        if nd == 0.0 { 0.0 } else { f64::INFINITY }
    } else {
        (nd / ne).sqrt()
    };
    Agreement {
        cosine,
        angle_deg: cosine.acos().to_degrees(),
        rel_error,
    }
}

/// Per-layer (or per-node) agreement of weight and bias gradients.
#[derive(Clone, Debug, Serialize)]
pub struct LayerAgreement {
    pub layer: usize,
    /// `layers.{i}` for an MLP, the node id for a graph.
    pub name: String,
    pub weight: Agreement,
    pub bias: Agreement,
}

pub fn compare(ar: &Params, bp: &Params) -> Vec<LayerAgreement> {
    (0..ar.weights.len())
        .map(|l| LayerAgreement {
            layer: l,
            name: format!("layers.{l}"),
            weight: agreement(&ar.weights[l], &bp.weights[l]),
            bias: agreement(&ar.biases[l], &bp.biases[l]),
        })
        .collect()
}

/// Agreement of named parameter groups (either engine), in order.
pub fn compare_groups(ar: &[ParamGroup], bp: &[ParamGroup]) -> Vec<LayerAgreement> {
    ar.iter()
        .zip(bp)
        .enumerate()
        .map(|(i, (a, b))| LayerAgreement {
            layer: i,
            name: a.name.clone(),
            weight: agreement(&a.weight, &b.weight),
            bias: agreement(&a.bias, &b.bias),
        })
        .collect()
}

/// The mean weight-gradient angle over layers (one number per epoch in training logs).
pub fn mean_angle(layers: &[LayerAgreement]) -> f64 {
    if layers.is_empty() {
        return 0.0;
    }
    layers.iter().map(|l| l.weight.angle_deg).sum::<f64>() / layers.len() as f64
}
