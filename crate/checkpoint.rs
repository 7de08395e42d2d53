//! Checkpoints. A model folder is what Hugging Face transformers loads with
//! `GPT2LMHeadModel.from_pretrained` and `PreTrainedTokenizerFast.from_pretrained`:
//! model.safetensors (GPT-2 tensor names, f32), config.json, tokenizer.json,
//! tokenizer_config.json (with the chat template), generation_config.json (where
//! `generate` stops, and Kiln's sampling defaults). A resume checkpoint (`train::resume`)
//! adds the optimizer state, trainer.json (the stage, its step and data position) and the
//! stage's data (corpus.txt, sft-*.jsonl, rankings-*.jsonl, ppo-prompts.jsonl …), and a
//! session's snapshot the models it keeps (reference.safetensors, reward.safetensors), so
//! the stage continues bit-exactly.
//!
//! Everything is built as (file name, bytes) pairs, so the browser can zip them; natively
//! [`write_dir`] writes them into a temporary folder first and renames it into place, so a
//! crash never leaves half a checkpoint.

use std::collections::HashMap;
use std::sync::Arc;

use safetensors::SafeTensors;

use crate::data::template::{special_tokens_from_config, ChatTemplate};
use crate::error::{KilnError, Result};
use crate::model::hf_config::{config_from_hf, hf_config};
use crate::model::{GptConfig, ParamLayout, ScalarHeadKind};
use crate::sample::SampleConfig;
use crate::tokenizer::{TokenRoles, Tokenizer, BOS, EOS, PAD, SPECIAL_TOKENS};

pub use crate::data::Files;

pub(crate) fn bad(m: impl std::fmt::Display) -> KilnError {
    KilnError::Checkpoint(m.to_string())
}

pub(crate) use crate::tensors::{f32_bytes, read_f32, safetensors_of};

/// The largest weight magnitude a model file may hold. Trained GPT-2 weights stay within
/// tens; weights of 1e30 are finite but overflow the first layer to infinity.
const MAX_WEIGHT: f32 = 1e5;

/// One flat f32 tensor ("params") as a safetensors file: the models a session keeps beside
/// the one training (the fine-tuned reference, the reward model).
pub fn params_file(values: &[f32]) -> Result<Vec<u8>> {
    safetensors_of(vec![("params".into(), vec![values.len()], f32_bytes(values))])
}

/// Reads [`params_file`]'s tensor back, which must hold `len` values.
pub fn read_params_file(bytes: &[u8], len: usize, file: &str) -> Result<Vec<f32>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("{file} is corrupt: {e}")))?;
    read_f32(&st, &["params".into()], &[len], file, MAX_WEIGHT)
}

/// The Hugging Face model folder for these parameters (GPT-2's tensors, then a scalar
/// head's when `layout` has one), with Kiln's own generation_config.json.
pub fn model_files(cfg: &GptConfig, layout: &ParamLayout, tokenizer: &Tokenizer, params: &[f32]) -> Result<Files> {
    model_files_keeping(cfg, layout, tokenizer, params, None)
}

/// [`model_files`], with `kept` (an imported model's own generation_config.json, as
/// [`LoadedModel::generation_config`] holds it) written in place of Kiln's, Kiln's stop
/// ids added to it ([`generation_config`]).
pub fn model_files_keeping(
    cfg: &GptConfig,
    layout: &ParamLayout,
    tokenizer: &Tokenizer,
    params: &[f32],
    kept: Option<&serde_json::Value>,
) -> Result<Files> {
    let reward = layout.scalar_head.filter(|h| h.kind == ScalarHeadKind::Reward);
    let classifier = reward.map(|head| fold_score_bias(layout, head, params));
    let values = classifier.as_ref().map_or(params, |c| &c.params);
    let tensors = layout
        .tensors
        .iter()
        .filter(|t| classifier.is_none() || t.name != "score.bias")
        .map(|t| (t.name.clone(), t.shape.clone(), f32_bytes(&values[t.offset..t.offset + t.len()])))
        .collect();
    let mut config = hf_config(cfg, BOS, EOS, PAD);
    if classifier.is_some() {
        config["architectures"] = serde_json::json!(["GPT2ForSequenceClassification"]);
        config["num_labels"] = 1.into();
        config["id2label"] = serde_json::json!({"0": "LABEL_0"});
        config["label2id"] = serde_json::json!({"LABEL_0": 0});
    }
    let tokenizer_config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIAL_TOKENS[crate::tokenizer::BOS as usize],
        "eos_token": SPECIAL_TOKENS[crate::tokenizer::EOS as usize],
        "pad_token": SPECIAL_TOKENS[crate::tokenizer::PAD as usize],
        "unk_token": SPECIAL_TOKENS[crate::tokenizer::UNK as usize],
        "model_max_length": cfg.block_size,
        "chat_template": crate::data::chat::CHAT_TEMPLATE,
    });
    let json = |v: &serde_json::Value| serde_json::to_vec_pretty(v).expect("JSON");
    let mut files = HashMap::from([
        ("model.safetensors".to_string(), safetensors_of(tensors)?),
        ("config.json".to_string(), json(&config)),
        ("tokenizer.json".to_string(), tokenizer.to_json()?.into_bytes()),
        ("tokenizer_config.json".to_string(), json(&tokenizer_config)),
        (GENERATION_CONFIG.to_string(), json(&generation_config(kept))),
    ]);
    if let Some(c) = classifier {
        files.insert(REWARD_HEAD.to_string(), c.exact);
    }
    Ok(files)
}

/// Beside a reward model folder: the final LayerNorm's bias and the score's bias exactly as
/// trained, with the folded bias they became (`folded`), so Kiln puts them back bit for
/// bit (a resumed run continues exactly) while the folder stays transformers' classifier.
pub const REWARD_HEAD: &str = "kiln-reward-head.safetensors";

