//! A Kiln model as llama.cpp reads it: the GPT-2 family as llama.cpp's "gpt2"
//! architecture, the Llama family as "llama" (Llama, Mistral) or "qwen2"; the tokenizer
//! (byte-level BPE: tokens, token types, merges, special ids) and the chat template in the
//! `tokenizer.ggml.*` and `tokenizer.chat_template` keys. A scalar head (a reward model's
//! score, a policy's value head) is not part of the language model and is left out.
//!
//! What changes on the way in:
//! - GPT-2's Conv1D weights are stored (in, out); ggml wants (out, in) rows, as nn.Linear.
//! - transformers' Llama rotates the two halves of each head (`rotate_half`); llama.cpp's
//!   "llama" rotates adjacent pairs, so q_proj's and k_proj's rows are reordered within
//!   each head: row (i, j) of a head (i < 2 halves, j < HS/2) becomes row (j, i). Qwen2
//!   runs in llama.cpp's half-rotating ("neox") mode and is stored as it is.
//! - Llama 3's scaled frequencies become `rope_freqs.weight` (HS/2): each frequency's
//!   divisor.
//! - Vectors (norms, biases) stay f32 whatever the encoding; a matrix whose rows are not
//!   whole Q8_0 blocks is stored f16.

use serde_json::Value as Json;

use super::{bad, Encoding, Tensor, Value};
use crate::cpu::rope::{rope_inv_freq, RopeScaling};
use crate::error::Result;
use crate::model::{Family, GptConfig, LlamaArch, ParamLayout};
use crate::tokenizer::{TokenRoles, Tokenizer};

/// What goes into a GGUF file: the model as Kiln holds it, and its chat template's source.
pub struct GgufModel<'a> {
    pub name: &'a str,
    pub config: &'a GptConfig,
    pub layout: &'a ParamLayout,
    /// The flat parameters of `layout` (a LoRA model's adapters merged in).
    pub params: &'a [f32],
    pub tokenizer: &'a Tokenizer,
    pub roles: &'a TokenRoles,
    pub chat_template: &'a str,
}

/// `general.file_type`: all f32, mostly f16, mostly Q8_0 (llama.cpp's `llama_ftype`).
fn file_type(e: Encoding) -> u32 {
    match e {
        Encoding::F32 => 0,
        Encoding::F16 => 1,
        Encoding::Q8_0 => 7,
    }
}

/// The encoding names the CLI and the JS API take.
pub fn parse_encoding(name: &str) -> Result<Encoding> {
    match name.to_ascii_lowercase().as_str() {
        "f32" => Ok(Encoding::F32),
        "f16" => Ok(Encoding::F16),
        "q8_0" | "q8" => Ok(Encoding::Q8_0),
        _ => Err(crate::error::KilnError::Config(format!("GGUF tensor type {name:?}: Kiln writes f32, f16 and q8_0"))),
    }
}

/// A model folder (a Hugging Face folder Kiln reads, LoRA adapters beside it merged in) as
/// one GGUF file, its matrices in `encoding`.
pub fn folder_gguf(files: &crate::data::Files, encoding: Encoding, name: &str) -> Result<Vec<u8>> {
    let loaded = crate::checkpoint::load_model(files)?;
    let template = loaded.chat_template.as_ref().map_or(crate::data::chat::CHAT_TEMPLATE, |t| t.source());
    let model = GgufModel {
        name,
        config: &loaded.config,
        layout: &loaded.layout,
        params: &loaded.params,
        tokenizer: &loaded.tokenizer,
        roles: &loaded.roles,
        chat_template: template,
    };
    model_gguf(&model, encoding)
}

/// The model as one GGUF file, its matrices in `encoding`.
pub fn model_gguf(m: &GgufModel, encoding: Encoding) -> Result<Vec<u8>> {
    let arch = match &m.config.family {
        Family::Gpt2 => "gpt2",
        Family::Llama(l) if l.arch == LlamaArch::Qwen2 => "qwen2",
        Family::Llama(_) => "llama",
    };
    let mut kv: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::Str(arch.into())),
        ("general.name".into(), Value::Str(m.name.into())),
        ("general.file_type".into(), Value::U32(file_type(encoding))),
        ("general.quantization_version".into(), Value::U32(2)),
        ("general.alignment".into(), Value::U32(super::DEFAULT_ALIGNMENT as u32)),
    ];
    kv.extend(shape_keys(arch, m.config));
    kv.extend(tokenizer_keys(m)?);
    let tensors = tensors(m, encoding)?;
    super::write(&kv, &tensors)
}

