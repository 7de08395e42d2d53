//! A Hugging Face `config.json`, read and written: GPT-2's (`GPT2LMHeadModel`) and the
//! Llama family's (`LlamaForCausalLM`, `Qwen2ForCausalLM`, `MistralForCausalLM`). The file
//! comes from strangers: every field is checked, and what Kiln's blocks do not compute
//! exactly (another activation, o_proj or MLP biases, a sliding window shorter than the
//! context, another RoPE scaling) is refused by name rather than run approximately.

use serde_json::{json, Value};

use super::config::{Family, GptConfig, LlamaArch, LlamaShape, MAX_CONTEXT};
use crate::cpu::rope::RopeScaling;
use crate::error::{KilnError, Result};

fn bad(message: impl Into<String>) -> KilnError {
    KilnError::Checkpoint(message.into())
}

/// The family a config.json names, by `architectures` (first entry) or `model_type`.
enum Arch {
    Gpt2,
    Llama(LlamaArch),
}

fn arch_of(v: &Value) -> Result<Arch> {
    let class = v.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str);
    let model_type = v.get("model_type").and_then(Value::as_str);
    let arch = match (class, model_type) {
        // a reward model is GPT-2 with a score head (its tensors say which)
        (Some("GPT2LMHeadModel" | "GPT2ForSequenceClassification"), _) | (None, Some("gpt2")) => Arch::Gpt2,
        (Some("LlamaForCausalLM"), _) | (None, Some("llama")) => Arch::Llama(LlamaArch::Llama),
        (Some("Qwen2ForCausalLM"), _) | (None, Some("qwen2")) => Arch::Llama(LlamaArch::Qwen2),
        (Some("MistralForCausalLM"), _) | (None, Some("mistral")) => Arch::Llama(LlamaArch::Mistral),
        _ => {
            let named = class.or(model_type).unwrap_or("no architecture");
            return Err(bad(format!(
                "config.json names {named:?}; Kiln reads GPT2LMHeadModel, GPT2ForSequenceClassification, LlamaForCausalLM, Qwen2ForCausalLM and MistralForCausalLM"
            )));
        }
    };
    Ok(arch)
}

/// A whole number field.
fn uint(v: &Value, name: &str) -> Result<usize> {
    v.get(name)
        .and_then(Value::as_u64)
        .map(|x| x as usize)
        .ok_or_else(|| bad(format!("config.json lacks a whole number {name}")))
}

/// A number field, or its default when absent (null counts as absent).
fn number_or(v: &Value, name: &str, default: f64) -> Result<f64> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x.as_f64().ok_or_else(|| bad(format!("config.json's {name} is not a number"))),
    }
}

fn bool_or(v: &Value, name: &str, default: bool) -> Result<bool> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => x.as_bool().ok_or_else(|| bad(format!("config.json's {name} is not true or false"))),
    }
}