/// A reward model's parameters with the score's bias folded away, and the exact values.
struct Classifier {
    params: Vec<f32>,
    exact: Vec<u8>,
}

/// transformers' GPT2ForSequenceClassification scores with `score.weight` alone (no bias):
/// score = w · (n ⊙ γ + β) + b, where n is the normalised features and β `ln_f.bias`. The
/// bias moves into β along w: β' = β + b·w / (w·w), so w · β' = w · β + b and every score
/// stays the same (to f32 rounding). Only the score head reads β' in a classifier (it
/// has no language-model head). A zero w leaves nothing to fold into (b is dropped).
fn fold_score_bias(layout: &ParamLayout, head: crate::model::params::ScalarHeadParams, params: &[f32]) -> Classifier {
    let c = layout.tensors.iter().find(|t| t.offset == layout.ln_f_weight).map_or(0, |t| t.len());
    let beta = layout.ln_f_bias.expect("GPT-2 has a final LayerNorm bias");
    let w = &params[head.weight..head.weight + c];
    let b = params[head.bias] as f64;
    let ww: f64 = w.iter().map(|&x| x as f64 * x as f64).sum();
    let mut folded = params.to_vec();
    if ww > 0.0 {
        for (i, &wi) in w.iter().enumerate() {
            folded[beta + i] = (params[beta + i] as f64 + b * wi as f64 / ww) as f32;
        }
    }
    let exact = safetensors_of(vec![
        ("ln_f.bias".into(), vec![c], f32_bytes(&params[beta..beta + c])),
        ("score.bias".into(), vec![1], f32_bytes(&params[head.bias..head.bias + 1])),
        ("folded".into(), vec![c], f32_bytes(&folded[beta..beta + c])),
    ])
    .expect("three small tensors");
    Classifier { params: folded, exact }
}

/// Puts a reward model's exact biases back ([`REWARD_HEAD`]) when the folder's `ln_f.bias`
/// is still the folded one Kiln wrote (a folder trained further elsewhere keeps its own).
fn unfold_score_bias(files: &Files, layout: &ParamLayout, params: &mut [f32]) -> Result<()> {
    let (Some(bytes), Some(head), Some(beta)) = (files.get(REWARD_HEAD), layout.scalar_head, layout.ln_f_bias) else {
        return Ok(());
    };
    let c = layout.tensors.iter().find(|t| t.offset == beta).map_or(0, |t| t.len());
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("{REWARD_HEAD} is corrupt: {e}")))?;
    let read = |name: &str, n: usize| read_f32(&st, &[name.into()], &[n], REWARD_HEAD, MAX_WEIGHT);
    let folded = read("folded", c)?;
    if folded.iter().zip(&params[beta..beta + c]).any(|(a, b)| a.to_bits() != b.to_bits()) {
        return Ok(());
    }
    params[beta..beta + c].copy_from_slice(&read("ln_f.bias", c)?);
    params[head.bias] = read("score.bias", 1)?[0];
    Ok(())
}

/// The file transformers' `generate` reads its defaults from.
pub const GENERATION_CONFIG: &str = "generation_config.json";
/// The most bytes Kiln reads of a generation_config.json (transformers' own hold a few
/// hundred bytes; Whisper's, with its suppressed tokens, a few KB).
const MAX_GENERATION_CONFIG: u64 = 1 << 20;

/// A float as JSON in its shortest decimal form (0.8, not the f64 0.800000011920929).
fn json_f32(x: f32) -> serde_json::Value {
    x.to_string().parse::<f64>().map_or(serde_json::Value::Null, serde_json::Value::from)
}

/// transformers' GenerationConfig for a Kiln model: `generate` stops where Kiln's sampler
/// stops (`<|eos|>` and `<|end|>`, the end of a chat turn; listed together as Llama 3's
/// folders list theirs), never picks what Kiln's never picks (padding, `<|bos|>`,
/// `<|unk|>`, the role markers), and samples with [`SampleConfig::default`]'s settings.
pub fn kiln_generation_config() -> serde_json::Value {
    let s = SampleConfig::default();
    let mut v = serde_json::json!({
        "bos_token_id": crate::tokenizer::BOS,
        "eos_token_id": TokenRoles::kiln().stop,
        "pad_token_id": crate::tokenizer::PAD,
        "suppress_tokens": TokenRoles::kiln().never,
        "max_new_tokens": s.max_tokens,
        "do_sample": s.temperature > 0.0,
    });
    // transformers refuses to save a greedy config that names sampling settings
    if s.temperature > 0.0 {
        v["temperature"] = json_f32(s.temperature);
        v["top_k"] = s.top_k.into();
        v["top_p"] = json_f32(s.top_p);
    }
    v
}

/// The generation_config.json a model folder gets: Kiln's own ([`kiln_generation_config`]),
/// or `kept` (an imported model's) with Kiln's stop ids added to its `eos_token_id` (a
/// model fine-tuned in Kiln ends its turns with `<|end|>`) and `<|pad|>` as `pad_token_id`
/// where it names none.
pub fn generation_config(kept: Option<&serde_json::Value>) -> serde_json::Value {
    let Some(serde_json::Value::Object(kept)) = kept else { return kiln_generation_config() };
    let mut v = kept.clone();
    let mut eos = match v.get("eos_token_id") {
        Some(serde_json::Value::Array(ids)) => ids.clone(),
        Some(id @ serde_json::Value::Number(_)) => vec![id.clone()],
        _ => Vec::new(),
    };
    for id in TokenRoles::kiln().stop.into_iter().map(serde_json::Value::from) {
        if !eos.contains(&id) {
            eos.push(id);
        }
    }
    v.insert("eos_token_id".into(), eos.into());
    if v.get("pad_token_id").is_none_or(serde_json::Value::is_null) {
        v.insert("pad_token_id".into(), crate::tokenizer::PAD.into());
    }
    serde_json::Value::Object(v)
}

