//! A model's parameters on a backend. What trains is f32, every tensor at its layout
//! offset. A frozen model (LoRA's base, PPO's reward model) whose matrices all hold
//! 16-bit values exactly (a Hub model that shipped in bf16 or f16) keeps, on a backend
//! that allows it, its matrices in 16 bits two to a word (`cpu::half16`) and its vectors
//! (norms, biases, a scalar head) in a small f32 buffer of their own: half the memory,
//! and since the kernels widen the same values, bit for bit the results of f32 storage.

use super::params::{ParamLayout, ParamTensor};
use crate::backend::{at, at16, At, Backend, HalfFormat};
use crate::cpu::half16;
use crate::error::Result;

pub struct Weights<T> {
    /// Every tensor at its layout offset; with `half`, only the vectors, one after another.
    f32: T,
    half: Option<Half<T>>,
}

struct Half<T> {
    /// Every element of the layout in 16 bits (the vectors' places unused).
    words: T,
    format: HalfFormat,
    /// (layout offset, length, offset in the f32 buffer) of each vector, in layout order.
    vectors: Vec<(usize, usize, usize)>,
}

/// Matrices (the linear layers' weights, the embeddings, the output layer) are what
/// 16 bits halve; vectors stay f32.
fn is_matrix(t: &ParamTensor) -> bool {
    t.shape.len() == 2 && t.shape.iter().all(|&d| d > 1)
}

impl<T> Weights<T> {
    /// `values` (the layout's) on the backend: in 16 bits where `frozen`, the backend keeps
    /// 16-bit storage and every matrix value fits a 16-bit format exactly; f32 otherwise.
    pub fn upload<B: Backend<Buf = T>>(be: &mut B, layout: &ParamLayout, values: &[f32], frozen: bool) -> Result<Self> {
        let matrices = layout.tensors.iter().filter(|t| is_matrix(t)).map(|t| &values[t.offset..t.offset + t.len()]);
        let format = if frozen && be.half_storage() { HalfFormat::exact_for(matrices) } else { None };
        let Some(format) = format else {
            return Ok(Weights { f32: be.upload(values)?, half: None });
        };
        let mut words = vec![0u32; layout.total.div_ceil(2)];
        let (mut small, mut vectors) = (Vec::new(), Vec::new());
        for t in &layout.tensors {
            let v = &values[t.offset..t.offset + t.len()];
            if is_matrix(t) {
                half16::pack_into(&mut words, t.offset, v, format);
            } else {
                vectors.push((t.offset, t.len(), small.len()));
                small.extend_from_slice(v);
            }
        }
        let words = be.upload_u32(&words)?;
        Ok(Weights { f32: be.upload(&small)?, half: Some(Half { words, format, vectors }) })
    }

    /// The 16-bit format the matrices are kept in (None: f32).
    pub fn format(&self) -> Option<HalfFormat> {
        self.half.as_ref().map(|h| h.format)
    }

    /// A matrix's elements from `offset` (a layout offset, possibly inside the tensor).
    pub fn matrix(&self, offset: usize) -> At<'_, T> {
        match &self.half {
            Some(h) => at16(&h.words, offset, h.format),
            None => at(&self.f32, offset),
        }
    }

    /// A vector's elements from `offset` (a layout offset, possibly inside the tensor;
    /// several vectors adjacent in the layout, as Qwen2's q, k and v biases, stay adjacent).
    pub fn vector(&self, offset: usize) -> At<'_, T> {
        match &self.half {
            Some(h) => {
                let i = h.vectors.partition_point(|&(start, _, _)| start <= offset);
                let (start, len, to) = h.vectors[i.checked_sub(1).expect("a vector's offset")];
                assert!(offset < start + len, "offset {offset} is in a matrix, not a vector");
                at(&self.f32, to + offset - start)
            }
            None => at(&self.f32, offset),
        }
    }

    /// The f32 buffer of a model that holds every tensor in f32 (one that trains).
    pub fn all_f32(&self) -> &T {
        assert!(self.half.is_none(), "a model kept in 16 bits is frozen");
        &self.f32
    }

    /// The first vector's buffer (a place to plant a NaN for the fault-injection tests).
    pub fn vectors_buf(&self) -> &T {
        &self.f32
    }

    /// Every tensor's values, in the layout, as f32.
    pub async fn read<B: Backend<Buf = T>>(&self, be: &mut B, layout: &ParamLayout) -> Result<Vec<f32>> {
        let Some(h) = &self.half else { return be.read(&self.f32).await };
        let mut values = half16::widen(&be.read(&h.words).await?, 0, layout.total, h.format);
        let small = be.read(&self.f32).await?;
        for &(start, len, from) in &h.vectors {
            values[start..start + len].copy_from_slice(&small[from..from + len]);
        }
        Ok(values)
    }

    /// The same values with every tensor in f32, widened on the device (a frozen model
    /// kept in 16 bits that begins to train in full).
    pub fn widened<B: Backend<Buf = T>>(&self, be: &mut B, layout: &ParamLayout) -> Result<Weights<T>> {
        let h = self.half.as_ref().expect("weights kept in 16 bits");
        let all = be.zeros(layout.total)?;
        // 1 · x is x exactly: the 16-bit values arrive as they were
        be.axpy(at(&all, 0), layout.total, at16(&h.words, 0, h.format), layout.total, 1, layout.total, 1.0, false);
        for &(start, len, from) in &h.vectors {
            be.copy(at(&self.f32, from), at(&all, start), len);
        }
        Ok(Weights { f32: all, half: None })
    }
}