/// The architecture's sizes, under its own prefix.
fn shape_keys(arch: &str, cfg: &GptConfig) -> Vec<(String, Value)> {
    let u = |n: usize| Value::U32(n as u32);
    let mut keys = vec![
        ("context_length", u(cfg.block_size)),
        ("embedding_length", u(cfg.n_embd)),
        ("block_count", u(cfg.n_layer)),
        ("attention.head_count", u(cfg.n_head)),
    ];
    match &cfg.family {
        Family::Gpt2 => keys.extend([
            ("feed_forward_length", u(4 * cfg.n_embd)),
            ("attention.layer_norm_epsilon", Value::F32(crate::cpu::layernorm::LAYERNORM_EPS as f32)),
        ]),
        Family::Llama(l) => keys.extend([
            ("vocab_size", u(cfg.vocab_size)),
            ("feed_forward_length", u(l.intermediate_size)),
            ("attention.head_count_kv", u(l.n_kv_head)),
            ("rope.dimension_count", u(cfg.head_size())),
            ("attention.layer_norm_rms_epsilon", Value::F32(l.rms_norm_eps as f32)),
            ("rope.freq_base", Value::F32(l.rope_theta as f32)),
        ]),
    }
    keys.into_iter().map(|(k, v)| (format!("{arch}.{k}"), v)).collect()
}

/// tokenizer.json's pre-tokenizer as llama.cpp names it (`tokenizer.ggml.pre`): GPT-2's
/// byte-level split (Kiln's own), Llama 3's and Qwen2's regular expressions. Any other
/// splits text differently in llama.cpp than here, so it is refused.
fn pre_tokenizer(json: &Json) -> Result<&'static str> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let pre = &json["pre_tokenizer"];
    let kind = |v: &Json| v["type"].as_str().unwrap_or_default().to_string();
    let byte_level_regex = |v: &Json| kind(v) == "ByteLevel" && v["use_regex"].as_bool().unwrap_or(true);
    if byte_level_regex(pre) {
        return Ok("gpt-2");
    }
    if let Some(seq) = pre["pretokenizers"].as_array() {
        let split = seq.iter().find(|p| kind(p) == "Split").and_then(|p| p["pattern"]["Regex"].as_str());
        let byte_level = seq.iter().any(|p| kind(p) == "ByteLevel");
        match split {
            Some(LLAMA3) if byte_level => return Ok("llama-bpe"),
            Some(QWEN2) if byte_level => return Ok("qwen2"),
            _ => {}
        }
        if seq.len() == 1 && byte_level_regex(&seq[0]) {
            return Ok("gpt-2");
        }
    }
    Err(bad(format!(
        "the tokenizer's pre-tokenizer ({}) is not one llama.cpp splits text the same way with; Kiln exports GPT-2's, Llama 3's and Qwen2's",
        serde_json::to_string(pre).unwrap_or_default().chars().take(200).collect::<String>()
    )))
}

