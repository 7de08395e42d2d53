//! Tensors in and out of safetensors files, as f32: every file a stranger hands Kiln is
//! read through [`read_f32`], which checks the shape and refuses NaN, infinity and
//! magnitudes no trained model holds.

use std::collections::HashMap;

use safetensors::{Dtype, SafeTensors};

use crate::error::{KilnError, Result};

fn bad(m: impl std::fmt::Display) -> KilnError {
    KilnError::Checkpoint(m.to_string())
}

pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A safetensors file of named f32 tensors, with the metadata transformers expects.
pub fn safetensors_of(tensors: Vec<(String, Vec<usize>, Vec<u8>)>) -> Result<Vec<u8>> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            Ok((name.clone(), safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes).map_err(bad)?))
        })
        .collect::<Result<_>>()?;
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    safetensors::tensor::serialize(views, metadata).map_err(bad)
}

/// Reads one tensor of the expected shape as f32, refusing NaN, infinity and magnitudes
/// past `max_abs`.
pub fn read_f32(st: &SafeTensors, names: &[String], shape: &[usize], file: &str, max_abs: f32) -> Result<Vec<f32>> {
    let view = names
        .iter()
        .find_map(|n| st.tensor(n).ok())
        .ok_or_else(|| bad(format!("{file} has no tensor {}", names[0])))?;
    if view.shape() != shape {
        return Err(bad(format!("{} in {file} has shape {:?}, the config says {shape:?}", names[0], view.shape())));
    }
    let data = view.data();
    // f16 and bf16 (how Hub models ship) widen to f32 exactly
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        other => return Err(bad(format!("{} in {file} is {other:?}; Kiln reads f32, f16 and bf16", names[0]))),
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!("{} in {file} holds {} at element {i}", names[0], values[i])));
    }
    if let Some(i) = values.iter().position(|v| v.abs() > max_abs) {
        return Err(bad(format!(
            "{} in {file} holds {:e} at element {i}, past the ±{max_abs:e} a trained model's weights stay within",
            names[0], values[i]
        )));
    }
    Ok(values)
}
