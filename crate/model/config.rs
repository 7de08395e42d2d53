//! The model's shape: a decoder-only transformer of one family (GPT-2's, or Llama's with
//! Qwen2's and Mistral's variants) at any size, presets, and what it costs in memory.

use serde::{Deserialize, Serialize};

use crate::cpu::rope::RopeScaling;
use crate::error::{KilnError, Result};

/// A decoder-only transformer: pre-norm blocks of causal attention and an MLP, written
/// once per [`Family`]. The sizes every family shares are fields here; what a family adds
/// lives in its variant. Kiln's own models are GPT-2's family.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    pub vocab_size: usize,
    /// The context length (T at most).
    pub block_size: usize,
    pub n_layer: usize,
    /// Query heads; each of HS = n_embd / n_head channels.
    pub n_head: usize,
    pub n_embd: usize,
    #[serde(default)]
    pub family: Family,
}

/// Which blocks a model is built of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// GPT-2: LayerNorm, learned positions, GELU MLP (4C), multi-head attention, biases
    /// everywhere, output layer tied to the token embedding.
    #[default]
    Gpt2,
    /// Llama: RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention, no biases
    /// (but Qwen2's on q, k and v), the output layer tied or its own.
    Llama(LlamaShape),
}

/// What a Llama-family model adds to the shared sizes (a Hugging Face config.json's
/// `num_key_value_heads`, `intermediate_size`, `rms_norm_eps`, `rope_theta`, …).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaShape {
    /// The architecture it came as, written back into the config.json Kiln exports.
    pub arch: LlamaArch,
    /// Key/value heads: n_head is a multiple of it (grouped-query attention).
    pub n_kv_head: usize,
    /// The SwiGLU MLP's hidden width H (gate and up are C → H, down H → C).
    pub intermediate_size: usize,
    /// Biases on the q, k and v projections (Qwen2; Llama's `attention_bias`).
    pub qkv_bias: bool,
    /// The output layer is the token embedding (else `lm_head.weight` of its own).
    pub tie_word_embeddings: bool,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
}

/// The Llama-shaped architectures Kiln reads (`architectures` in config.json). Mistral's
/// sliding window is refused at import, so its blocks are Llama's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LlamaArch {
    Llama,
    Qwen2,
    Mistral,
}

impl LlamaArch {
    /// transformers' class and `model_type`.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            LlamaArch::Llama => ("LlamaForCausalLM", "llama"),
            LlamaArch::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
            LlamaArch::Mistral => ("MistralForCausalLM", "mistral"),
        }
    }
}

/// The largest head (n_embd / n_head) the attention kernels hold; both backends keep it
/// so that a model trained on one runs on the other.
pub const MAX_HEAD_SIZE: usize = 256;

/// Bounds on a model's shape, checked before anything is allocated (a config.json comes
/// from strangers). Training needs about 16 bytes per parameter (weights, gradients, two
/// moments): 256 M parameters are 4 GiB, all a wasm32 address space holds.
pub const MAX_LAYERS: usize = 128;
pub const MAX_WIDTH: usize = 8192;
pub const MAX_CONTEXT: usize = 8192;
pub const MAX_VOCAB_SIZE: usize = 1 << 18;
pub const MAX_PARAMS: u64 = 256_000_000;

/// Named sizes. `base` is nanoGPT's shakespeare-char shape.
pub const PRESETS: [(&str, usize, usize, usize, usize); 3] = [
    // (name, n_layer, n_head, n_embd, block_size)
    ("tiny", 2, 2, 64, 64),
    ("small", 4, 4, 128, 128),
    ("base", 6, 6, 384, 256),
];

/// A model's size as the JS API gives it: a preset's (default tiny), with any of its
/// sizes replaced; the vocabulary is the tokenizer's.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ModelOptions {
    pub preset: Option<String>,
    pub n_layer: Option<usize>,
    pub n_head: Option<usize>,
    pub n_embd: Option<usize>,
    pub block_size: Option<usize>,
}