/// The model's configuration from its config.json, checked.
pub fn config_from_hf(json: &[u8]) -> Result<GptConfig> {
    let v: Value = serde_json::from_slice(json).map_err(|e| bad(format!("config.json is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(bad("config.json is not a JSON object"));
    }
    let cfg = match arch_of(&v)? {
        Arch::Gpt2 => GptConfig::gpt2(
            uint(&v, "vocab_size")?,
            uint(&v, "n_positions")?,
            uint(&v, "n_layer")?,
            uint(&v, "n_head")?,
            uint(&v, "n_embd")?,
        ),
        Arch::Llama(arch) => llama_from_hf(&v, arch)?,
    };
    cfg.validate().map_err(|e| bad(format!("config.json: {e}")))?;
    Ok(cfg)
}

fn llama_from_hf(v: &Value, arch: LlamaArch) -> Result<GptConfig> {
    let (c, n_head) = (uint(v, "hidden_size")?, uint(v, "num_attention_heads")?);
    let n_kv_head = match v.get("num_key_value_heads") {
        None | Some(Value::Null) => n_head,
        Some(_) => uint(v, "num_key_value_heads")?,
    };
    if n_head == 0 || c % n_head != 0 {
        return Err(bad(format!("config.json: hidden_size {c} is not a multiple of num_attention_heads {n_head}")));
    }
    if let Some(head_dim) = v.get("head_dim").filter(|x| !x.is_null()) {
        if head_dim.as_u64() != Some((c / n_head) as u64) {
            return Err(bad(format!(
                "config.json: head_dim {head_dim} differs from hidden_size / num_attention_heads = {}; Kiln's attention needs them equal",
                c / n_head
            )));
        }
    }
    let act = v.get("hidden_act").and_then(Value::as_str).unwrap_or("silu");
    if act != "silu" {
        return Err(bad(format!("config.json: hidden_act {act:?}; the Llama family's MLP is SwiGLU (\"silu\")")));
    }
    if bool_or(v, "mlp_bias", false)? {
        return Err(bad("config.json: mlp_bias true is not supported (Llama's MLP has no biases)"));
    }
    // Llama's attention_bias puts biases on q, k, v and o; Qwen2 has them on q, k, v only
    let qkv_bias = match arch {
        LlamaArch::Qwen2 => true,
        _ if bool_or(v, "attention_bias", false)? => {
            return Err(bad("config.json: attention_bias true (biases on o_proj too) is not supported"));
        }
        _ => false,
    };
    // A sliding window as long as the context is no window: the context is cut to it.
    let mut block_size = uint(v, "max_position_embeddings")?.min(MAX_CONTEXT);
    let windowed = match arch {
        LlamaArch::Qwen2 => bool_or(v, "use_sliding_window", false)?,
        _ => true,
    };
    if windowed {
        if let Some(window) = v.get("sliding_window").filter(|x| !x.is_null()) {
            let window = window.as_u64().ok_or_else(|| bad("config.json's sliding_window is not a whole number"))?;
            block_size = block_size.min(window as usize);
        }
    }
    // transformers 5 keeps rope_theta inside rope_parameters; older configs beside it
    let rope = v.get("rope_parameters").or_else(|| v.get("rope_scaling")).filter(|x| !x.is_null());
    let rope_theta = match rope.and_then(|r| r.get("rope_theta")) {
        Some(theta) => theta.as_f64().ok_or_else(|| bad("config.json's rope_theta is not a number"))?,
        None => number_or(v, "rope_theta", 10_000.0)?,
    };
    let rope_scaling = match rope {
        None => RopeScaling::None,
        Some(r) => {
            let kind = r.get("rope_type").or_else(|| r.get("type")).and_then(Value::as_str).unwrap_or("default");
            match kind {
                "default" => RopeScaling::None,
                "llama3" => {
                    let need = |name: &str| {
                        r.get(name)
                            .and_then(Value::as_f64)
                            .filter(|x| x.is_finite() && *x > 0.0)
                            .ok_or_else(|| bad(format!("config.json: llama3 RoPE scaling lacks a positive {name}")))
                    };
                    RopeScaling::Llama3 {
                        factor: need("factor")?,
                        low_freq_factor: need("low_freq_factor")?,
                        high_freq_factor: need("high_freq_factor")?,
                        original_max_position_embeddings: need("original_max_position_embeddings")?,
                    }
                }
                other => {
                    return Err(bad(format!(
                        "config.json: RoPE scaling {other:?} is not supported (Kiln computes the plain and the llama3 kind)"
                    )))
                }
            }
        }
    };
    let shape = LlamaShape {
        arch,
        n_kv_head,
        intermediate_size: uint(v, "intermediate_size")?,
        qkv_bias,
        tie_word_embeddings: bool_or(v, "tie_word_embeddings", false)?,
        rms_norm_eps: number_or(v, "rms_norm_eps", 1e-6)?,
        rope_theta,
        rope_scaling,
    };
    Ok(GptConfig {
        vocab_size: uint(v, "vocab_size")?,
        block_size,
        n_layer: uint(v, "num_hidden_layers")?,
        n_head,
        n_embd: c,
        family: Family::Llama(shape),
    })
}

/// The transformers class a model of `cfg` loads as.
pub fn architecture(cfg: &GptConfig) -> &'static str {
    cfg.llama().map_or("GPT2LMHeadModel", |l| l.arch.names().0)
}

/// transformers' config for a model of `cfg`, with the special tokens' ids given.
pub fn hf_config(cfg: &GptConfig, bos: u32, eos: u32, pad: u32) -> Value {
    let Some(l) = cfg.llama() else {
        return json!({
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": cfg.vocab_size,
            "n_positions": cfg.block_size,
            "n_ctx": cfg.block_size,
            "n_embd": cfg.n_embd,
            "n_layer": cfg.n_layer,
            "n_head": cfg.n_head,
            "n_inner": null,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": crate::cpu::layernorm::LAYERNORM_EPS,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "initializer_range": 0.02,
            "tie_word_embeddings": true,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": pad,
            "torch_dtype": "float32",
        });
    };
    let (class, model_type) = l.arch.names();
    let rope_scaling = match l.rope_scaling {
        RopeScaling::None => Value::Null,
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => json!({
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings as u64,
        }),
    };
    let mut v = json!({
        "architectures": [class],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.n_embd,
        "intermediate_size": l.intermediate_size,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": l.n_kv_head,
        "head_dim": cfg.head_size(),
        "max_position_embeddings": cfg.block_size,
        "hidden_act": "silu",
        "rms_norm_eps": l.rms_norm_eps,
        "rope_theta": l.rope_theta,
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": l.tie_word_embeddings,
        "initializer_range": 0.02,
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "torch_dtype": "float32",
    });
    match l.arch {
        LlamaArch::Llama => {
            v["attention_bias"] = json!(false);
            v["mlp_bias"] = json!(false);
        }
        LlamaArch::Qwen2 => v["use_sliding_window"] = json!(false),
        LlamaArch::Mistral => v["sliding_window"] = Value::Null,
    }
    v
}
