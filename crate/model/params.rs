//! Where each parameter lives in the one flat parameter buffer, under its Hugging Face
//! name and shape, and each family's initialisation. GPT-2's Conv1D weights are stored
//! in × out, as GPT-2 stores them; Llama's nn.Linear weights out × in, as Llama does.

use serde::{Deserialize, Serialize};

use super::config::{Family, GptConfig, LlamaShape};
use crate::rng::Rng;

/// One parameter tensor inside the flat buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamTensor {
    /// The Hugging Face name, e.g. "h.0.attn.c_attn.weight" (GPT-2) or
    /// "model.layers.0.self_attn.q_proj.weight" (Llama).
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    /// AdamW weight decay applies to matrices (embeddings and weights), not to biases or
    /// LayerNorm parameters.
    pub decay: bool,
}

impl ParamTensor {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Offsets of one block's parameters, by family.
#[derive(Clone, Debug)]
pub enum LayerParams {
    Gpt2(Gpt2Layer),
    Llama(LlamaLayer),
}

/// Offsets of a GPT-2 block's parameters.
#[derive(Clone, Debug)]
pub struct Gpt2Layer {
    pub ln_1_weight: usize,
    pub ln_1_bias: usize,
    pub c_attn_weight: usize,    // (C, 3C)
    pub c_attn_bias: usize,      // (3C)
    pub attn_proj_weight: usize, // (C, C)
    pub attn_proj_bias: usize,
    pub ln_2_weight: usize,
    pub ln_2_bias: usize,
    pub c_fc_weight: usize,     // (C, 4C)
    pub c_fc_bias: usize,       // (4C)
    pub mlp_proj_weight: usize, // (4C, C)
    pub mlp_proj_bias: usize,
}

/// Offsets of a Llama block's parameters (nn.Linear weights, out × in). q, k and v lie
/// one after another, so together they are one (QKV, C) weight, QKV = C + 2·NKV·HS, and
/// their biases one (QKV) bias; gate and up likewise one (2H, C) weight, rows [gate; up].
#[derive(Clone, Debug)]
pub struct LlamaLayer {
    pub input_layernorm: usize,          // (C)
    pub qkv_weight: usize,               // (QKV, C): q_proj (C, C), k_proj (KVC, C), v_proj (KVC, C)
    pub qkv_bias: Option<usize>,         // (QKV)
    pub o_proj: usize,                   // (C, C)
    pub post_attention_layernorm: usize, // (C)
    pub gate_up: usize,                  // (2H, C): gate_proj (H, C), up_proj (H, C)
    pub down_proj: usize,                // (C, H)
}

/// The whole layout: GPT-2's tensors in GPT-2's order. The trunk is all of them; the
/// language-model head has no tensors of its own (it is tied to `wte`). A scalar head
/// (reward or value) appends its tensors after `ln_f`, so the first `total` elements
/// stay a GPT-2 that transformers loads.
#[derive(Clone, Debug)]
pub struct ParamLayout {
    pub tensors: Vec<ParamTensor>,
    pub total: usize,
    pub wte: usize, // (V, C) the token embedding
    /// (block_size, C) learned positions (GPT-2; Llama's are rotary, in attention).
    pub wpe: Option<usize>,
    pub layers: Vec<LayerParams>,
    pub ln_f_weight: usize,
    /// The final LayerNorm's bias (GPT-2; RMSNorm has none).
    pub ln_f_bias: Option<usize>,
    /// (V, C) the output layer: `wte` itself when tied, else `lm_head.weight`.
    pub lm_head: usize,
    /// The scalar head's tensors, when the model has one.
    pub scalar_head: Option<ScalarHeadParams>,
}

/// What a scalar head reads out: a reward (the score of a whole answer, at its last
/// token) or a value (PPO's estimate of the return, at every answer token).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScalarHeadKind {
    Reward,
    Value,
}

impl ScalarHeadKind {
    /// The tensor names' prefix: transformers' `GPT2ForSequenceClassification` calls its
    /// head "score", TRL's value head is "v_head".
    pub fn prefix(self) -> &'static str {
        match self {
            ScalarHeadKind::Reward => "score",
            ScalarHeadKind::Value => "v_head",
        }
    }
}

