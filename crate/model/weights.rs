//! A model's parameters on a backend. What trains is f32, every tensor at its layout
//! offset. A frozen model (LoRA's base, PPO's reward model) whose matrices all hold
//! 16-bit values exactly (a Hub model that shipped in bf16 or f16) keeps, on a backend
//! that allows it, its matrices in 16 bits two to a word (`cpu::half16`) and its vectors
//! (norms, biases, a scalar head) in a small f32 buffer of their own: half the memory,
//! and since the kernels widen the same values, bit for bit the results of f32 storage.

use super::config::{GptConfig, MemoryEstimate};
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
    /// Each run of adjacent matrices (layout offset, length) in 16 bits, a buffer of its
    /// own: no buffer is larger than the largest run (the token embedding, or one block's
    /// attention or MLP weights), so a model whose f32 weights pass a device's binding
    /// limit can still fit, and a fused product (q|k|v, gate|up) reads one buffer.
    runs: Vec<(usize, usize, T)>,
    format: HalfFormat,
    /// (layout offset, length, offset in the f32 buffer) of each vector, in layout order.
    vectors: Vec<(usize, usize, usize)>,
}

/// Matrices (the linear layers' weights, the embeddings, the output layer) are what
/// 16 bits halve; vectors stay f32.
fn is_matrix(t: &ParamTensor) -> bool {
    t.shape.len() == 2 && t.shape.iter().all(|&d| d > 1)
}

/// The runs of adjacent matrices, (layout offset, length), in layout order.
fn matrix_runs(layout: &ParamLayout) -> Vec<(usize, usize)> {
    let mut tensors: Vec<&ParamTensor> = layout.tensors.iter().collect();
    tensors.sort_by_key(|t| t.offset);
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut open = false; // whether the last tensor was a matrix
    for t in tensors {
        match (is_matrix(t), open, runs.last_mut()) {
            (true, true, Some((start, len))) if *start + *len == t.offset => *len += t.len(),
            (true, _, _) => runs.push((t.offset, t.len())),
            (false, _, _) => {}
        }
        open = is_matrix(t);
    }
    runs
}

/// The bytes a model's weights take on a backend, and its largest weight buffer: f32,
/// or (`half`) the matrices in 16 bits, run by run, and the vectors in f32.
pub fn stored_bytes(layout: &ParamLayout, half: bool) -> (u64, u64) {
    if !half {
        return (4 * layout.total as u64, 4 * layout.total as u64);
    }
    let runs = matrix_runs(layout);
    let matrices: u64 = runs.iter().map(|&(_, len)| len as u64).sum();
    let vectors = layout.total as u64 - matrices;
    let largest = runs.iter().map(|&(_, len)| 2 * len as u64).max().unwrap_or(0);
    (2 * matrices + 4 * vectors, largest.max(4 * vectors))
}

/// `memory` (an estimate with f32 weights) with the weights kept in 16 bits instead.
pub fn estimate_in_16_bits(mut memory: MemoryEstimate, cfg: &GptConfig) -> MemoryEstimate {
    let (bytes, _) = stored_bytes(&ParamLayout::new(cfg), true);
    memory.params = memory.params + bytes - 4 * cfg.num_params() as u64;
    memory
}

impl<T> Weights<T> {
    /// `values` (the layout's) on the backend: in 16 bits where `frozen`, the backend keeps
    /// 16-bit storage and every matrix value fits a 16-bit format exactly; f32 otherwise.
    pub fn upload<B: Backend<Buf = T>>(be: &mut B, layout: &ParamLayout, values: &[f32], frozen: bool) -> Result<Self> {
        let Some(format) = Self::format_for(be, layout, values, frozen) else {
            return Ok(Weights { f32: be.upload(values)?, half: None });
        };
        let mut runs = Vec::new();
        for (start, len) in matrix_runs(layout) {
            runs.push((start, len, be.upload_u32(&half16::pack(&values[start..start + len], format))?));
        }
        let mut tensors: Vec<&ParamTensor> = layout.tensors.iter().filter(|t| !is_matrix(t)).collect();
        tensors.sort_by_key(|t| t.offset);
        let (mut small, mut vectors) = (Vec::new(), Vec::new());
        for t in tensors {
            vectors.push((t.offset, t.len(), small.len()));
            small.extend_from_slice(&values[t.offset..t.offset + t.len()]);
        }
        Ok(Weights { f32: be.upload(&small)?, half: Some(Half { runs, format, vectors }) })
    }

