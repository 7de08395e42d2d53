//! The op set the model is written against, with two implementations:
//! [`GpuBackend`] records the WGSL kernels into one command batch per step;
//! [`CpuBackend`] runs their CPU twins at once. The model, the trainer and the sampler
//! are written once, generic over [`Backend`].

mod cpu;
mod gpu;

pub use cpu::{cpu_memory_budget, CpuBackend, CpuBuf};
pub use gpu::GpuBackend;

use crate::cpu::adamw::AdamWConfig;
use crate::cpu::matmul::MatmulShape;
use crate::error::Result;

/// Which backend to run on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Gpu,
    /// Always at hand.
    #[default]
    Cpu,
}

/// The backend a person asks for (`--backend`, the JS API's `backend`): one of the two, or
/// `auto`, each model timed on both and trained on the faster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    #[default]
    Auto,
    Gpu,
    Cpu,
}

impl std::str::FromStr for BackendChoice {
    type Err = crate::error::KilnError;

    fn from_str(name: &str) -> crate::error::Result<BackendChoice> {
        match name {
            "auto" => Ok(BackendChoice::Auto),
            "gpu" => Ok(BackendChoice::Gpu),
            "cpu" => Ok(BackendChoice::Cpu),
            other => Err(crate::error::KilnError::Config(format!("backend {other:?}: choose auto, gpu or cpu"))),
        }
    }
}

pub use crate::cpu::half16::HalfFormat;

/// A tensor that starts at `offset` elements into `buf` (parameters live in one flat
/// buffer): f32 elements, or, with `half`, 16-bit ones two to a word (a frozen model's
/// matrices; only matmul's B, the embedding tables and axpy's source read those).
pub struct At<'a, T> {
    pub buf: &'a T,
    pub offset: usize,
    pub half: Option<HalfFormat>,
}

impl<T> Clone for At<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for At<'_, T> {}

/// `buf` from element `offset`.
pub fn at<T>(buf: &T, offset: usize) -> At<'_, T> {
    At { buf, offset, half: None }
}

/// Element `offset` of 16-bit values packed two to a word in `buf`.
pub fn at16<T>(buf: &T, offset: usize, format: HalfFormat) -> At<'_, T> {
    At { buf, offset, half: Some(format) }
}

/// The kernels of `shaders/` (and their CPU twins), as the model sees them. Argument
/// order follows the twins: outputs, inputs, sizes. Work may be queued until
/// [`Backend::flush`] or a read.
#[allow(async_fn_in_trait)] // used single-threaded, natively and in a browser worker
pub trait Backend {
    /// A buffer of 4-byte elements (f32, or u32 for token ids).
    type Buf;

    /// e.g. "gpu: llvmpipe (Vulkan)" or "cpu".
    fn describe(&self) -> String;
    /// The largest buffer the device allows, in bytes (None: no limit but memory).
    fn max_buffer_bytes(&self) -> Option<u64>;
    /// The most bytes all of a run's buffers together may take (None: not known; WebGPU
    /// tells only per-buffer limits). Checked against the estimate before allocating.
    fn memory_budget_bytes(&self) -> Option<u64> {
        None
    }
    /// The most bytes of Kiln's device buffers alive at once so far (None: not counted,
    /// as on the CPU, where buffers are ordinary memory).
    fn memory_peak_bytes(&self) -> Option<u64> {
        None
    }
    /// Whether a frozen model's matrices are kept in 16 bits where their values allow
    /// (on the GPU, where memory is scarcest; the CPU keeps f32).
    fn half_storage(&self) -> bool {
        false
    }
    fn zeros(&mut self, len: usize) -> Result<Self::Buf>;
    fn upload(&mut self, data: &[f32]) -> Result<Self::Buf>;
    fn upload_u32(&mut self, data: &[u32]) -> Result<Self::Buf>;
    fn write(&mut self, buf: &Self::Buf, offset: usize, data: &[f32]);
    fn write_u32(&mut self, buf: &Self::Buf, offset: usize, data: &[u32]);
    /// Runs everything queued and reads the whole buffer.
    async fn read(&mut self, buf: &Self::Buf) -> Result<Vec<f32>>;
    /// Sends queued work on its way (one submit); reads flush by themselves.
    fn flush(&mut self);
    fn clear(&mut self, buf: &Self::Buf);
    fn copy(&mut self, src: At<Self::Buf>, dst: At<Self::Buf>, len: usize);

