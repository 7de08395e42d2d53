//! A run as a resume checkpoint: the model folder (checkpoint.rs) plus the optimizer's
//! moments, trainer.json (the stage, its options, step, data position and loss history)
//! and the stage's own data files, so that the stage continues bit for bit.

use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::{LossPoint, StageKind, TrainConfig, Trainer};
use crate::backend::Backend;
use crate::checkpoint::{bad, f32_bytes, file, load_weights, model_files_with, read_f32, safetensors_of};
use crate::data::format::ChatFormat;
use crate::data::{BatcherState, Files};
use crate::error::Result;
use crate::peft::{adapter_files, is_adapter, read_adapter};

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

/// The run's model as a Hugging Face folder: Kiln's, or an imported model's own files.
pub async fn model_folder<B: Backend>(run: &mut Trainer<B>) -> Result<Files> {
    // with its adapters merged in, under LoRA
    let params = run.params().await?;
    let mut files = model_files_with(&run.model.config, &run.model.layout, &run.tokenizer, &params, &run.extras())?;
    // the exact biases are for resuming; an export is the classifier alone
    files.remove(crate::checkpoint::REWARD_HEAD);
    Ok(files)
}

/// The run's model as one GGUF file for llama.cpp (adapters merged in), its matrices in
/// `encoding`.
pub async fn model_gguf<B: Backend>(run: &mut Trainer<B>, encoding: crate::gguf::Encoding) -> Result<Vec<u8>> {
    let params = run.params().await?;
    let extras = run.extras();
    let chat_template = extras.chat_template.as_ref().map_or(crate::data::chat::CHAT_TEMPLATE, |t| t.source());
    let model = crate::gguf::model::GgufModel {
        name: "Kiln model",
        config: &run.model.config,
        layout: &run.model.layout,
        params: &params,
        tokenizer: &run.tokenizer,
        roles: &extras.roles,
        chat_template,
    };
    crate::gguf::model::model_gguf(&model, encoding)
}

/// A resume checkpoint of a run: the model folder plus optimizer.safetensors,
/// trainer.json (which stage, where in it) and the stage's data files.
pub async fn resume_files<B: Backend>(run: &mut Trainer<B>) -> Result<Files> {
    let stage = run.stage()?;
    let (kind, position, data) = (stage.kind(), stage.position(), stage.data_files());
    let params = run.model.weights.read(&mut run.be, &run.model.layout).await?;
    let m = run.be.read(&run.opt.m).await?;
    let v = run.be.read(&run.opt.v).await?;
    let mut files = model_files_with(&run.model.config, &run.model.layout, &run.tokenizer, &params, &run.extras())?;
    // under LoRA the folder holds the frozen weights, the adapters beside them as a PEFT
    // folder's files, and the optimizer's moments are the adapters'
    if let Some((lora, values)) = run.adapter().await? {
        files.extend(adapter_files(&lora, &values, "", "")?);
    }
    let n = vec![m.len()];
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
    let loaded = load_weights(files)?;
    let state: TrainerState = serde_json::from_slice(file(files, "trainer.json")?)
        .map_err(|e| bad(format!("trainer.json is not a Kiln trainer state: {e}")))?;
    state.train.validate()?;
    let opt_bytes = file(files, "optimizer.safetensors")?;
    let st = SafeTensors::deserialize(opt_bytes).map_err(|e| bad(format!("optimizer.safetensors is corrupt: {e}")))?;
    let adapter = match is_adapter(files) {
        true => Some(read_adapter(files, &loaded.config, &loaded.layout)?),
        false => None,
    };
    let n = [adapter.as_ref().map_or(loaded.params.len(), |a| a.layout.total)];
    let m = read_f32(&st, &["adamw.m".into()], &n, "optimizer.safetensors", f32::MAX)?;
    let v = read_f32(&st, &["adamw.v".into()], &n, "optimizer.safetensors", f32::MAX)?;

    let t = loaded.config.block_size;
    let extras = loaded.extras();
    let format = ChatFormat::of(&loaded.tokenizer, extras.roles.clone(), extras.chat_template.clone());
    let vocabulary = (&loaded.tokenizer, &format);
    let stage = super::stages::restore(state.stage, files, vocabulary, t, &state.train, state.batcher)?;
    let mut run = Trainer::with_layout(
        be,
        loaded.tokenizer,
        loaded.config,
        loaded.layout,
        Some(&loaded.params),
        state.train.seed,
    )?;
    match adapter {
        Some(a) => run.set_adapter(a.layout.config, &a.values)?,
        None => run.train_every_weight()?,
    }
    run.be.write(&run.opt.m, 0, &m);
    run.be.write(&run.opt.v, 0, &v);
    run.opt.step = state.adam_step;
    run.set_extras(extras);
    run.resume_stage(stage, state.train, state.step, state.history)?;
    Ok(run)
}

/// The stage a checkpoint folder was saved in, if it is a resume checkpoint.
pub fn saved_stage(files: &Files) -> Option<StageKind> {
    let state: TrainerState = serde_json::from_slice(files.get("trainer.json")?).ok()?;
    Some(state.stage)
}