/// Fields of a GenerationConfig that hold a token id or a list of them.
const TOKEN_ID_FIELDS: [&str; 8] = [
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "suppress_tokens",
    "begin_suppress_tokens",
];
/// Fields that hold token ids inside other structures (lists of sequences, pairs).
const NESTED_ID_FIELDS: [&str; 4] = ["bad_words_ids", "force_words_ids", "sequence_bias", "forced_decoder_ids"];

/// An imported generation_config.json, read to be kept for export and nothing else
/// (Kiln's sampler never reads it). Not a JSON object: left out. Every other field is kept
/// as it is, opaque, except token ids: a field of [`TOKEN_ID_FIELDS`] must hold ids of the
/// folder's vocabulary of `vocab` tokens (else it is left out), and moves up by `shift`
/// when Kiln added its special tokens below them; the fields of [`NESTED_ID_FIELDS`] are
/// left out when ids moved. Each thing left out is a note. None also when it is Kiln's
/// own, unchanged (but for the `transformers_version` that transformers adds on saving).
fn read_generation_config(
    bytes: &[u8],
    vocab: usize,
    shift: usize,
    notes: &mut Vec<String>,
) -> Option<serde_json::Value> {
    let gone = "left out; the export gets Kiln's own";
    let mut fields = match serde_json::from_slice(bytes) {
        Ok(serde_json::Value::Object(fields)) => fields,
        Ok(_) => {
            notes.push(format!("{GENERATION_CONFIG} is not a JSON object: {gone}"));
            return None;
        }
        Err(e) => {
            notes.push(format!("{GENERATION_CONFIG} is not JSON ({e}): {gone}"));
            return None;
        }
    };
    let id = |x: &serde_json::Value| {
        x.as_u64().filter(|&id| id < vocab as u64).map(|id| serde_json::Value::from(id + shift as u64))
    };
    for name in TOKEN_ID_FIELDS {
        let Some(value) = fields.get(name) else { continue };
        let moved = match value {
            serde_json::Value::Null => Some(serde_json::Value::Null),
            serde_json::Value::Array(ids) => ids.iter().map(id).collect::<Option<Vec<_>>>().map(Into::into),
            one => id(one),
        };
        match moved {
            Some(v) => fields[name] = v,
            None => {
                fields.remove(name);
                notes.push(format!(
                    "{GENERATION_CONFIG}: {name} is not a token id (or a list of them) of the folder's {vocab}-token vocabulary: left out"
                ));
            }
        }
    }
    if shift > 0 {
        for name in NESTED_ID_FIELDS {
            if fields.remove(name).is_some() {
                notes.push(format!(
                    "{GENERATION_CONFIG}: {name} names token ids, which moved up by {shift} with Kiln's special tokens: left out"
                ));
            }
        }
    }
    // Kiln's own, as transformers saves it back (with its version added): not the model's own
    let mut bare = fields.clone();
    bare.remove("transformers_version");
    (serde_json::Value::Object(bare) != kiln_generation_config()).then_some(serde_json::Value::Object(fields))
}

/// The name of a shard of a model's weights: model-00001-of-00003.safetensors.
fn is_shard(name: &str) -> bool {
    let Some(middle) = name.strip_prefix("model-").and_then(|n| n.strip_suffix(".safetensors")) else {
        return false;
    };
    let mut parts = middle.split("-of-");
    let digits =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
}

/// A folder's weights: model.safetensors, or the shards its model.safetensors.index.json
/// maps the tensors to (how the Hub ships models past a few GB).
struct Weights<'a> {
    files: Vec<(&'a str, SafeTensors<'a>)>,
}