impl ModelOptions {
    /// The configuration these options give for a vocabulary of `vocab_size`, checked.
    pub fn config(&self, vocab_size: usize) -> Result<GptConfig> {
        let base = GptConfig::preset(self.preset.as_deref().unwrap_or("tiny"), vocab_size)?;
        let cfg = GptConfig {
            vocab_size,
            block_size: self.block_size.unwrap_or(base.block_size),
            n_layer: self.n_layer.unwrap_or(base.n_layer),
            n_head: self.n_head.unwrap_or(base.n_head),
            n_embd: self.n_embd.unwrap_or(base.n_embd),
            family: Family::Gpt2,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

impl GptConfig {
    /// A preset by name, for a given vocabulary.
    pub fn preset(name: &str, vocab_size: usize) -> Result<GptConfig> {
        let (_, n_layer, n_head, n_embd, block_size) = PRESETS
            .iter()
            .find(|p| p.0 == name)
            .ok_or_else(|| KilnError::Config(format!("unknown preset {name:?}; choose tiny, small or base")))?;
        let config = GptConfig::gpt2(vocab_size, *block_size, *n_layer, *n_head, *n_embd);
        config.validate()?;
        Ok(config)
    }

    /// A GPT-2 of these sizes (unchecked: call [`GptConfig::validate`]).
    pub const fn gpt2(vocab_size: usize, block_size: usize, n_layer: usize, n_head: usize, n_embd: usize) -> Self {
        GptConfig { vocab_size, block_size, n_layer, n_head, n_embd, family: Family::Gpt2 }
    }

    /// The Llama family's sizes, None for GPT-2.
    pub fn llama(&self) -> Option<&LlamaShape> {
        match &self.family {
            Family::Llama(shape) => Some(shape),
            Family::Gpt2 => None,
        }
    }

    /// Key/value heads (n_head but for grouped-query attention).
    pub fn n_kv_head(&self) -> usize {
        self.llama().map_or(self.n_head, |l| l.n_kv_head)
    }

    /// Channels of the fused q|k|v rows attention reads: C + 2·NKV·HS (3C without GQA).
    pub fn qkv_width(&self) -> usize {
        self.n_embd + 2 * self.n_kv_head() * self.head_size()
    }

    /// The MLP's hidden width: 4C (GPT-2) or intermediate_size.
    pub fn mlp_width(&self) -> usize {
        self.llama().map_or(4 * self.n_embd, |l| l.intermediate_size)
    }

    /// Width of the MLP's first product: 4C (GPT-2's c_fc) or 2H (Llama's gate|up).
    pub fn mlp_in_width(&self) -> usize {
        self.llama().map_or(4 * self.n_embd, |l| 2 * l.intermediate_size)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(KilnError::Config(m));
        if self.vocab_size == 0 || self.block_size == 0 || self.n_layer == 0 || self.n_head == 0 || self.n_embd == 0 {
            return bad(format!("every size must be positive: {self}"));
        }
        if self.n_embd % self.n_head != 0 {
            return bad(format!("n_embd ({}) must be a multiple of n_head ({})", self.n_embd, self.n_head));
        }
        if self.head_size() > MAX_HEAD_SIZE {
            return bad(format!(
                "heads of {} channels (n_embd / n_head) are past the attention kernel's {MAX_HEAD_SIZE}; use more heads",
                self.head_size()
            ));
        }
        if let Some(l) = self.llama() {
            if l.n_kv_head == 0 || self.n_head % l.n_kv_head != 0 {
                return bad(format!(
                    "num_key_value_heads ({}) must divide num_attention_heads ({})",
                    l.n_kv_head, self.n_head
                ));
            }
            if self.head_size() % 2 != 0 {
                return bad(format!("rotary embeddings need an even head size, got {}", self.head_size()));
            }
            if l.intermediate_size == 0 || l.intermediate_size > 8 * MAX_WIDTH {
                return bad(format!("intermediate_size {} is out of range", l.intermediate_size));
            }
            let finite = |x: f64| x.is_finite() && x > 0.0;
            if !finite(l.rms_norm_eps) || l.rms_norm_eps > 1.0 || !finite(l.rope_theta) {
                return bad(format!(
                    "rms_norm_eps ({}) must be in (0, 1] and rope_theta ({}) positive",
                    l.rms_norm_eps, l.rope_theta
                ));
            }
        }
        if self.vocab_size > MAX_VOCAB_SIZE
            || self.block_size > MAX_CONTEXT
            || self.n_embd > MAX_WIDTH
            || self.n_layer > MAX_LAYERS
        {
            return bad(format!(
                "{self} is far beyond what a browser can train (at most {MAX_LAYERS} layers, width {MAX_WIDTH}, context {MAX_CONTEXT}, vocabulary {MAX_VOCAB_SIZE})"
            ));
        }
        // each size is bounded above, so this u64 product cannot wrap (a usize one can on wasm32)
        let params = self.num_params_u64();
        if params > MAX_PARAMS {
            return bad(format!(
                "{self} has {:.1} billion parameters; Kiln trains at most {} million",
                params as f64 / 1e9,
                MAX_PARAMS / 1_000_000
            ));
        }
        Ok(())
    }

    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Number of parameters (the output layer shares the token embedding). Call on a
    /// validated config: an unchecked one can wrap usize on wasm32.
    pub fn num_params(&self) -> usize {
        self.num_params_u64() as usize
    }

    fn num_params_u64(&self) -> u64 {
        let (v, t, c, l) = (self.vocab_size as u64, self.block_size as u64, self.n_embd as u64, self.n_layer as u64);
        if let Some(shape) = self.llama() {
            let (qkv, h) = (self.qkv_width() as u64, shape.intermediate_size as u64);
            let per_layer = c // input_layernorm
                + qkv * c + if shape.qkv_bias { qkv } else { 0 } // q_proj, k_proj, v_proj
                + c * c // o_proj
                + c // post_attention_layernorm
                + 3 * h * c; // gate_proj, up_proj, down_proj
            let head = if shape.tie_word_embeddings { 0 } else { v * c };
            return v * c + l * per_layer + c + head;
        }
        let per_layer = 2 * c // ln_1
            + c * 3 * c + 3 * c // attn.c_attn
            + c * c + c // attn.c_proj
            + 2 * c // ln_2
            + c * 4 * c + 4 * c // mlp.c_fc
            + 4 * c * c + c; // mlp.c_proj
        v * c + t * c + l * per_layer + 2 * c
    }

    /// Bytes a training run of batch B × T needs on the device, by part.
    pub fn memory(&self, b: usize, t: usize) -> MemoryEstimate {
        let f = 4u64; // f32
        let (v, c, l, nh) = (self.vocab_size as u64, self.n_embd as u64, self.n_layer as u64, self.n_head as u64);
        let (qkv, fc, act) = (self.qkv_width() as u64, self.mlp_in_width() as u64, self.mlp_width() as u64);
        let (b, t) = (b as u64, t as u64);
        let params = f * self.num_params() as u64;
        let bt = b * t;
        // saved per layer: ln1, qkv, atty, attproj, res2, ln2, fch, fch_act, fcproj, res3
        // (GPT-2 in C units: 1+3+1+1+1+1+4+4+1+1 = 18), norm stats (4 per row),
        // attention's log-sum-exp (NH per row; no (T, T) scores are kept)
        let per_layer = f * (bt * (7 * c + qkv + fc + act) + 4 * bt + bt * nh);
        // encoded, lnf (+stats), logits, losses, tokens, targets, weights
        let top = f * (2 * bt * c + 2 * bt + bt * v + 4 * bt);
        // gradient scratch: dres, dln, dqkv, datty, dfch, dfch_act, attention's delta
        // (NH per row); the logits' gradient is written over the logits
        let scratch = f * (bt * (3 * c + qkv + fc + act) + bt * nh);
        // two moments, and a weight-decay bit per parameter
        let optimizer = 2 * params + f * (self.num_params() as u64).div_ceil(32);
        MemoryEstimate { params, grads: params, optimizer, activations: l * per_layer + top + scratch }
    }

    /// The largest single buffer training at B × T allocates (checked against the
    /// device's maxStorageBufferBindingSize).
    pub fn largest_buffer(&self, b: usize, t: usize) -> u64 {
        let params = self.num_params() as u64;
        (4 * params).max(self.largest_activation(b, t))
    }

    /// SmolLM2-135M's config.json, as Kiln reads it, with the context given (the
    /// benchmarks' model of a real size).
    pub fn smollm2_135m(context: usize) -> GptConfig {
        let shape = LlamaShape {
            arch: LlamaArch::Llama,
            n_kv_head: 3,
            intermediate_size: 1536,
            qkv_bias: false,
            tie_word_embeddings: true,
            rms_norm_eps: 1e-5,
            rope_theta: 100_000.0,
            rope_scaling: RopeScaling::None,
        };
        GptConfig { family: Family::Llama(shape), ..GptConfig::gpt2(49_152, context, 30, 9, 576) }
    }

    /// The largest activation buffer training at B × T allocates: the logits (BT, V) or
    /// the MLP's first product (BT, FC).
    pub fn largest_activation(&self, b: usize, t: usize) -> u64 {
        // in u64: on wasm32 a product of usizes wraps past 4 Gi
        let (b, t, v, fc) = (b as u64, t as u64, self.vocab_size as u64, self.mlp_in_width() as u64);
        4 * (b * t * v).max(b * t * fc)
    }
}

impl std::fmt::Display for GptConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(l) = self.llama() {
            write!(f, "{} ({} key/value heads): ", l.arch.names().0, l.n_kv_head)?;
        }
        write!(
            f,
            "{} layers × {} heads × {} wide, context {}, vocabulary {}",
            self.n_layer, self.n_head, self.n_embd, self.block_size, self.vocab_size
        )
    }
}

/// Device memory by part, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEstimate {
    pub params: u64,
    pub grads: u64,
    /// AdamW's two moments and its weight-decay mask.
    pub optimizer: u64,
    pub activations: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.params + self.grads + self.optimizer + self.activations
    }
}

impl std::fmt::Display for MemoryEstimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |x: u64| x as f64 / (1u64 << 20) as f64;
        write!(
            f,
            "{:.1} MiB (params {:.1}, grads {:.1}, AdamW {:.1}, activations {:.1})",
            mib(self.total()),
            mib(self.params),
            mib(self.grads),
            mib(self.optimizer),
            mib(self.activations)
        )
    }
}
