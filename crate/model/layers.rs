//! The pieces a block is made of, as each family stores them: linear layers (GPT-2's
//! Conv1D, in × out, or nn.Linear, out × in), norms (LayerNorm or RMSNorm) and the MLP's
//! activation (GELU or SwiGLU). A block is written once against these (`gpt.rs`); the
//! family decides which piece each slot holds.
//!
//! Linear layers, y (n, out) = x (n, in) · W + b:
//!   Conv1D   W (in, out):  forward x·W (nn),   dx = dy·Wᵀ (nt),   dW += xᵀ·dy (tn)
//!   nn.Linear W (out, in): forward x·Wᵀ (nt),  dx = dy·W (nn),    dW += dyᵀ·x (tn)
//!   both:                  db += Σ_rows dy

use super::config::GptConfig;
use super::params::{LayerParams, ParamLayout};
use super::weights::Weights;
use crate::backend::{at, At, Backend};
use crate::cpu::matmul::MatmulShape;
use crate::error::Result;

/// Where a layer's parameter gradients go: the model's gradient buffer, or nowhere when
/// the parameters are frozen (LoRA's base). A norm's kernels always write its weight's
/// gradient, so a frozen norm writes it to `sink` (2C, never read).
pub enum GradsTo<'a, T> {
    Buffer(&'a T),
    Frozen { sink: &'a T },
}

impl<T> Clone for GradsTo<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for GradsTo<'_, T> {}

/// A linear layer's place in the parameter buffer.
#[derive(Clone, Copy, Debug)]
pub struct Linear {
    pub weight: usize,
    pub bias: Option<usize>,
    pub inp: usize,
    pub out: usize,
    /// nn.Linear's (out, in) storage; Conv1D's (in, out) otherwise.
    pub out_by_in: bool,
}

impl Linear {
    /// out (n, out) = inp (n, in) · W (+ b).
    pub fn forward<B: Backend>(self, be: &mut B, p: &Weights<B::Buf>, out: At<B::Buf>, inp: At<B::Buf>, n: usize) {
        let shape = if self.out_by_in {
            MatmulShape::nt(n, self.out, self.inp)
        } else {
            MatmulShape::nn(n, self.out, self.inp)
        };
        be.matmul(out, inp, p.matrix(self.weight), self.bias.map(|b| p.vector(b)), shape, false);
    }

    /// dW += the weight's gradient, db += Σ_rows dy (unless frozen), and dx (n, in)
    /// overwritten.
    pub fn backward<B: Backend>(
        self,
        be: &mut B,
        (p, g): (&Weights<B::Buf>, GradsTo<B::Buf>),
        dx: &B::Buf,
        x: &B::Buf,
        dy: &B::Buf,
        n: usize,
    ) -> Result<()> {
        let (inp, out) = (self.inp, self.out);
        if let GradsTo::Buffer(g) = g {
            if self.out_by_in {
                be.matmul(at(g, self.weight), at(dy, 0), at(x, 0), None, MatmulShape::tn(out, inp, n), true);
            } else {
                be.matmul(at(g, self.weight), at(x, 0), at(dy, 0), None, MatmulShape::tn(inp, out, n), true);
            }
            if let Some(bias) = self.bias {
                be.sum_rows(at(g, bias), at(dy, 0), n, out, true)?;
            }
        }
        let shape = if self.out_by_in { MatmulShape::nn(n, inp, out) } else { MatmulShape::nt(n, inp, out) };
        be.matmul(at(dx, 0), at(dy, 0), p.matrix(self.weight), None, shape, false);
        Ok(())
    }
}

/// A norm's place in the parameter buffer: LayerNorm (weight and bias) or RMSNorm (a
/// weight, and its ε).
#[derive(Clone, Copy, Debug)]
pub enum Norm {
    Layer { weight: usize, bias: usize },
    Rms { weight: usize, eps: f64 },
}

/// What a norm saves for its backward pass: LayerNorm's mean and rstd (n) each;
/// RMSNorm's rstd (the mean buffer goes unused).
pub struct NormStats<'a, T> {
    pub mean: &'a T,
    pub rstd: &'a T,
}

impl Norm {
    /// out (n, C) = the norm of inp (n, C).
    pub fn forward<B: Backend>(
        self,
        be: &mut B,
        p: &Weights<B::Buf>,
        out: &B::Buf,
        stats: NormStats<B::Buf>,
        inp: &B::Buf,
        n: usize,
        c: usize,
    ) {
        match self {
            Norm::Layer { weight, bias } => {
                be.layernorm_forward(out, stats.mean, stats.rstd, inp, p.vector(weight), p.vector(bias), n, c)
            }
            Norm::Rms { weight, eps } => be.rmsnorm_forward(out, stats.rstd, inp, p.vector(weight), n, c, eps),
        }
    }