impl<'a> Weights<'a> {
    fn open(files: &'a Files, config: &GptConfig) -> Result<Weights<'a>> {
        let names: Vec<&str> = if files.contains_key("model.safetensors") {
            vec!["model.safetensors"]
        } else if let Some(index) = files.get(SHARD_INDEX) {
            let v: serde_json::Value =
                serde_json::from_slice(index).map_err(|e| bad(format!("{SHARD_INDEX} is not JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| bad(format!("{SHARD_INDEX} has no weight_map")))?;
            let mut shards: Vec<&str> = Vec::new();
            for shard in map.values() {
                let shard = shard.as_str().filter(|s| is_shard(s)).ok_or_else(|| {
                    bad(format!(
                        "{SHARD_INDEX} maps a tensor to {shard}, not a file named model-NNNNN-of-NNNNN.safetensors"
                    ))
                })?;
                let (name, _) = files.get_key_value(shard).ok_or_else(|| bad(format!("{shard} is missing")))?;
                if !shards.contains(&name.as_str()) {
                    shards.push(name);
                }
            }
            shards
        } else {
            return Err(bad("model.safetensors is missing"));
        };
        // bf16, the smallest a Hub model ships in, takes 2 bytes a parameter
        let need = 2 * config.num_params() as u64;
        let have: u64 = names.iter().map(|n| files[*n].len() as u64).sum();
        if have < need {
            return Err(bad(format!(
                "{} is corrupt or cut short: {have} bytes; a model of {config} needs at least {need} for its weights alone",
                names.join(", ")
            )));
        }
        let files = names
            .into_iter()
            .map(|n| Ok((n, SafeTensors::deserialize(&files[n]).map_err(|e| bad(format!("{n} is corrupt: {e}")))?)))
            .collect::<Result<_>>()?;
        Ok(Weights { files })
    }

    fn has(&self, name: &str) -> bool {
        self.files.iter().any(|(_, st)| st.tensor(name).is_ok())
    }

    /// The tensor under the first of `names` any file holds, checked as [`read_f32`] does.
    fn read(&self, names: &[String], shape: &[usize]) -> Result<Vec<f32>> {
        let found = self.files.iter().find(|(_, st)| names.iter().any(|n| st.tensor(n).is_ok()));
        let (file, st) = found.unwrap_or(&self.files[0]);
        read_f32(st, names, shape, file, MAX_WEIGHT)
    }
}

/// The index of a sharded folder's weights.
const SHARD_INDEX: &str = "model.safetensors.index.json";

/// A model folder read back: its config, tokenizer and parameters (in Kiln's layout).
pub struct LoadedModel {
    pub config: GptConfig,
    pub tokenizer: Tokenizer,
    /// GPT-2's tensors, then the scalar head's when the folder has one ("score.*" of a
    /// reward model, "v_head.*" of a PPO policy).
    pub params: Vec<f32>,
    pub layout: ParamLayout,
    /// What Kiln changed to make the folder usable (special tokens added …).
    pub notes: Vec<String>,
    /// Which ids start, end and pad a generation: Kiln's, or an imported model's own.
    pub roles: TokenRoles,
    /// An imported model's own chat template (None: Kiln's, `data::chat`).
    pub chat_template: Option<Arc<ChatTemplate>>,
    /// The folder's own generation_config.json, when it had one that is not Kiln's own:
    /// kept to be written back on export ([`model_files_keeping`]), its token ids moved
    /// with the vocabulary. Never read for Kiln's own sampling.
    pub generation_config: Option<serde_json::Value>,
    /// A Llama-family folder's own tokenizer files ([`OWN_FILES`]) as they came, written
    /// back unchanged on export ([`pretrained_model_files`]); empty for Kiln's models.
    pub own_files: Files,
}

/// What a model folder says beside its weights and tokenizer, which a model keeps through
/// training (from run to run in a session) and its export writes back.
#[derive(Clone)]
pub struct ModelExtras {
    pub roles: TokenRoles,
    pub chat_template: Option<Arc<ChatTemplate>>,
    pub generation_config: Option<serde_json::Value>,
    pub own_files: Files,
}

impl Default for ModelExtras {
    /// A Kiln model's: its eight special tokens, its template, its own generation config.
    fn default() -> ModelExtras {
        ModelExtras { roles: TokenRoles::kiln(), chat_template: None, generation_config: None, own_files: Files::new() }
    }
}

impl LoadedModel {
    pub fn extras(&self) -> ModelExtras {
        ModelExtras {
            roles: self.roles.clone(),
            chat_template: self.chat_template.clone(),
            generation_config: self.generation_config.clone(),
            own_files: self.own_files.clone(),
        }
    }
}

/// The files of an imported Llama-family folder that say how its text becomes tokens and
/// where a generation stops: kept byte for byte, so transformers reads the export as it
/// read the original.
pub const OWN_FILES: [&str; 4] = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", GENERATION_CONFIG];

/// An imported Llama-family model's folder: its weights (f32), config.json with its own
/// bos/eos/pad ids (`roles`), and its own tokenizer files (`own`, [`OWN_FILES`]) unchanged:
/// no Kiln token, template or stop id added.
pub fn pretrained_model_files(
    cfg: &GptConfig,
    layout: &ParamLayout,
    params: &[f32],
    roles: &TokenRoles,
    own: &Files,
) -> Result<Files> {
    let tensors = layout
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone(), f32_bytes(&params[t.offset..t.offset + t.len()])))
        .collect();
    let mut config = hf_config(cfg, roles.bos.unwrap_or(0), roles.end_of_text(), roles.pad);
    // the ids as the folder gave them: no bos (Qwen), every stop id where there are several
    config["bos_token_id"] = roles.bos.into();
    if roles.stop.len() > 1 {
        config["eos_token_id"] = roles.stop.clone().into();
    }
    let mut files = Files::from([
        ("model.safetensors".to_string(), safetensors_of(tensors)?),
        ("config.json".to_string(), serde_json::to_vec_pretty(&config).expect("JSON")),
    ]);
    files.extend(OWN_FILES.iter().filter_map(|&name| Some((name.to_string(), own.get(name)?.clone()))));
    Ok(files)
}

/// The model folder of a model with `extras`: an imported Llama-family model's own
/// ([`pretrained_model_files`]), else Kiln's ([`model_files_keeping`]).
pub fn model_files_with(
    cfg: &GptConfig,
    layout: &ParamLayout,
    tokenizer: &Tokenizer,
    params: &[f32],
    extras: &ModelExtras,
) -> Result<Files> {
    match cfg.llama() {
        Some(_) => pretrained_model_files(cfg, layout, params, &extras.roles, &extras.own_files),
        None => model_files_keeping(cfg, layout, tokenizer, params, extras.generation_config.as_ref()),
    }
}

pub(crate) fn file<'a>(files: &'a Files, name: &str) -> Result<&'a [u8]> {
    files.get(name).map(Vec::as_slice).ok_or_else(|| bad(format!("{name} is missing")))
}

/// Reads a model folder, checking every tensor's presence, type, shape and values.
/// Tensor names with transformers' "transformer." prefix are accepted too. A folder
/// whose tokenizer lacks Kiln's special tokens (a Hugging Face GPT-2) gets them at ids
/// 0..8: the embedding grows by 8 rows, each the mean of the old rows, above them.
pub fn load_model(files: &Files) -> Result<LoadedModel> {
    let mut loaded = load_weights(files)?;
    // LoRA adapters beside the weights (a PEFT adapter folder's two files, or a LoRA
    // run's checkpoint): the model they make, merged
    if crate::peft::is_adapter(files) {
        let adapter = crate::peft::read_adapter(files, &loaded.config, &loaded.layout)?;
        let layout = loaded.layout.clone();
        adapter.layout.merge(&loaded.config, &layout, &mut loaded.params, &adapter.values);
        loaded.notes.push(format!(
            "merged the LoRA adapters of {} ({} modules, rank {}) into the weights",
            crate::peft::ADAPTER_WEIGHTS,
            adapter.layout.layers.iter().flatten().map(|s| s.modules.len()).sum::<usize>(),
            adapter.layout.config.r
        ));
    }
    Ok(loaded)
}