/// Offsets of a scalar head: value (n) = features (n, C) · weightᵀ + bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScalarHeadParams {
    pub kind: ScalarHeadKind,
    pub weight: usize, // (1, C), nn.Linear's (out, in)
    pub bias: usize,   // (1)
}

/// Lays tensors out one after another from `total` on (weight decay on matrices, not on
/// vectors), returning each one's offset.
fn appender<'a>(
    tensors: &'a mut Vec<ParamTensor>,
    total: &'a mut usize,
) -> impl FnMut(String, Vec<usize>) -> usize + 'a {
    move |name, shape| {
        let decay = shape.len() >= 2;
        let offset = *total;
        *total += shape.iter().product::<usize>();
        tensors.push(ParamTensor { name, shape, offset, decay });
        offset
    }
}

impl ParamLayout {
    pub fn new(cfg: &GptConfig) -> ParamLayout {
        match &cfg.family {
            Family::Gpt2 => Self::gpt2(cfg),
            Family::Llama(shape) => Self::llama(cfg, shape),
        }
    }

    fn gpt2(cfg: &GptConfig) -> ParamLayout {
        let (v, t, c) = (cfg.vocab_size, cfg.block_size, cfg.n_embd);
        let (mut tensors, mut total) = (Vec::new(), 0);
        let mut add = appender(&mut tensors, &mut total);
        let wte = add("wte.weight".into(), vec![v, c]);
        let wpe = add("wpe.weight".into(), vec![t, c]);
        let mut layers = Vec::new();
        for l in 0..cfg.n_layer {
            let mut p = |suffix: &str, shape: Vec<usize>| add(format!("h.{l}.{suffix}"), shape);
            layers.push(LayerParams::Gpt2(Gpt2Layer {
                ln_1_weight: p("ln_1.weight", vec![c]),
                ln_1_bias: p("ln_1.bias", vec![c]),
                c_attn_weight: p("attn.c_attn.weight", vec![c, 3 * c]),
                c_attn_bias: p("attn.c_attn.bias", vec![3 * c]),
                attn_proj_weight: p("attn.c_proj.weight", vec![c, c]),
                attn_proj_bias: p("attn.c_proj.bias", vec![c]),
                ln_2_weight: p("ln_2.weight", vec![c]),
                ln_2_bias: p("ln_2.bias", vec![c]),
                c_fc_weight: p("mlp.c_fc.weight", vec![c, 4 * c]),
                c_fc_bias: p("mlp.c_fc.bias", vec![4 * c]),
                mlp_proj_weight: p("mlp.c_proj.weight", vec![4 * c, c]),
                mlp_proj_bias: p("mlp.c_proj.bias", vec![c]),
            }));
        }
        let ln_f_weight = add("ln_f.weight".into(), vec![c]);
        let ln_f_bias = add("ln_f.bias".into(), vec![c]);
        drop(add); // gives tensors and total back
        debug_assert_eq!(total, cfg.num_params());
        ParamLayout {
            tensors,
            total,
            wte,
            wpe: Some(wpe),
            layers,
            ln_f_weight,
            ln_f_bias: Some(ln_f_bias),
            lm_head: wte,
            scalar_head: None,
        }
    }

