//! Checkpoints. A model folder is what Hugging Face transformers loads with
//! `GPT2LMHeadModel.from_pretrained` and `PreTrainedTokenizerFast.from_pretrained`:
//! model.safetensors (GPT-2 tensor names, f32), config.json, tokenizer.json,
//! tokenizer_config.json (with the chat template). A resume checkpoint adds the optimizer
//! state, trainer.json (the stage, its step and data position) and the stage's data
//! (corpus.txt, or sft-train.jsonl and sft-val.jsonl), so the stage continues bit-exactly.
//!
//! Everything is built as (file name, bytes) pairs, so the browser can zip them; natively
//! [`write_dir`] writes them into a temporary folder first and renames it into place, so a
//! crash never leaves half a checkpoint.

use std::collections::HashMap;

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::data::BatcherState;
use crate::error::{KilnError, Result};
use crate::model::{GptConfig, ParamLayout, ScalarHeadKind};
use crate::tokenizer::{Tokenizer, SPECIAL_TOKENS};
use crate::train::{LossPoint, StageKind, TrainConfig, Trainer};

/// File name → contents.
pub type Files = HashMap<String, Vec<u8>>;

fn bad(m: impl std::fmt::Display) -> KilnError {
    KilnError::Checkpoint(m.to_string())
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A safetensors file of named f32 tensors, with the metadata transformers expects.
fn safetensors_of(tensors: Vec<(String, Vec<usize>, Vec<u8>)>) -> Result<Vec<u8>> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            Ok((name.clone(), safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes).map_err(bad)?))
        })
        .collect::<Result<_>>()?;
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    safetensors::tensor::serialize(views, metadata).map_err(bad)
}

/// Reads one f32 tensor of the expected shape, refusing NaN and infinity.
fn read_f32(st: &SafeTensors, names: &[String], shape: &[usize], file: &str) -> Result<Vec<f32>> {
    let view = names
        .iter()
        .find_map(|n| st.tensor(n).ok())
        .ok_or_else(|| bad(format!("{file} has no tensor {}", names[0])))?;
    if view.dtype() != Dtype::F32 {
        return Err(bad(format!("{} in {file} is {:?}, Kiln reads f32", names[0], view.dtype())));
    }
    if view.shape() != shape {
        return Err(bad(format!("{} in {file} has shape {:?}, the config says {shape:?}", names[0], view.shape())));
    }
    let values: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!("{} in {file} holds {} at element {i}", names[0], values[i])));
    }
    Ok(values)
}

/// transformers' GPT2Config for a Kiln model.
fn hf_config(cfg: &GptConfig) -> serde_json::Value {
    serde_json::json!({
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
        "bos_token_id": crate::tokenizer::BOS,
        "eos_token_id": crate::tokenizer::EOS,
        "pad_token_id": crate::tokenizer::PAD,
        "torch_dtype": "float32",
    })
}

fn config_from_hf(json: &[u8]) -> Result<GptConfig> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| bad(format!("config.json is not JSON: {e}")))?;
    let field = |name: &str| {
        v.get(name)
            .and_then(|x| x.as_u64())
            .map(|x| x as usize)
            .ok_or_else(|| bad(format!("config.json lacks a whole number {name}")))
    };
    if v.get("model_type").and_then(|x| x.as_str()) != Some("gpt2") {
        return Err(bad("config.json is not a GPT-2 model (model_type must be \"gpt2\")"));
    }
    let cfg = GptConfig {
        vocab_size: field("vocab_size")?,
        block_size: field("n_positions")?,
        n_layer: field("n_layer")?,
        n_head: field("n_head")?,
        n_embd: field("n_embd")?,
    };
    cfg.validate().map_err(|e| bad(format!("config.json: {e}")))?;
    Ok(cfg)
}

/// The Hugging Face model folder for these parameters (GPT-2's tensors, then a scalar
/// head's when `layout` has one).
pub fn model_files(cfg: &GptConfig, layout: &ParamLayout, tokenizer: &Tokenizer, params: &[f32]) -> Result<Files> {
    let tensors = layout
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone(), f32_bytes(&params[t.offset..t.offset + t.len()])))
        .collect();
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
    Ok(HashMap::from([
        ("model.safetensors".to_string(), safetensors_of(tensors)?),
        ("config.json".to_string(), json(&hf_config(cfg))),
        ("tokenizer.json".to_string(), tokenizer.to_json()?.into_bytes()),
        ("tokenizer_config.json".to_string(), json(&tokenizer_config)),
    ]))
}

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
}