/// [`load_model`] without merging adapters: the weights as the files hold them.
pub fn load_weights(files: &Files) -> Result<LoadedModel> {
    let mut config = config_from_hf(file(files, "config.json")?)?;
    if config.llama().is_some() {
        return load_pretrained(files, config);
    }
    let tokenizer_json =
        std::str::from_utf8(file(files, "tokenizer.json")?).map_err(|_| bad("tokenizer.json is not UTF-8"))?;
    let (tokenizer, added) = Tokenizer::from_json_adding_specials(tokenizer_json)?;
    if tokenizer.vocab_size() - added != config.vocab_size {
        return Err(bad(format!(
            "tokenizer.json has {} tokens but config.json says vocab_size {}",
            tokenizer.vocab_size() - added,
            config.vocab_size
        )));
    }
    let weights = Weights::open(files, &config)?;
    let head = [ScalarHeadKind::Reward, ScalarHeadKind::Value]
        .into_iter()
        .find(|k| weights.has(&format!("{}.weight", k.prefix())));
    let layout = match head {
        Some(kind) => ParamLayout::with_scalar_head(&config, kind),
        None => ParamLayout::new(&config),
    };
    let mut params = vec![0.0f32; layout.total];
    for t in &layout.tensors {
        // a classifier's score has no bias (transformers' GPT2ForSequenceClassification)
        if t.name == "score.bias" && !weights.has("score.bias") {
            continue;
        }
        let names = [t.name.clone(), format!("transformer.{}", t.name)];
        let values = weights.read(&names, &t.shape)?;
        params[t.offset..t.offset + t.len()].copy_from_slice(&values);
    }
    unfold_score_bias(files, &layout, &mut params)?;
    let mut notes = Vec::new();
    let generation_config =
        files.get(GENERATION_CONFIG).and_then(|b| read_generation_config(b, config.vocab_size, added, &mut notes));
    if added > 0 {
        if head.is_some() {
            return Err(bad("a model with a scalar head must have Kiln's special tokens"));
        }
        params = grow_embedding(&config, &params, added);
        config.vocab_size += added;
        config.validate()?;
        notes.push(format!(
            "the tokenizer lacked Kiln's special tokens: added {} at ids 0–{} (the other ids moved up by {added}), their embeddings start at the mean of the old ones",
            SPECIAL_TOKENS.join(" "),
            added - 1
        ));
    }
    let layout = match head {
        Some(kind) => ParamLayout::with_scalar_head(&config, kind),
        None => ParamLayout::new(&config),
    };
    Ok(LoadedModel {
        config,
        tokenizer,
        params,
        layout,
        notes,
        roles: TokenRoles::kiln(),
        chat_template: None,
        generation_config,
        own_files: Files::new(),
    })
}

/// A Llama-family folder as people bring it from the Hub: its tokenizer kept exactly (no
/// Kiln tokens added), its chat template, and the roles its files give its tokens —
/// tokenizer_config.json's bos/eos/pad tokens, the eos ids of config.json and
/// generation_config.json (every one of them stops a generation, as transformers' generate
/// stops on each).
fn load_pretrained(files: &Files, config: GptConfig) -> Result<LoadedModel> {
    let text = |name: &str| std::str::from_utf8(file(files, name)?).map_err(|_| bad(format!("{name} is not UTF-8")));
    let tokenizer = Tokenizer::from_pretrained(text("tokenizer.json")?)?;
    // Hub models often round their embedding up (Qwen2.5: 151,936 rows for 151,665 tokens)
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(bad(format!(
            "tokenizer.json has {} tokens but config.json's vocab_size is {}",
            tokenizer.vocab_size(),
            config.vocab_size
        )));
    }
    let tokenizer_config = files.get("tokenizer_config.json").map(|_| text("tokenizer_config.json")).transpose()?;
    let jinja = files.get("chat_template.jinja").map(|_| text("chat_template.jinja")).transpose()?;
    let chat_template = match (tokenizer_config, jinja) {
        (Some(cfg), jinja) if jinja.is_some() || has_chat_template(cfg) => {
            Some(Arc::new(ChatTemplate::from_tokenizer_config(cfg, jinja)?))
        }
        (None, Some(jinja)) => Some(Arc::new(ChatTemplate::from_tokenizer_config("{}", Some(jinja))?)),
        _ => None,
    };
    let special = match tokenizer_config {
        Some(cfg) => special_tokens_from_config(cfg)?,
        None => Vec::new(),
    };
    let token =
        |name: &str| special.iter().find(|(n, _)| n == name).and_then(|(_, content)| tokenizer.token_to_id(content));
    let in_vocab = |id: &u64| *id < config.vocab_size as u64;
    let ids_of = |v: Option<&serde_json::Value>| -> Vec<u32> {
        match v {
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().filter(in_vocab).map(|id| vec![id as u32]).unwrap_or_default()
            }
            Some(serde_json::Value::Array(a)) => {
                a.iter().filter_map(|x| x.as_u64()).filter(in_vocab).map(|id| id as u32).collect()
            }
            _ => Vec::new(),
        }
    };
    let json = |name: &str| -> Option<serde_json::Value> {
        files.get(name).filter(|b| b.len() as u64 <= MAX_GENERATION_CONFIG).and_then(|b| serde_json::from_slice(b).ok())
    };
    let (model_json, generation_json) = (json("config.json"), json(GENERATION_CONFIG));
    let mut stop: Vec<u32> = Vec::new();
    for id in token("eos_token")
        .into_iter()
        .chain(ids_of(model_json.as_ref().and_then(|v| v.get("eos_token_id"))))
        .chain(ids_of(generation_json.as_ref().and_then(|v| v.get("eos_token_id"))))
    {
        if !stop.contains(&id) {
            stop.push(id);
        }
    }
    let mut notes = Vec::new();
    if stop.is_empty() {
        notes.push("the model names no end-of-text token: generations run to their token limit".to_string());
    }
    let bos =
        token("bos_token").or_else(|| ids_of(model_json.as_ref().and_then(|v| v.get("bos_token_id"))).first().copied());
    let pad = token("pad_token").or(stop.first().copied()).unwrap_or(0);
    let roles = TokenRoles { bos, pad, stop, never: Vec::new() };
    let weights = Weights::open(files, &config)?;
    // a reward model or PPO policy fine-tuned from it in a session keeps its scalar head
    let head = [ScalarHeadKind::Reward, ScalarHeadKind::Value]
        .into_iter()
        .find(|k| weights.has(&format!("{}.weight", k.prefix())));
    let layout = match head {
        Some(kind) => ParamLayout::with_scalar_head(&config, kind),
        None => ParamLayout::new(&config),
    };
    let mut params = vec![0.0f32; layout.total];
    for t in &layout.tensors {
        let values = weights.read(std::slice::from_ref(&t.name), &t.shape)?;
        params[t.offset..t.offset + t.len()].copy_from_slice(&values);
    }
    Ok(LoadedModel {
        config,
        tokenizer,
        params,
        layout,
        notes,
        roles,
        chat_template,
        generation_config: generation_json,
        own_files: OWN_FILES.iter().filter_map(|&n| Some((n.to_string(), files.get(n)?.clone()))).collect(),
    })
}