    /// transformers' LlamaForCausalLM (and Qwen2's, Mistral's) names, so the flat buffer's
    /// tensors are a state dict `save_pretrained` would write. nn.Linear weights stay out ×
    /// in; the model reads q|k|v and gate|up as one weight each (see [`LlamaLayer`]).
    fn llama(cfg: &GptConfig, shape: &LlamaShape) -> ParamLayout {
        let (v, c, h) = (cfg.vocab_size, cfg.n_embd, shape.intermediate_size);
        let kvc = shape.n_kv_head * cfg.head_size();
        let (mut tensors, mut total) = (Vec::new(), 0);
        let mut add = appender(&mut tensors, &mut total);
        let wte = add("model.embed_tokens.weight".into(), vec![v, c]);
        let mut layers = Vec::new();
        for l in 0..cfg.n_layer {
            let mut p = |suffix: &str, shape: Vec<usize>| add(format!("model.layers.{l}.{suffix}"), shape);
            let input_layernorm = p("input_layernorm.weight", vec![c]);
            let qkv_weight = p("self_attn.q_proj.weight", vec![c, c]);
            p("self_attn.k_proj.weight", vec![kvc, c]);
            p("self_attn.v_proj.weight", vec![kvc, c]);
            let qkv_bias = shape.qkv_bias.then(|| {
                let q = p("self_attn.q_proj.bias", vec![c]);
                p("self_attn.k_proj.bias", vec![kvc]);
                p("self_attn.v_proj.bias", vec![kvc]);
                q
            });
            let o_proj = p("self_attn.o_proj.weight", vec![c, c]);
            let post_attention_layernorm = p("post_attention_layernorm.weight", vec![c]);
            let gate_up = p("mlp.gate_proj.weight", vec![h, c]);
            p("mlp.up_proj.weight", vec![h, c]);
            let down_proj = p("mlp.down_proj.weight", vec![c, h]);
            layers.push(LayerParams::Llama(LlamaLayer {
                input_layernorm,
                qkv_weight,
                qkv_bias,
                o_proj,
                post_attention_layernorm,
                gate_up,
                down_proj,
            }));
        }
        let ln_f_weight = add("model.norm.weight".into(), vec![c]);
        let lm_head = if shape.tie_word_embeddings { wte } else { add("lm_head.weight".into(), vec![v, c]) };
        drop(add); // gives tensors and total back
        debug_assert_eq!(total, cfg.num_params());
        ParamLayout { tensors, total, wte, wpe: None, layers, ln_f_weight, ln_f_bias: None, lm_head, scalar_head: None }
    }

    /// GPT-2's tensors followed by a scalar head's, so the first `cfg.num_params()`
    /// elements are still a GPT-2 that transformers loads.
    pub fn with_scalar_head(cfg: &GptConfig, kind: ScalarHeadKind) -> ParamLayout {
        let mut layout = ParamLayout::new(cfg);
        let c = cfg.n_embd;
        let mut add = |name: String, shape: Vec<usize>, decay: bool| {
            let offset = layout.total;
            layout.total += shape.iter().product::<usize>();
            layout.tensors.push(ParamTensor { name, shape, offset, decay });
            offset
        };
        let weight = add(format!("{}.weight", kind.prefix()), vec![1, c], true);
        let bias = add(format!("{}.bias", kind.prefix()), vec![1], false);
        layout.scalar_head = Some(ScalarHeadParams { kind, weight, bias });
        layout
    }

    pub fn get(&self, name: &str) -> Option<&ParamTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// GPT-2's initialisation: weights and embeddings N(0, 0.02), the two residual
    /// projections (c_proj) N(0, 0.02/√(2·n_layer)), biases 0, LayerNorm weights 1.
    /// Llama's is transformers' (`initializer_range` 0.02 for every matrix, no scaled
    /// projections, norms 1), which the same rules give: its residual projections are
    /// named o_proj and down_proj, and its norms end in "layernorm.weight" or "norm.weight".
    pub fn init(&self, cfg: &GptConfig, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut params = vec![0.0f32; self.total];
        let proj_std = 0.02 / ((2 * cfg.n_layer) as f64).sqrt();
        for t in &self.tensors {
            let values = &mut params[t.offset..t.offset + t.len()];
            if t.name.ends_with("c_proj.weight") {
                values.iter_mut().for_each(|x| *x = (rng.normal() * proj_std) as f32);
            } else if t.decay {
                values.iter_mut().for_each(|x| *x = (rng.normal() * 0.02) as f32);
            } else if (t.name.contains("ln_") || t.name.ends_with("norm.weight")) && t.name.ends_with(".weight") {
                values.iter_mut().for_each(|x| *x = 1.0);
            }
        }
        params
    }
}