fn file<'a>(files: &'a Files, name: &str) -> Result<&'a [u8]> {
    files.get(name).map(Vec::as_slice).ok_or_else(|| bad(format!("{name} is missing")))
}

/// Reads a model folder, checking every tensor's presence, type, shape and values.
/// Tensor names with transformers' "transformer." prefix are accepted too. A folder
/// whose tokenizer lacks Kiln's special tokens (a Hugging Face GPT-2) gets them at ids
/// 0..8: the embedding grows by 8 rows, each the mean of the old rows, above them.
pub fn load_model(files: &Files) -> Result<LoadedModel> {
    let mut config = config_from_hf(file(files, "config.json")?)?;
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
    let bytes = file(files, "model.safetensors")?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("model.safetensors is corrupt: {e}")))?;
    let head = [ScalarHeadKind::Reward, ScalarHeadKind::Value]
        .into_iter()
        .find(|k| st.names().iter().any(|n| **n == format!("{}.weight", k.prefix())));
    let layout = match head {
        Some(kind) => ParamLayout::with_scalar_head(&config, kind),
        None => ParamLayout::new(&config),
    };
    let mut params = vec![0.0f32; layout.total];
    for t in &layout.tensors {
        let names = [t.name.clone(), format!("transformer.{}", t.name)];
        let values = read_f32(&st, &names, &t.shape, "model.safetensors")?;
        params[t.offset..t.offset + t.len()].copy_from_slice(&values);
    }
    let mut notes = Vec::new();
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
    Ok(LoadedModel { config, tokenizer, params, layout, notes })
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

/// What a resume checkpoint holds beside the model folder and the stage's data.
#[derive(Serialize, Deserialize)]
struct TrainerState {
    kiln: String,
    /// Checkpoints from before stages were named are pretraining runs.
    #[serde(default = "pretrain_stage")]
    stage: StageKind,
    #[serde(alias = "pretrain")]
    train: TrainConfig,
    step: u64,
    adam_step: u32,
    batcher: BatcherState,
    history: Vec<LossPoint>,
}

fn pretrain_stage() -> StageKind {
    StageKind::Pretrain
}

/// A resume checkpoint of a run: the model folder plus optimizer.safetensors,
/// trainer.json (which stage, where in it) and the stage's data files.
pub async fn resume_files<B: Backend>(run: &mut Trainer<B>) -> Result<Files> {
    let stage = run.stage()?;
    let (kind, position, data) = (stage.kind(), stage.position(), stage.data_files());
    let params = run.be.read(&run.model.params).await?;
    let m = run.be.read(&run.opt.m).await?;
    let v = run.be.read(&run.opt.v).await?;
    let mut files = model_files(&run.model.config, &run.model.layout, &run.tokenizer, &params)?;
    let n = vec![params.len()];
    files.insert(
        "optimizer.safetensors".into(),
        safetensors_of(vec![("adamw.m".into(), n.clone(), f32_bytes(&m)), ("adamw.v".into(), n, f32_bytes(&v))])?,
    );
    let state = TrainerState {
        kiln: env!("CARGO_PKG_VERSION").into(),
        stage: kind,
        train: run.cfg.clone(),
        step: run.step,
        adam_step: run.opt.step,
        batcher: position,
        history: run.history.clone(),
    };
    files.insert("trainer.json".into(), serde_json::to_vec_pretty(&state).expect("JSON"));
    files.extend(data);
    Ok(files)
}

/// Continues a run from a resume checkpoint, in the stage it was in.
pub fn resume<B: Backend>(be: B, files: &Files) -> Result<Trainer<B>> {
    let loaded = load_model(files)?;
    let state: TrainerState = serde_json::from_slice(file(files, "trainer.json")?)
        .map_err(|e| bad(format!("trainer.json is not a Kiln trainer state: {e}")))?;
    state.train.validate()?;
    let opt_bytes = file(files, "optimizer.safetensors")?;
    let st = SafeTensors::deserialize(opt_bytes).map_err(|e| bad(format!("optimizer.safetensors is corrupt: {e}")))?;
    let n = [loaded.params.len()];
    let m = read_f32(&st, &["adamw.m".into()], &n, "optimizer.safetensors")?;
    let v = read_f32(&st, &["adamw.v".into()], &n, "optimizer.safetensors")?;

    let t = loaded.config.block_size;
    let stage = crate::train::stage::restore(state.stage, files, &loaded.tokenizer, t, &state.train, state.batcher)?;
    let mut run = Trainer::with_layout(
        be,
        loaded.tokenizer,
        loaded.config,
        loaded.layout,
        Some(&loaded.params),
        state.train.seed,
    )?;
    run.be.write(&run.opt.m, 0, &m);
    run.be.write(&run.opt.v, 0, &v);
    run.opt.step = state.adam_step;
    run.resume_stage(stage, state.train, state.step, state.history)?;
    Ok(run)
}