/// Whether a tokenizer_config.json carries a chat template.
fn has_chat_template(config: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(config)
        .is_ok_and(|v| v.get("chat_template").is_some_and(|t| !t.is_null()))
}

/// Parameters with `added` new token-embedding rows (the mean of the old rows) placed
/// before the old ones; wte is the layout's first tensor, so the rest shifts unchanged.
fn grow_embedding(config: &GptConfig, params: &[f32], added: usize) -> Vec<f32> {
    let (v, c) = (config.vocab_size, config.n_embd);
    let mut mean = vec![0.0f64; c];
    for row in params[..v * c].chunks_exact(c) {
        mean.iter_mut().zip(row).for_each(|(m, &x)| *m += x as f64 / v as f64);
    }
    let mut out = Vec::with_capacity(params.len() + added * c);
    for _ in 0..added {
        out.extend(mean.iter().map(|&m| m as f32));
    }
    out.extend_from_slice(params);
    out
}

/// Files a Kiln checkpoint folder holds (the model folder, the resume state and each
/// stage's data); an output folder with anything else is the user's, not Kiln's.
pub fn is_checkpoint_file(name: &str) -> bool {
    const NAMES: [&str; 27] = [
        "model.safetensors",
        // a reward model's biases as trained (its folder is transformers' classifier)
        REWARD_HEAD,
        // LoRA adapters, as a PEFT folder holds them (a LoRA run's resume checkpoint too)
        crate::peft::ADAPTER_CONFIG,
        crate::peft::ADAPTER_WEIGHTS,
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        // an imported model's chat template (transformers 5 saves it beside tokenizer_config.json)
        "chat_template.jinja",
        GENERATION_CONFIG,
        "optimizer.safetensors",
        "trainer.json",
        "corpus.txt",
        "sft-train.jsonl",
        "sft-val.jsonl",
        "rankings-train.jsonl",
        "rankings-val.jsonl",
        "dpo-reference.json",
        "ppo-prompts.jsonl",
        "kto-train.jsonl",
        "kto-val.jsonl",
        "kto-reference.json",
        "group-prompts.jsonl",
        // a browser session's autosave: the models a preference stage keeps, and its backend
        "reference.safetensors",
        "reward.safetensors",
        "session.json",
        // learning as the person ranks: the rankings so far and the updates
        "online.json",
        // the conversations fine-tuning held out, which before/after checks ask
        "held-out.jsonl",
    ];
    NAMES.contains(&name) || name == SHARD_INDEX || is_shard(name)
}

/// Writes `files` into `dir` all at once and durably: into a sibling temporary folder
/// first (each file synced), then swapped into place in one atomic exchange where Linux
/// offers it (`renameat2(RENAME_EXCHANGE)`), so that at every instant `dir` holds either
/// the old checkpoint or the new one, complete. Files in `dir` that are not Kiln's (the
/// user's notes, say) are kept; Kiln's files the new checkpoint lacks are gone.
#[cfg(not(target_arch = "wasm32"))]
pub fn write_dir(dir: &std::path::Path, files: &Files) -> Result<()> {
    use std::fs;
    let io = |e: std::io::Error, what: &std::path::Path| KilnError::Io(format!("{}: {e}", what.display()));
    let name = dir.file_name().ok_or_else(|| KilnError::Io(format!("{} is not a folder name", dir.display())))?;
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    fs::create_dir_all(parent).map_err(|e| io(e, parent))?;
    let tmp = parent.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).map_err(|e| io(e, &tmp))?;
    for (file, bytes) in files {
        let path = tmp.join(file);
        let mut f = fs::File::create(&path).map_err(|e| io(e, &path))?;
        std::io::Write::write_all(&mut f, bytes).map_err(|e| io(e, &path))?;
        f.sync_all().map_err(|e| io(e, &path))?;
    }
    // the user's files: linked into the new folder now (never absent from both), their
    // folders moved across after the swap
    let mut user_folders = Vec::new();
    if dir.is_dir() {
        for entry in fs::read_dir(dir).map_err(|e| io(e, dir))? {
            let entry = entry.map_err(|e| io(e, dir))?;
            let entry_name = entry.file_name();
            if is_checkpoint_file(&entry_name.to_string_lossy()) || files.contains_key(&*entry_name.to_string_lossy()) {
                continue;
            }
            if entry.file_type().map_err(|e| io(e, &entry.path()))?.is_dir() {
                user_folders.push(entry_name);
            } else {
                fs::hard_link(entry.path(), tmp.join(&entry_name)).map_err(|e| io(e, &entry.path()))?;
            }
        }
    }
    sync_dir(&tmp)?;
    if dir.exists() {
        if !exchange(&tmp, dir) {
            // no atomic exchange here: two renames, the old folder kept until the new is in place
            let old = parent.join(format!(".{}.old-{}", name.to_string_lossy(), std::process::id()));
            fs::rename(dir, &old).map_err(|e| io(e, dir))?;
            fs::rename(&tmp, dir).map_err(|e| io(e, dir))?;
            fs::rename(&old, &tmp).map_err(|e| io(e, &old))?;
        }
        // `tmp` now holds the old checkpoint
        for folder in user_folders {
            fs::rename(tmp.join(&folder), dir.join(&folder)).map_err(|e| io(e, &tmp.join(&folder)))?;
        }
        let _ = fs::remove_dir_all(&tmp);
    } else {
        fs::rename(&tmp, dir).map_err(|e| io(e, dir))?;
    }
    sync_dir(parent)
}