    fn matmul(
        &mut self,
        out: At<Self::Buf>,
        a: At<Self::Buf>,
        b: At<Self::Buf>,
        bias: Option<At<Self::Buf>>,
        s: MatmulShape,
        accumulate: bool,
    );
    fn sum_rows(&mut self, out: At<Self::Buf>, src: At<Self::Buf>, r: usize, w: usize, accumulate: bool) -> Result<()>;
    /// out[r·out_stride + w] (+)= α · src[r·src_stride + w] for r < R, w < W.
    #[allow(clippy::too_many_arguments)]
    fn axpy(
        &mut self,
        out: At<Self::Buf>,
        out_stride: usize,
        src: At<Self::Buf>,
        src_stride: usize,
        r: usize,
        w: usize,
        alpha: f32,
        accumulate: bool,
    );
    fn embedding_forward(
        &mut self,
        out: &Self::Buf,
        tokens: &Self::Buf,
        wte: At<Self::Buf>,
        // None: no position table (the rotary families)
        wpe: Option<At<Self::Buf>>,
        b: usize,
        t: usize,
        c: usize,
    );
    /// `tokens` are the host copy of the batch's tokens (the GPU groups positions by token).
    fn embedding_backward(
        &mut self,
        dwte: At<Self::Buf>,
        dwpe: Option<At<Self::Buf>>,
        dout: &Self::Buf,
        tokens: &[u32],
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()>;
    fn layernorm_forward(
        &mut self,
        out: &Self::Buf,
        mean: &Self::Buf,
        rstd: &Self::Buf,
        inp: &Self::Buf,
        weight: At<Self::Buf>,
        bias: At<Self::Buf>,
        n: usize,
        c: usize,
    );
    fn layernorm_backward(
        &mut self,
        dinp: &Self::Buf,
        dweight: At<Self::Buf>,
        dbias: At<Self::Buf>,
        dout: &Self::Buf,
        inp: &Self::Buf,
        weight: At<Self::Buf>,
        mean: &Self::Buf,
        rstd: &Self::Buf,
        n: usize,
        c: usize,
    ) -> Result<()>;
    /// Query rows t0..t of a (B, T_cap, QKV) qkv, QKV = C + 2·NKV·HS: NH query heads,
    /// NKV key/value heads (NKV = NH: GPT-2's (B, T, 3C); fewer: grouped-query attention,
    /// query head h reading kv head h / (NH/NKV)); out is (B, T_cap, C). t0 > 0 is a
    /// KV-cache decode step. Saves lse (B, NH, T − t0), each row's softmax normaliser,
    /// rather than the scores.
    fn attention_forward(
        &mut self,
        out: &Self::Buf,
        lse: &Self::Buf,
        qkv: &Self::Buf,
        b: usize,
        t: usize,
        c: usize,
        nh: usize,
        nkv: usize,
        t0: usize,
        t_cap: usize,
    );
    /// dqkv (B, T, QKV), laid out as qkv, is overwritten; a kv head's dk and dv sum over
    /// its query heads. delta (B, NH, T) is scratch; out and lse are the forward pass's.
    fn attention_backward(
        &mut self,
        dqkv: &Self::Buf,
        delta: &Self::Buf,
        dout: &Self::Buf,
        qkv: &Self::Buf,
        out: &Self::Buf,
        lse: &Self::Buf,
        b: usize,
        t: usize,
        c: usize,
        nh: usize,
        nkv: usize,
    );
    /// out (N, C) = inp · rstd · weight, rstd (N) = 1 / √(mean(inp²) + eps) saved (Llama's norm).
    fn rmsnorm_forward(
        &mut self,
        out: &Self::Buf,
        rstd: &Self::Buf,
        inp: &Self::Buf,
        weight: At<Self::Buf>,
        n: usize,
        c: usize,
        eps: f64,
    );
    /// dinp (N, C) and dweight (C) += the gradients from dout (N, C), as layernorm's.
    fn rmsnorm_backward(
        &mut self,
        dinp: &Self::Buf,
        dweight: At<Self::Buf>,
        dout: &Self::Buf,
        inp: &Self::Buf,
        weight: At<Self::Buf>,
        rstd: &Self::Buf,
        n: usize,
        c: usize,
    ) -> Result<()>;
    /// x (B, T, stride) rotated in place: the first `heads` heads of HS channels of each
    /// row, pairs (i, i + HS/2) turned by (pos0 + t) · inv_freq[i] (`cpu::rope` has the
    /// layout; for the fused qkv (B, T, 3C), stride = 3C and heads = 2·NH).
    fn rope_forward(
        &mut self,
        x: At<Self::Buf>,
        inv_freq: &Self::Buf,
        b: usize,
        t: usize,
        stride: usize,
        heads: usize,
        hs: usize,
        pos0: usize,
    );
    /// dx (B, T, stride) ← the gradient through rope_forward, in place (turned back).
    fn rope_backward(
        &mut self,
        dx: At<Self::Buf>,
        inv_freq: &Self::Buf,
        b: usize,
        t: usize,
        stride: usize,
        heads: usize,
        hs: usize,
        pos0: usize,
    );
    /// out (N, H) = silu(gate) ⊙ up, inp (N, 2H) holding each row as [gate | up].
    fn swiglu_forward(&mut self, out: &Self::Buf, inp: &Self::Buf, n: usize, h: usize);
    /// dinp (N, 2H) = [dgate | dup] from dout (N, H), overwritten.
    fn swiglu_backward(&mut self, dinp: &Self::Buf, inp: &Self::Buf, dout: &Self::Buf, n: usize, h: usize);
    fn gelu_forward(&mut self, out: &Self::Buf, inp: &Self::Buf, n: usize);
    fn gelu_backward(&mut self, dinp: &Self::Buf, inp: &Self::Buf, dout: &Self::Buf, n: usize);
    fn residual_forward(&mut self, out: &Self::Buf, inp1: &Self::Buf, inp2: &Self::Buf, n: usize);
    fn cross_entropy_forward(
        &mut self,
        losses: &Self::Buf,
        logits: &Self::Buf,
        targets: &Self::Buf,
        weights: &Self::Buf,
        n: usize,
        v: usize,
    );
    /// logits (N, V) ← the gradient of Σ losses with respect to them, in place.
    fn cross_entropy_backward(
        &mut self,
        logits: &Self::Buf,
        targets: &Self::Buf,
        weights: &Self::Buf,
        n: usize,
        v: usize,
    );
    /// norm = [‖grads‖₂, clip scale] (2 elements).
    fn grad_norm(&mut self, norm: &Self::Buf, grads: &Self::Buf, n: usize, max_norm: f32) -> Result<()>;
    /// One AdamW update of elements 0..n, in one go. `step` (STEP_VALUES elements) starts
    /// with grad_norm's [‖g‖, clip scale]; `decay` holds a bit per element (u32 words).
    fn adamw(
        &mut self,
        params: &Self::Buf,
        grads: &Self::Buf,
        m: &Self::Buf,
        v: &Self::Buf,
        step: &Self::Buf,
        decay: &Self::Buf,
        n: usize,
        cfg: AdamWConfig,
        t: u32,
    ) -> Result<()>;
}