/// The tokenizer in llama.cpp's keys: byte-level BPE ("gpt2"), every id up to the model's
/// vocabulary (ids past the tokenizer's are `[PAD…]`, unused), control tokens typed as
/// such, the merges in rank order, the special ids, and the chat template.
fn tokenizer_keys(m: &GgufModel) -> Result<Vec<(String, Value)>> {
    let json: Json = serde_json::from_str(&m.tokenizer.to_json()?).map_err(bad)?;
    let model = &json["model"];
    if model["type"].as_str() != Some("BPE") || json["pre_tokenizer"].is_null() {
        return Err(bad(
            "export needs a byte-level BPE tokenizer (a character-level one has no llama.cpp equivalent): train the tokenizer as BPE",
        ));
    }
    let pre = pre_tokenizer(&json)?;
    let n = m.config.vocab_size;
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; n];
    const NORMAL: i32 = 1;
    const CONTROL: i32 = 3;
    const USER_DEFINED: i32 = 4;
    const UNUSED: i32 = 5;
    let vocab = model["vocab"].as_object().ok_or_else(|| bad("tokenizer.json's BPE model has no vocab"))?;
    for (token, id) in vocab {
        if let Some(slot) = id.as_u64().and_then(|id| tokens.get_mut(id as usize)) {
            *slot = Some((token.clone(), NORMAL));
        }
    }
    for t in m.tokenizer.added_tokens() {
        if let Some(slot) = tokens.get_mut(t.id as usize) {
            *slot = Some((t.content, if t.special { CONTROL } else { USER_DEFINED }));
        }
    }
    let (texts, types): (Vec<String>, Vec<i32>) =
        tokens.into_iter().enumerate().map(|(i, t)| t.unwrap_or_else(|| (format!("[PAD{i}]"), UNUSED))).unzip();
    let merges: Vec<String> = model["merges"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|m| match m {
                    Json::String(s) => Some(s.clone()),
                    Json::Array(pair) => Some(format!("{} {}", pair.first()?.as_str()?, pair.get(1)?.as_str()?)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    // the tokenizer puts the start token first itself when its post-processor says so
    // (Kiln's `<|bos|>`, Llama 3's `<|begin_of_text|>`)
    let adds_bos = json["post_processor"]["single"]
        .as_array()
        .and_then(|s| s.first())
        .is_some_and(|first| first.get("SpecialToken").is_some());
    let id = |v: u32| Value::U32(v);
    let mut kv = vec![
        ("tokenizer.ggml.model".to_string(), Value::Str("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), Value::Str(pre.into())),
        ("tokenizer.ggml.tokens".to_string(), Value::strings(texts)),
        ("tokenizer.ggml.token_type".to_string(), Value::i32s(types)),
        ("tokenizer.ggml.merges".to_string(), Value::strings(merges)),
        ("tokenizer.ggml.eos_token_id".to_string(), id(m.roles.end_of_text())),
        ("tokenizer.ggml.padding_token_id".to_string(), id(m.roles.pad)),
        ("tokenizer.ggml.add_bos_token".to_string(), Value::Bool(adds_bos)),
        ("tokenizer.ggml.add_eos_token".to_string(), Value::Bool(false)),
    ];
    if let Some(bos) = m.roles.bos {
        kv.push(("tokenizer.ggml.bos_token_id".into(), id(bos)));
    }
    // the end of a chat turn (Kiln's `<|end|>`): llama.cpp stops there too
    if let Some(&eot) = m.roles.stop.get(1) {
        kv.push(("tokenizer.ggml.eot_token_id".into(), id(eot)));
    }
    if let Some(unk) = m.tokenizer.token_to_id("<|unk|>") {
        kv.push(("tokenizer.ggml.unknown_token_id".into(), id(unk)));
    }
    kv.push(("tokenizer.chat_template".into(), Value::Str(m.chat_template.into())));
    Ok(kv)
}

/// (R, K) row-major → (K, R).
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[r * cols + c];
        }
    }
    out
}

/// (heads·HS, C) rows of q_proj or k_proj, from transformers' half rotation to llama.cpp's
/// pairwise one: within each head, row i·HS/2 + j goes to row 2j + i.
fn unrotate_halves(x: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let hs = x.len() / cols / heads;
    let mut out = vec![0.0; x.len()];
    for h in 0..heads {
        for i in 0..2 {
            for j in 0..hs / 2 {
                let from = (h * hs + i * hs / 2 + j) * cols;
                let to = (h * hs + 2 * j + i) * cols;
                out[to..to + cols].copy_from_slice(&x[from..from + cols]);
            }
        }
    }
    out
}

/// llama.cpp's name for a Kiln (transformers) tensor name: None
/// for tensors that are not the language model's.
fn gguf_name(name: &str) -> Option<String> {
    let whole = match name {
        "wte.weight" | "model.embed_tokens.weight" => Some("token_embd.weight"),
        "wpe.weight" => Some("position_embd.weight"),
        "ln_f.weight" | "model.norm.weight" => Some("output_norm.weight"),
        "ln_f.bias" => Some("output_norm.bias"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(n) = whole {
        return Some(n.to_string());
    }
    let rest = name.strip_prefix("h.").or_else(|| name.strip_prefix("model.layers."))?;
    let (layer, part) = rest.split_once('.')?;
    let part = match part {
        "ln_1.weight" | "input_layernorm.weight" => "attn_norm.weight",
        "ln_1.bias" => "attn_norm.bias",
        "attn.c_attn.weight" => "attn_qkv.weight",
        "attn.c_attn.bias" => "attn_qkv.bias",
        "attn.c_proj.weight" | "self_attn.o_proj.weight" => "attn_output.weight",
        "attn.c_proj.bias" => "attn_output.bias",
        "ln_2.weight" | "post_attention_layernorm.weight" => "ffn_norm.weight",
        "ln_2.bias" => "ffn_norm.bias",
        "mlp.c_fc.weight" | "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.c_fc.bias" => "ffn_up.bias",
        "mlp.c_proj.weight" | "mlp.down_proj.weight" => "ffn_down.weight",
        "mlp.c_proj.bias" => "ffn_down.bias",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        _ => return None,
    };
    Some(format!("blk.{layer}.{part}"))
}

/// Every language-model tensor under its llama.cpp name, in llama.cpp's layout.
fn tensors(m: &GgufModel, encoding: Encoding) -> Result<Vec<Tensor>> {
    let cfg = m.config;
    let llama = cfg.llama();
    let pairwise = llama.is_some_and(|l| l.arch != LlamaArch::Qwen2);
    let mut out = Vec::new();
    for t in &m.layout.tensors {
        let Some(name) = gguf_name(&t.name) else { continue };
        let mut values = m.params[t.offset..t.offset + t.len()].to_vec();
        let mut shape = t.shape.clone();
        let conv1d = llama.is_none() && shape.len() == 2 && t.name.starts_with("h.");
        if conv1d {
            values = transpose(&values, shape[0], shape[1]);
            shape.swap(0, 1);
        }
        if pairwise && (t.name.ends_with("q_proj.weight") || t.name.ends_with("k_proj.weight")) {
            let heads = if t.name.ends_with("q_proj.weight") { cfg.n_head } else { llama.map_or(0, |l| l.n_kv_head) };
            values = unrotate_halves(&values, heads, shape[1]);
        }
        out.push(tensor(name, shape, values, encoding));
    }
    // llama.cpp reads GPT-2's output layer as its own tensor: the tied embedding again
    if llama.is_none() {
        let wte = m.layout.tensors.iter().find(|t| t.offset == m.layout.wte).expect("the embedding");
        let values = m.params[wte.offset..wte.offset + wte.len()].to_vec();
        out.push(tensor("output.weight".into(), wte.shape.clone(), values, encoding));
    }
    if let Some(l) = llama {
        if let RopeScaling::Llama3 { .. } = l.rope_scaling {
            let plain = rope_inv_freq(cfg.head_size(), l.rope_theta, RopeScaling::None);
            let scaled = rope_inv_freq(cfg.head_size(), l.rope_theta, l.rope_scaling);
            let divisors = plain.iter().zip(&scaled).map(|(p, s)| p / s).collect::<Vec<_>>();
            out.push(tensor("rope_freqs.weight".into(), vec![divisors.len()], divisors, Encoding::F32));
        }
    }
    Ok(out)
}

/// A tensor in `encoding` where that fits: vectors stay f32, Q8_0 needs whole blocks a row.
fn tensor(name: String, shape: Vec<usize>, values: Vec<f32>, encoding: Encoding) -> Tensor {
    let encoding = match (shape.len(), encoding) {
        (1, _) => Encoding::F32,
        (_, Encoding::Q8_0) if shape[shape.len() - 1] % super::quant::Q8_0_BLOCK != 0 => Encoding::F16,
        (_, e) => e,
    };
    Tensor { name, shape, values, encoding }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unrotating_moves_each_heads_halves_into_pairs() {
        // one head of size 4, one column: rows [a0 a1 | b0 b1] → [a0 b0 a1 b1]
        assert_eq!(unrotate_halves(&[0.0, 1.0, 10.0, 11.0], 1, 1), vec![0.0, 10.0, 1.0, 11.0]);
        assert_eq!(transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