    /// dinp += the gradient through the norm of inp from dout; the weight's (and bias's)
    /// gradients accumulate.
    pub fn backward<B: Backend>(
        self,
        be: &mut B,
        (p, g): (&Weights<B::Buf>, GradsTo<B::Buf>),
        dinp: &B::Buf,
        dout: &B::Buf,
        inp: &B::Buf,
        stats: NormStats<B::Buf>,
        n: usize,
        c: usize,
    ) -> Result<()> {
        // frozen: the weight's (and bias's) gradient into the sink, the parameters read
        // where they are
        let (g, grad_norm) = match g {
            GradsTo::Buffer(g) => (g, self),
            GradsTo::Frozen { sink } => (
                sink,
                match self {
                    Norm::Layer { .. } => Norm::Layer { weight: 0, bias: c },
                    Norm::Rms { eps, .. } => Norm::Rms { weight: 0, eps },
                },
            ),
        };
        match (self, grad_norm) {
            (Norm::Layer { weight, .. }, Norm::Layer { weight: gw, bias: gb }) => be.layernorm_backward(
                dinp,
                at(g, gw),
                at(g, gb),
                dout,
                inp,
                p.vector(weight),
                stats.mean,
                stats.rstd,
                n,
                c,
            ),
            (Norm::Rms { weight, .. }, Norm::Rms { weight: gw, .. }) => {
                be.rmsnorm_backward(dinp, at(g, gw), dout, inp, p.vector(weight), stats.rstd, n, c)
            }
            _ => unreachable!("the same norm"),
        }
    }
}

/// The MLP's nonlinearity between its two products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// act (n, 4C) = gelu(fch (n, 4C)).
    Gelu,
    /// act (n, H) = silu(gate) ⊙ up, fch (n, 2H) = [gate | up].
    SwiGlu,
}

impl Activation {
    /// act (n, width) from fch (n, width or 2·width).
    pub fn forward<B: Backend>(self, be: &mut B, act: &B::Buf, fch: &B::Buf, n: usize, width: usize) {
        match self {
            Activation::Gelu => be.gelu_forward(act, fch, n * width),
            Activation::SwiGlu => be.swiglu_forward(act, fch, n, width),
        }
    }

    /// dfch overwritten from dact.
    pub fn backward<B: Backend>(self, be: &mut B, dfch: &B::Buf, fch: &B::Buf, dact: &B::Buf, n: usize, width: usize) {
        match self {
            Activation::Gelu => be.gelu_backward(dfch, fch, dact, n * width),
            Activation::SwiGlu => be.swiglu_backward(dfch, fch, dact, n, width),
        }
    }
}

/// One block's pieces, whatever its family:
///   x → norm1 → qkv → [rope] → attention → attn_out → + x = res2
///   res2 → norm2 → mlp_in → activation → mlp_out → + res2 = res3
pub struct BlockParts {
    pub norm1: Norm,
    pub qkv: Linear,
    pub attn_out: Linear,
    pub norm2: Norm,
    pub mlp_in: Linear,
    pub activation: Activation,
    pub mlp_out: Linear,
}

impl LayerParams {
    pub fn parts(&self, cfg: &GptConfig) -> BlockParts {
        let (c, qkv, fc, h) = (cfg.n_embd, cfg.qkv_width(), cfg.mlp_in_width(), cfg.mlp_width());
        match self {
            LayerParams::Gpt2(w) => {
                let conv = |weight, bias, inp, out| Linear { weight, bias: Some(bias), inp, out, out_by_in: false };
                BlockParts {
                    norm1: Norm::Layer { weight: w.ln_1_weight, bias: w.ln_1_bias },
                    qkv: conv(w.c_attn_weight, w.c_attn_bias, c, qkv),
                    attn_out: conv(w.attn_proj_weight, w.attn_proj_bias, c, c),
                    norm2: Norm::Layer { weight: w.ln_2_weight, bias: w.ln_2_bias },
                    mlp_in: conv(w.c_fc_weight, w.c_fc_bias, c, fc),
                    activation: Activation::Gelu,
                    mlp_out: conv(w.mlp_proj_weight, w.mlp_proj_bias, h, c),
                }
            }
            LayerParams::Llama(w) => {
                let eps = cfg.llama().expect("a Llama layer in a Llama model").rms_norm_eps;
                let linear = |weight, bias, inp, out| Linear { weight, bias, inp, out, out_by_in: true };
                BlockParts {
                    norm1: Norm::Rms { weight: w.input_layernorm, eps },
                    qkv: linear(w.qkv_weight, w.qkv_bias, c, qkv),
                    attn_out: linear(w.o_proj, None, c, c),
                    norm2: Norm::Rms { weight: w.post_attention_layernorm, eps },
                    mlp_in: linear(w.gate_up, None, c, fc),
                    activation: Activation::SwiGlu,
                    mlp_out: linear(w.down_proj, None, h, c),
                }
            }
        }
    }
}

impl ParamLayout {
    /// The norm after the last block.
    pub fn final_norm(&self, cfg: &GptConfig) -> Norm {
        match (self.ln_f_bias, cfg.llama()) {
            (Some(bias), _) => Norm::Layer { weight: self.ln_f_weight, bias },
            (None, Some(l)) => Norm::Rms { weight: self.ln_f_weight, eps: l.rms_norm_eps },
            (None, None) => unreachable!("GPT-2's final LayerNorm has a bias"),
        }
    }
}