/// Swaps two folders atomically (Linux); false where the system or file system cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &std::path::Path| std::ffi::CString::new(p.as_os_str().as_bytes()).ok();
    let (Some(a), Some(b)) = (c(a), c(b)) else { return false };
    // SAFETY: two NUL-terminated paths that outlive the call; no other memory is touched.
    unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) == 0 }
}

#[cfg(all(not(target_os = "linux"), not(target_arch = "wasm32")))]
fn exchange(_: &std::path::Path, _: &std::path::Path) -> bool {
    false
}

/// Makes a folder's entries (new names, renames) durable.
#[cfg(not(target_arch = "wasm32"))]
fn sync_dir(dir: &std::path::Path) -> Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| KilnError::Io(format!("{}: {e}", dir.display())))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Reads a checkpoint folder: only the files Kiln uses, each within its cap (see
/// [`read_checkpoint`]); anything else in the folder is left unread.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_dir(dir: &std::path::Path) -> Result<Files> {
    let io = |e: std::io::Error, what: &std::path::Path| KilnError::Io(format!("{}: {e}", what.display()));
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(e, dir))? {
        let entry = entry.map_err(|e| io(e, dir))?;
        let meta = entry.metadata().map_err(|e| io(e, &entry.path()))?;
        if meta.is_file() {
            entries.push(Entry {
                name: entry.file_name().to_string_lossy().into_owned(),
                declared: meta.len(),
                index: 0,
            });
        }
    }
    read_checkpoint(entries, |e, limit| {
        let path = dir.join(&e.name);
        let file = std::fs::File::open(&path).map_err(|err| io(err, &path))?;
        read_limited(file, limit).map_err(|err| io(err, &path))
    })
}

/// A model folder from its files as (name, bytes), the names possibly under folders (a
/// browser's folder input): the files Kiln reads, checked and capped as a .zip's are;
/// the rest left out.
pub fn from_named(files: Vec<(String, Vec<u8>)>) -> Result<Files> {
    let files: Vec<(String, Vec<u8>)> =
        files.into_iter().map(|(n, b)| (crate::data::base_name(&n).to_string(), b)).collect();
    let entries = files
        .iter()
        .enumerate()
        .map(|(index, (name, bytes))| Entry { name: name.clone(), declared: bytes.len() as u64, index })
        .collect();
    read_checkpoint(entries, |e, _| Ok(files[e.index].1.clone()))
}

/// Caps on what Kiln reads of a checkpoint, by file, so that a hostile archive or folder
/// cannot exhaust memory: JSON (config, tokenizer with up to 2^18 tokens, trainer state),
/// a stage's data, everything together.
const MAX_JSON: u64 = 64 << 20;
const MAX_DATA: u64 = 512 << 20;
const MAX_TOTAL: u64 = 3 << 30;
/// A safetensors header (names, shapes, offsets; about 100 bytes a tensor) and extra
/// tensors transformers may save (an old GPT-2's attn.bias masks): allowed beyond the
/// bytes the config's parameters take.
const SAFETENSORS_SLACK: u64 = 1 << 20;

/// The most bytes Kiln reads of a checkpoint file (None: not a file Kiln uses, skipped).
/// A safetensors file's cap comes from config.json, so that nothing larger than the model
/// the config describes is read.
fn file_cap(name: &str, config: &GptConfig) -> Option<u64> {
    // with a scalar head's C + 1 values
    let model = 4 * (config.num_params() as u64 + config.n_embd as u64 + 1);
    let tensors = |copies: u64| copies * model + (copies * model) / 8 + SAFETENSORS_SLACK;
    match name {
        "model.safetensors" | "reference.safetensors" | "reward.safetensors" | crate::peft::ADAPTER_WEIGHTS => {
            Some(tensors(1))
        }
        // two vectors of C and one value
        REWARD_HEAD => Some(4 * (3 * config.n_embd as u64 + 1) + SAFETENSORS_SLACK),
        _ if is_shard(name) => Some(tensors(1)),
        "optimizer.safetensors" => Some(tensors(2)),
        GENERATION_CONFIG => Some(MAX_GENERATION_CONFIG),
        "config.json"
        | "chat_template.jinja"
        | "tokenizer.json"
        | "tokenizer_config.json"
        | "trainer.json"
        | "dpo-reference.json"
        | "kto-reference.json"
        | "session.json"
        | "online.json"
        | crate::peft::ADAPTER_CONFIG
        | SHARD_INDEX => Some(MAX_JSON),
        _ if is_checkpoint_file(name) => Some(MAX_DATA),
        _ => None,
    }
}