    /// The 16-bit format [`Weights::upload`] keeps these values in (None: f32).
    pub fn format_for<B: Backend>(be: &B, layout: &ParamLayout, values: &[f32], frozen: bool) -> Option<HalfFormat> {
        let matrices = layout.tensors.iter().filter(|t| is_matrix(t)).map(|t| &values[t.offset..t.offset + t.len()]);
        if frozen && be.half_storage() {
            HalfFormat::exact_for(matrices)
        } else {
            None
        }
    }

    /// The 16-bit format the matrices are kept in (None: f32).
    pub fn format(&self) -> Option<HalfFormat> {
        self.half.as_ref().map(|h| h.format)
    }

    /// A matrix's elements from `offset` (a layout offset, possibly inside the tensor).
    pub fn matrix(&self, offset: usize) -> At<'_, T> {
        match &self.half {
            Some(h) => {
                let i = h.runs.partition_point(|&(start, _, _)| start <= offset);
                let (start, len, buf) = &h.runs[i.checked_sub(1).expect("a matrix's offset")];
                assert!(offset < start + len, "offset {offset} is in a vector, not a matrix");
                at16(buf, offset - start, h.format)
            }
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
        let mut values = vec![0.0; layout.total];
        for (start, len, buf) in &h.runs {
            values[*start..start + len].copy_from_slice(&half16::widen(&be.read(buf).await?, 0, *len, h.format));
        }
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
        for (start, len, buf) in &h.runs {
            be.axpy(at(&all, *start), *len, at16(buf, 0, h.format), *len, 1, *len, 1.0, false);
        }
        for &(start, len, from) in &h.vectors {
            be.copy(at(&self.f32, from), at(&all, start), len);
        }
        Ok(Weights { f32: all, half: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices_split_into_runs_that_never_cut_a_fused_product() {
        // SmolLM2-135M: the embedding, then each block's q|k|v|o and gate|up|down (norms between)
        let cfg = GptConfig::smollm2_135m(512);
        let layout = ParamLayout::new(&cfg);
        let runs = matrix_runs(&layout);
        assert_eq!(runs.len(), 1 + 2 * cfg.n_layer);
        assert_eq!(runs[0], (layout.wte, cfg.vocab_size * cfg.n_embd));
        let (c, h, kv) = (cfg.n_embd, cfg.mlp_width(), cfg.n_kv_head() * cfg.head_size());
        assert_eq!(runs[1].1, c * (c + 2 * kv) + c * c);
        assert_eq!(runs[2].1, 3 * c * h);
        let (bytes, largest) = stored_bytes(&layout, true);
        let matrices: usize = runs.iter().map(|r| r.1).sum();
        assert_eq!(bytes, 2 * matrices as u64 + 4 * (layout.total - matrices) as u64);
        // the 49,152 × 576 embedding: 54 MiB, under the 128 MiB a binding may hold anywhere
        assert_eq!(largest, 2 * (cfg.vocab_size * cfg.n_embd) as u64);
        assert!(largest < 128 << 20 && stored_bytes(&layout, false).1 > 128 << 20);

        // GPT-2: wte and wpe together; each linear layer's weight alone (biases between)
        let cfg = GptConfig::gpt2(65, 16, 2, 2, 8);
        let layout = ParamLayout::new(&cfg);
        let runs = matrix_runs(&layout);
        assert_eq!(runs.len(), 1 + 4 * cfg.n_layer);
        assert_eq!(runs[0], (layout.wte, (65 + 16) * 8));
    }
}