/// Files a Kiln checkpoint folder holds (the model folder, the resume state and each
/// stage's data); an output folder with anything else is the user's, not Kiln's.
pub fn is_checkpoint_file(name: &str) -> bool {
    const NAMES: [&str; 13] = [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "optimizer.safetensors",
        "trainer.json",
        "corpus.txt",
        "sft-train.jsonl",
        "sft-val.jsonl",
        "rankings-train.jsonl",
        "rankings-val.jsonl",
        "dpo-reference.json",
        "ppo-prompts.jsonl",
    ];
    NAMES.contains(&name)
}

/// The stage a checkpoint folder was saved in, if it is a resume checkpoint.
pub fn saved_stage(files: &Files) -> Option<StageKind> {
    let state: TrainerState = serde_json::from_slice(files.get("trainer.json")?).ok()?;
    Some(state.stage)
}

/// Writes `files` into `dir` all at once: into a sibling temporary folder first, then
/// renamed into place (replacing an older checkpoint only when the new one is complete).
#[cfg(not(target_arch = "wasm32"))]
pub fn write_dir(dir: &std::path::Path, files: &Files) -> Result<()> {
    let io = |e: std::io::Error, what: &std::path::Path| KilnError::Io(format!("{}: {e}", what.display()));
    let name = dir.file_name().ok_or_else(|| KilnError::Io(format!("{} is not a folder name", dir.display())))?;
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io(e, parent))?;
    let tmp = parent.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| io(e, &tmp))?;
    for (file, bytes) in files {
        let path = tmp.join(file);
        std::fs::write(&path, bytes).map_err(|e| io(e, &path))?;
    }
    let old = parent.join(format!(".{}.old-{}", name.to_string_lossy(), std::process::id()));
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| io(e, dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| io(e, dir))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Reads every file of a checkpoint folder.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_dir(dir: &std::path::Path) -> Result<Files> {
    let io = |e: std::io::Error| KilnError::Io(format!("{}: {e}", dir.display()));
    let mut files = Files::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_type().map_err(io)?.is_file() {
            let bytes = std::fs::read(entry.path()).map_err(io)?;
            files.insert(entry.file_name().to_string_lossy().into_owned(), bytes);
        }
    }
    Ok(files)
}

/// The largest file Kiln reads out of a zip, and the most files: a model folder is a
/// handful of files, and a hostile archive must not exhaust memory.
const ZIP_MAX_FILE: u64 = 2 << 30;
const ZIP_MAX_FILES: usize = 64;

/// A checkpoint's files as one .zip (deflated), for a browser download.
pub fn to_zip(files: &Files) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut names: Vec<&String> = files.keys().collect();
    names.sort();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated).large_file(true);
    for name in names {
        zip.start_file(name.as_str(), options).map_err(bad)?;
        zip.write_all(&files[name]).map_err(|e| bad(e.to_string()))?;
    }
    Ok(zip.finish().map_err(bad)?.into_inner())
}

/// Reads a .zip of a checkpoint folder, defensively: at most 64 files of at most 2 GiB,
/// folders inside the archive flattened to their file names, nothing else interpreted.
pub fn from_zip(bytes: &[u8]) -> Result<Files> {
    use std::io::Read;
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| bad(format!("not a readable .zip file: {e}")))?;
    if archive.len() > ZIP_MAX_FILES {
        return Err(bad(format!("the archive holds {} files; a Kiln model has a handful", archive.len())));
    }
    let mut files = Files::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| bad(format!("entry {i} of the archive is corrupt: {e}")))?;
        if entry.is_dir() {
            continue;
        }
        let full = entry.name().map_err(|e| bad(format!("entry {i} has an unreadable name: {e}")))?.to_string();
        let name = full.rsplit(['/', '\\']).next().unwrap_or_default().to_string();
        if name.is_empty() || name.starts_with('.') {
            continue;
        }
        if entry.size() > ZIP_MAX_FILE {
            return Err(bad(format!("{name} in the archive is larger than 2 GiB")));
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        (&mut entry).take(ZIP_MAX_FILE + 1).read_to_end(&mut data).map_err(|e| bad(format!("{name}: {e}")))?;
        if data.len() as u64 > ZIP_MAX_FILE {
            return Err(bad(format!("{name} in the archive is larger than 2 GiB")));
        }
        files.insert(name, data);
    }
    Ok(files)
}