/// A file an archive or folder offers: its name (folders flattened), the size it
/// declares (trusted for nothing but refusing early), and where to find it.
struct Entry {
    name: String,
    declared: u64,
    index: usize,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// Reads up to `limit` bytes, and one more when there are more (so the caller can tell).
/// Never allocates from a declared size: the buffer grows with what actually arrives.
fn read_limited(reader: impl std::io::Read, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut data = Vec::new();
    reader.take(limit.saturating_add(1)).read_to_end(&mut data)?;
    Ok(data)
}

/// Reads the checkpoint files among `entries`: config.json first, whose model sets the
/// caps of the tensor files; every file within its cap, refused by its declared size
/// before a byte is inflated, and by its real size when the declaration lies; all of them
/// together within MAX_TOTAL. Files Kiln does not use are skipped; two entries with the same
/// name (after flattening folders) are refused.
fn read_checkpoint<E>(entries: Vec<Entry>, mut read: E) -> Result<Files>
where
    E: FnMut(&Entry, u64) -> Result<Vec<u8>>,
{
    let mut seen = std::collections::HashSet::new();
    for e in &entries {
        if is_checkpoint_file(&e.name) && !seen.insert(e.name.as_str()) {
            return Err(bad(format!("the archive holds {} twice; a checkpoint has one of each file", e.name)));
        }
    }
    let mut ordered: Vec<&Entry> = entries.iter().filter(|e| is_checkpoint_file(&e.name)).collect();
    ordered.sort_by_key(|e| e.name != "config.json"); // config.json first (a stable sort)
    if ordered.first().is_none_or(|e| e.name != "config.json") {
        return Err(bad("config.json is missing"));
    }
    let mut files = Files::new();
    let mut total = 0u64;
    let mut config = None;
    for e in ordered {
        let cap = match &config {
            None => MAX_JSON,
            Some(cfg) => file_cap(&e.name, cfg).expect("a checkpoint file"),
        };
        if e.declared > cap {
            return Err(bad(format!(
                "{} declares {}, over the {} Kiln reads for it{}",
                e.name,
                mib(e.declared),
                mib(cap),
                if e.name.ends_with(".safetensors") { " (for the model config.json describes)" } else { "" }
            )));
        }
        let data = read(e, e.declared)?;
        if data.len() as u64 > e.declared {
            return Err(bad(format!("{} holds more than the {} bytes it declares", e.name, e.declared)));
        }
        total += data.len() as u64;
        if total > MAX_TOTAL {
            return Err(bad(format!("the checkpoint's files add up to over {}", mib(MAX_TOTAL))));
        }
        if config.is_none() {
            config = Some(config_from_hf(&data)?);
        }
        files.insert(e.name.clone(), data);
    }
    Ok(files)
}

/// A checkpoint's files as one .zip (deflated), for a browser download.
pub fn to_zip(files: &Files) -> Result<Vec<u8>> {
    zip_with(files, zip::CompressionMethod::Deflated)
}

/// The same, stored without compression: the browser's autosave, written often, where
/// deflating a model's floats would cost more time than the bytes it saves.
pub fn to_zip_stored(files: &Files) -> Result<Vec<u8>> {
    zip_with(files, zip::CompressionMethod::Stored)
}

fn zip_with(files: &Files, method: zip::CompressionMethod) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut names: Vec<&String> = files.keys().collect();
    names.sort();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(method).large_file(true);
    for name in names {
        zip.start_file(name.as_str(), options).map_err(bad)?;
        zip.write_all(&files[name]).map_err(|e| bad(e.to_string()))?;
    }
    Ok(zip.finish().map_err(bad)?.into_inner())
}

/// The most entries a .zip may list: a model folder is a handful of files.
const ZIP_MAX_FILES: usize = 64;
/// The largest .zip Kiln opens: in a browser the archive, its files and the model are all
/// in one 4 GiB wasm32 memory at once.
pub const MAX_ZIP_BYTES: u64 = 1 << 30;

/// Reads a .zip of a checkpoint folder, defensively: at most 64 entries; folders inside
/// the archive flattened to their file names; only the files Kiln uses, each within its
/// cap ([`read_checkpoint`]); nothing else interpreted.
pub fn from_zip(bytes: &[u8]) -> Result<Files> {
    crate::data::check_file_size(bytes.len() as u64, MAX_ZIP_BYTES, "a model archive")
        .map_err(|e| bad(e.to_string()))?;
    // the zip crate's reasons name its internals ("Could not find EOCD"): say what it means
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|_| {
        bad("this file is not a readable .zip archive (damaged, cut short, or not a zip): export the model again, or choose the .zip that Kiln or transformers wrote")
    })?;
    if archive.len() > ZIP_MAX_FILES {
        return Err(bad(format!("the archive holds {} files; a Kiln model has a handful", archive.len())));
    }
    let mut entries = Vec::new();
    for index in 0..archive.len() {
        let entry =
            archive.by_index_raw(index).map_err(|e| bad(format!("entry {index} of the archive is corrupt: {e}")))?;
        if entry.is_dir() || entry.is_symlink() {
            continue;
        }
        let full = entry.name().map_err(|e| bad(format!("entry {index} has an unreadable name: {e}")))?;
        let name = full.rsplit(['/', '\\']).next().unwrap_or_default().to_string();
        entries.push(Entry { name, declared: entry.size(), index });
    }
    read_checkpoint(entries, |e, limit| {
        let entry =
            archive.by_index(e.index).map_err(|err| bad(format!("{} in the archive is corrupt: {err}", e.name)))?;
        read_limited(entry, limit).map_err(|err| bad(format!("{} in the archive is corrupt: {err}", e.name)))
    })
}
