//! What a person builds up, one stage after another: the corpus, the tokenizer, the model
//! training now, and the models the preference stages keep beside it — the fine-tuned
//! model (the reference DPO and PPO stay near, and where each preference stage starts)
//! and the reward model. The page (through `web.rs`), the CLI and the benchmarks drive
//! the same session; its snapshot is the browser's autosave and the CLI's checkpoint
//! folder alike, so either continues the other's run, PPO included.

use std::rc::Rc;

use serde::Serialize;

mod backend;
pub mod online;
mod view;
pub use backend::{AdapterDescription, BackendInfo, ModelInfo, DEFAULT_THREADS, MAX_THREADS};
pub use view::{Attention, HeadChoice, InspectOptions, NextToken, Piece, RowView, TopPiece};

use crate::backend::{BackendKind, CpuBackend, GpuBackend};
use crate::checkpoint::{load_model, params_file, read_params_file, ModelExtras};
use crate::data::chat::{Conversation, Message};
use crate::data::corpus::Language;
use crate::data::format::ChatFormat;
use crate::data::jsonl::{read_conversations, to_jsonl};
use crate::data::preference::{read_rankings, Ranking, MAX_ANSWERS};
use crate::data::thumbs::{read_feedback, Thumb};
use crate::data::Files;
use crate::error::{KilnError, Result};
use crate::gpu::Gpu;
use crate::model::{GptConfig, ParamLayout, ScalarHeadKind};
use crate::sample::{Candidate, SampleConfig};
use crate::tokenizer::Tokenizer;
use crate::train::parallel::{ShareResult, StepShares};
use crate::train::resume::{resume, resume_files};
use crate::train::stage::{BuildInput, Built, Frozen, Input};
use crate::train::stages::{begin_preference, set_frozen};
use crate::train::{Progress, Stage, StageKind, TrainConfig, Trainer};

/// A model and its trainer on whichever backend the session has.
pub enum Run {
    Gpu(Box<Trainer<GpuBackend>>),
    Cpu(Box<Trainer<CpuBackend>>),
}

/// `$body` with `$r` bound to the run's Trainer, whatever its backend.
#[macro_export]
macro_rules! with_run {
    ($run:expr, $r:ident => $body:expr) => {
        match $run {
            $crate::session::Run::Gpu($r) => $body,
            $crate::session::Run::Cpu($r) => $body,
        }
    };
}
pub use with_run;

impl Run {
    pub fn backend(&self) -> BackendKind {
        match self {
            Run::Gpu(_) => BackendKind::Gpu,
            Run::Cpu(_) => BackendKind::Cpu,
        }
    }

    /// The stage it is in, None before one has begun.
    pub fn stage_kind(&self) -> Option<StageKind> {
        with_run!(self, r => r.stage.as_ref().map(|s| s.kind()))
    }

    pub fn config(&self) -> GptConfig {
        with_run!(self, r => r.model.config)
    }
}

/// What a stage learns from, beside the model, as the person gave it: JSONL bytes read
/// as its [`Input`] asks (conversations, or rankings and TRL's pairs; none: the session's
/// corpus, or the built-in data in `lang`).
pub struct StageData<'a> {
    pub bytes: Option<&'a [u8]>,
    pub lang: Language,
}

/// A stage's input, read: conversations or rankings, or neither (the session's corpus, or
/// the built-in data in `lang`).
pub struct StageInput {
    pub lang: Language,
    pub conversations: Option<Vec<Conversation>>,
    pub rankings: Option<Vec<Ranking>>,
    pub thumbs: Option<Vec<Thumb>>,
}

impl StageInput {
    /// No input of the person's: the corpus, or the built-in data in `lang`.
    pub fn builtin(lang: Language) -> StageInput {
        StageInput { lang, conversations: None, rankings: None, thumbs: None }
    }

    /// `data` read as stage `kind` takes it, and the lines skipped with why.
    pub fn read(kind: StageKind, data: StageData<'_>) -> Result<(StageInput, Vec<String>)> {
        let mut input = StageInput::builtin(data.lang);
        let Some(bytes) = data.bytes else { return Ok((input, Vec::new())) };
        let skipped = match kind.def().input {
            Input::Corpus => return Err(KilnError::Config(format!("the {kind} stage reads the session's corpus"))),
            Input::Conversations => {
                let read = read_conversations(bytes)?;
                input.conversations = Some(read.items);
                read.skipped
            }
            Input::Feedback => {
                let read = read_feedback(bytes)?;
                input.thumbs = Some(read.items);
                read.skipped
            }
            Input::Rankings => {
                let read = read_rankings(bytes)?;
                input.rankings = Some(read.items);
                read.skipped
            }
            // prompts come from rankings, or from conversations (TRL's prompt/completion or
            // messages), whose answers a rule may compare with
            Input::Prompts => match read_rankings(bytes) {
                Ok(read) => {
                    input.rankings = Some(read.items);
                    read.skipped
                }
                Err(_) => {
                    let read = read_conversations(bytes)?;
                    input.conversations = Some(read.items);
                    read.skipped
                }
            },
        };
        Ok((input, skipped.iter().map(|e| e.to_string()).collect()))
    }
}

/// A session continued from its snapshot.
pub struct Restored {
    pub step: u64,
    pub history: Vec<crate::train::LossPoint>,
    /// Set when it continues on another backend than it was saved on.
    pub note: Option<String>,
}

#[derive(Default)]
pub struct Session {
    /// The WebGPU device, when there is one.
    pub gpu: Option<Gpu>,
    /// The backend new models train on.
    pub backend: BackendKind,
    pub corpus: Option<Rc<str>>,
    pub tokenizer: Option<Tokenizer>,
    pub run: Option<Run>,
    /// The fine-tuned model's parameters (GPT-2's tensors), kept once a preference stage
    /// begins: the reference PPO and DPO stay near, and where every new stage starts.
    pub reference: Option<Vec<f32>>,
    /// The reward model's parameters (with its score head), once one is trained.
    pub reward: Option<Vec<f32>>,
    /// The conversations the last fine-tuning held out (the person's own, or the built-in
    /// questions with their stories): what before/after checks ask, kept through the
    /// preference stages.
    pub held_out: Vec<Conversation>,
    /// Learning as the person ranks: the rankings so far and the updates made.
    pub online: Option<online::Online>,
    /// The text generation in progress.
    generation: Option<view::TextGeneration>,
    /// Which backend and why, for a session begun with [`Session::start`].
    pub info: Option<BackendInfo>,
}

/// The current model and its run, as the JS API reports them.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInfo {
    #[serde(flatten)]
    pub model: ModelInfo,
    pub stage: Option<StageKind>,
    pub train_rows: usize,
    pub val_rows: usize,
    pub backend: Option<BackendInfo>,
    /// How the weights are held: "f32", or a frozen model's matrices in "bf16" or "f16"
    /// (on the GPU, for a model that came in 16 bits: `model::weights`).
    pub weights: &'static str,
}

impl Session {
    /// An empty session on `backend` (the GPU one needs `gpu`).
    pub fn new(gpu: Option<Gpu>, backend: BackendKind) -> Session {
        let backend = if gpu.is_some() { backend } else { BackendKind::Cpu };
        Session { gpu, backend, ..Session::default() }
    }

    pub fn run(&self) -> Result<&Run> {
        self.run.as_ref().ok_or_else(|| KilnError::Config("create or import a model first".into()))
    }

    pub fn run_mut(&mut self) -> Result<&mut Run> {
        self.run.as_mut().ok_or_else(|| KilnError::Config("create or import a model first".into()))
    }

    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| KilnError::Config("train a tokenizer first".into()))
    }

    /// The corpus pretraining reads; the tokenizer trained on another is kept.
    pub fn set_corpus(&mut self, text: String) {
        self.corpus = Some(text.into());
    }

    /// A model of `layout` (fresh from `seed`, or `params`) on the session's backend, with
    /// what its folder said beside its weights (`extras`: Kiln's, or an imported model's).
    fn new_run(
        &self,
        config: GptConfig,
        layout: ParamLayout,
        params: Option<&[f32]>,
        seed: u64,
        extras: ModelExtras,
    ) -> Result<Run> {
        let tok = self.tokenizer()?.clone();
        let mut run = match (&self.gpu, self.backend) {
            (Some(gpu), BackendKind::Gpu) => Run::Gpu(Box::new(Trainer::with_layout(
                GpuBackend::new(gpu.clone()),
                tok,
                config,
                layout,
                params,
                seed,
            )?)),
            _ => Run::Cpu(Box::new(Trainer::with_layout(CpuBackend::new(), tok, config, layout, params, seed)?)),
        };
        with_run!(&mut run, r => r.set_extras(extras));
        Ok(run)
    }

    /// Pretraining on the corpus, for a model of context `t` whose conversations and
    /// documents are in `format`.
    fn pretrain_stage(&self, t: usize, cfg: &TrainConfig, format: &ChatFormat) -> Result<Box<dyn Stage>> {
        let input = StageInput::builtin(Language::English); // pretraining reads the corpus, in any language
        Ok(self.build_for(StageKind::Pretrain, t, input, cfg, format)?.stage)
    }

    /// A new model of `config` and its pretraining run on the corpus.
    pub fn create_model(&mut self, config: GptConfig, cfg: TrainConfig) -> Result<()> {
        let stage = self.pretrain_stage(config.block_size, &cfg, &ChatFormat::kiln())?;
        let mut run = self.new_run(config, ParamLayout::new(&config), None, cfg.seed, ModelExtras::default())?;
        with_run!(&mut run, r => r.begin(stage, cfg))?;
        self.run = Some(run);
        self.generation = None;
        // the kept models were another model's: a preference stage of this one keeps its own
        (self.reference, self.reward) = (None, None);
        self.online = None;
        self.held_out.clear();
        Ok(())
    }

    /// How the current model renders conversations (Kiln's format before there is one).
    pub fn chat_format(&self) -> ChatFormat {
        match self.run() {
            Ok(run) => with_run!(run, r => r.chat_format()),
            Err(_) => ChatFormat::kiln(),
        }
    }

    /// A PEFT adapter folder (adapter_config.json, adapter_model.safetensors) onto the
    /// current model, its base: the adapters are the model's from now on, and a LoRA stage
    /// of their rank, α and targets trains them on. The session is unchanged on failure.
    pub fn import_adapter(&mut self, files: &Files) -> Result<()> {
        let run = self.run_mut()?;
        let adapter = with_run!(run, r => crate::peft::read_adapter(files, &r.model.config, &r.model.layout))?;
        if with_run!(run, r => r.model.lora.is_some() || r.model.layout.scalar_head.is_some()) {
            return Err(KilnError::Config(
                "adapters go onto a language model without adapters: import the base model first".into(),
            ));
        }
        with_run!(run, r => r.set_adapter(adapter.layout.config, &adapter.values))?;
        self.generation = None;
        Ok(())
    }

    /// The current model's LoRA adapters as a PEFT adapter folder on `base_model` (the
    /// base's Hub id or folder, written into adapter_config.json).
    pub async fn adapter_files(&mut self, base_model: &str) -> Result<Files> {
        let run = self.run_mut()?;
        let arch = with_run!(run, r => crate::model::hf_config::architecture(&r.model.config));
        let adapter = with_run!(run, r => r.adapter().await)?;
        let (lora, values) = adapter.ok_or_else(|| {
            KilnError::Config("the model has no LoRA adapters: fine-tune it with loraRank above 0 first".into())
        })?;
        // a policy's adapters go out without PPO's value head, which only its training reads
        let (lora, values) = match lora.head {
            Some(h) if h.kind == ScalarHeadKind::Value => {
                let policy = lora.without_head();
                let n = policy.total;
                (policy, values[..n].to_vec())
            }
            _ => (lora, values),
        };
        crate::peft::adapter_files(&lora, &values, base_model, arch)
    }

    /// Replaces the model and tokenizer with a model folder's; the kept models go. A
    /// Llama-family folder keeps its own tokenizer, chat template and token roles, which
    /// every stage then renders and pads with. With `cfg` and a corpus, pretraining on it
    /// is begun at once (unless the weights are kept in 16 bits). Returns what Kiln changed (special tokens added, say).
    pub fn import(&mut self, files: &Files, cfg: Option<TrainConfig>) -> Result<Vec<String>> {
        let loaded = load_model(files)?;
        let previous = self.tokenizer.replace(loaded.tokenizer.clone());
        let made = (|| {
            let seed = cfg.as_ref().map_or(0, |c| c.seed);
            let (config, layout) = (loaded.config, loaded.layout.clone());
            let mut run = self.new_run(config, layout, Some(&loaded.params), seed, loaded.extras())?;
            // a model kept in 16 bits (a Hub model on the GPU) waits for the stage chosen:
            // pretraining begun now would widen it and give every weight gradients and
            // moments, three more copies of a model most people fine-tune with LoRA
            let small = with_run!(&run, r => r.model.weights.format().is_none());
            if let (Some(cfg), true, true) = (cfg, self.corpus.is_some(), small) {
                let format = with_run!(&run, r => r.chat_format());
                let stage = self.pretrain_stage(config.block_size, &cfg, &format)?;
                with_run!(&mut run, r => r.begin(stage, cfg))?;
            }
            Ok(run)
        })();
        match made {
            Ok(run) => {
                self.run = Some(run);
                self.generation = None;
                (self.reference, self.reward) = (None, None);
                self.online = None;
                self.held_out.clear();
                Ok(loaded.notes)
            }
            Err(e) => {
                // nothing in the session changes unless the import has fully succeeded
                self.tokenizer = previous;
                Err(e)
            }
        }
    }

    /// Begins `kind` on `data` with a fresh optimizer ([`Session::build`], then
    /// [`Session::begin_stage`]). Returns the lines of `data` that were skipped, each with
    /// why. A failure leaves the session as it was.
    pub async fn begin(&mut self, kind: StageKind, data: StageData<'_>, cfg: TrainConfig) -> Result<Vec<String>> {
        let (input, skipped) = StageInput::read(kind, data)?;
        let built = self.build(kind, input, &cfg)?;
        self.begin_stage(built.stage, cfg).await?;
        Ok(skipped)
    }

    /// Builds stage `kind` on `input` for the current model's context and chat format.
    pub fn build(&self, kind: StageKind, input: StageInput, cfg: &TrainConfig) -> Result<Built> {
        let (t, format) = with_run!(self.run()?, r => (r.model.config.block_size, r.chat_format()));
        self.build_for(kind, t, input, cfg, &format)
    }

    fn build_for(
        &self,
        kind: StageKind,
        t: usize,
        input: StageInput,
        cfg: &TrainConfig,
        format: &ChatFormat,
    ) -> Result<Built> {
        (kind.def().build)(BuildInput {
            tokenizer: self.tokenizer()?,
            format,
            t,
            cfg,
            lang: input.lang,
            corpus: self.corpus.as_deref(),
            conversations: input.conversations,
            rankings: input.rankings,
            thumbs: input.thumbs,
        })
    }

    /// Begins `stage` with a fresh optimizer: pretraining or SFT on the model as it is, a
    /// preference stage on a new model built from the fine-tuned one. A failure leaves
    /// the session as it was.
    pub async fn begin_stage(&mut self, stage: Box<dyn Stage>, cfg: TrainConfig) -> Result<()> {
        if !stage.kind().def().from_reference {
            let held_out = stage.held_out().to_vec();
            with_run!(self.run_mut()?, r => r.fit_lora(&cfg).await)?;
            with_run!(self.run_mut()?, r => r.begin(stage, cfg))?;
            self.generation = None;
            if !held_out.is_empty() {
                self.held_out = held_out;
            }
            return Ok(());
        }
        // The current model: the fine-tuned one (before any preference stage), a reward
        // model (it has the reward head), or an aligned policy.
        let run = self.run_mut()?;
        let current = run.stage_kind();
        let config = run.config();
        let params = with_run!(run, r => r.params().await)?;
        // which of the session's models the current one is
        let (mut reference, mut reward) = (self.reference.clone(), self.reward.clone());
        match current.map(|k| k.def()) {
            Some(def) if def.head == Some(ScalarHeadKind::Reward) => reward = Some(params),
            Some(def) if def.from_reference && reference.is_some() => {}
            _ => reference = Some(params[..config.num_params()].to_vec()),
        }
        let base = reference.as_deref().expect("just set");
        // LoRA fine-tuning's adapters go on training into DPO (the stage's reference is
        // the model with them, its outputs computed before the first step), so one
        // adapter holds all the tuning on top of the imported weights. A stage with a
        // head, or one reading the reference as it trains (PPO: the base with its
        // adapters off), starts fresh adapters on the merged model.
        let def = stage.kind().def();
        let continues = def.head.is_none() && def.frozen.is_empty();
        let adapter = match (current.and_then(|k| k.def().head), cfg.lora()?) {
            (None, Some(wanted)) if continues => {
                let run = self.run_mut()?;
                match with_run!(run, r => r.adapter().await)? {
                    Some((lora, values)) if lora.config == wanted => {
                        let frozen = with_run!(run, r => r.base_params().await)?;
                        Some((lora.config, values, frozen))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let extras = with_run!(self.run()?, r => r.extras());
        let start = adapter.as_ref().map_or(base, |a| &a.2[..config.num_params()]);
        let mut run = self.new_run(config, ParamLayout::new(&config), Some(start), cfg.seed, extras)?;
        if let Some((lora, values, _)) = adapter {
            with_run!(&mut run, r => r.set_adapter(lora, &values))?;
        }
        // the current model stays until the new stage has begun: a failure loses nothing
        with_run!(&mut run, r => begin_preference(r, stage, cfg, base, reward.as_deref()).await)?;
        (self.reference, self.reward) = (reference, reward);
        self.run = Some(run);
        self.generation = None;
        Ok(())
    }

    /// The current model and its run.
    pub fn run_info(&self) -> Result<RunInfo> {
        let (config, batch, rows, stage, format) = with_run!(self.run()?, r => (
            r.model.config,
            r.cfg.batch_size,
            r.stage.as_ref().map(|st| st.rows()),
            r.stage.as_ref().map(|st| st.kind()),
            r.model.weights.format(),
        ));
        let (train_rows, val_rows) = rows.unwrap_or((0, 0));
        let model = self.estimate(config, batch);
        let weights = format.map_or("f32", |f| f.name());
        Ok(RunInfo { model, stage, train_rows, val_rows, backend: self.info.clone(), weights })
    }

    /// Changes the length of the run (more steps continue it; the schedule stretches).
    pub fn set_steps(&mut self, steps: u64) -> Result<()> {
        with_run!(self.run_mut()?, r => r.cfg.steps = steps.max(r.step).max(1));
        Ok(())
    }

    /// One optimizer step (with validation and a sample when due), None when the run has
    /// done all its steps. `shared`: the helpers' results of a step begun by
    /// [`Session::share_step`].
    pub async fn train_step(&mut self, shared: Option<Vec<ShareResult>>) -> Result<Option<Progress>> {
        let run = self.run_mut()?;
        if let (Some(results), Run::Cpu(r)) = (shared, &mut *run) {
            r.add_share_results(results)?;
        }
        Ok(match run {
            Run::Gpu(r) if !r.done() => Some(r.train_one().await?),
            Run::Cpu(r) if !r.done() => Some(r.train_one().await?),
            _ => None,
        })
    }

    /// Begins a training step shared by `workers` (train::parallel): None when this step
    /// is not shared (WebGPU, one worker, a preference stage).
    pub async fn share_step(&mut self, workers: usize) -> Result<Option<StepShares>> {
        match self.run_mut()? {
            Run::Cpu(r) => r.share_step(workers).await,
            Run::Gpu(_) => Ok(None),
        }
    }

    /// Runs this worker's own share of the step [`Session::share_step`] began.
    pub async fn local_share(&mut self) -> Result<()> {
        match self.run_mut()? {
            Run::Cpu(r) => r.local_share().await,
            Run::Gpu(_) => Err(KilnError::Config("shared steps run on the CPU backend".into())),
        }
    }

    /// The session as files: the run's resume checkpoint (model, optimizer, stage, its
    /// data and position), the models a preference stage keeps (reference.safetensors,
    /// reward.safetensors) and the backend (session.json). None before a stage has begun.
    pub async fn snapshot(&mut self) -> Result<Option<Files>> {
        let Some(run) = self.run.as_mut() else { return Ok(None) };
        if run.stage_kind().is_none() {
            return Ok(None);
        }
        let backend = run.backend();
        let mut files = with_run!(run, r => resume_files(r).await)?;
        for (name, params) in [("reference.safetensors", &self.reference), ("reward.safetensors", &self.reward)] {
            if let Some(params) = params {
                files.insert(name.into(), params_file(params)?);
            }
        }
        if !self.held_out.is_empty() {
            files.insert("held-out.jsonl".into(), to_jsonl(&self.held_out).into_bytes());
        }
        if let Some(online) = &self.online {
            files.extend(online.files());
        }
        files.insert(
            "session.json".into(),
            serde_json::to_vec(&serde_json::json!({ "backend": backend })).expect("JSON"),
        );
        Ok(Some(files))
    }

    /// Continues a session from its [`Session::snapshot`] (or a CLI checkpoint folder):
    /// the model, its optimizer and stage, the tokenizer, the corpus and the kept models,
    /// on the backend it was saved on when this session has it (then training continues
    /// bit for bit as it would have), else on the session's. Nothing changes unless all of
    /// it loads.
    pub fn restore(&mut self, files: &Files) -> Result<Restored> {
        let saved: Option<BackendKind> = files
            .get("session.json")
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            .and_then(|v| serde_json::from_value(v["backend"].clone()).ok());
        let kind = match (saved, &self.gpu) {
            (Some(BackendKind::Gpu), Some(_)) => BackendKind::Gpu,
            (Some(BackendKind::Cpu), _) => BackendKind::Cpu,
            _ => self.backend,
        };
        let name = |k: BackendKind| if k == BackendKind::Gpu { "WebGPU" } else { "CPU" };
        let note = saved.filter(|&k| k != kind).map(|k| {
            format!(
                "saved on the {} backend, continued on the {}: the losses will differ slightly",
                name(k),
                name(kind)
            )
        });
        let mut run = match (kind, &self.gpu) {
            (BackendKind::Gpu, Some(gpu)) => Run::Gpu(Box::new(resume(GpuBackend::new(gpu.clone()), files)?)),
            _ => Run::Cpu(Box::new(resume(CpuBackend::new(), files)?)),
        };
        let config = run.config();
        let kept = |name: &str, len: usize| files.get(name).map(|b| read_params_file(b, len, name)).transpose();
        let reference = kept("reference.safetensors", config.num_params())?;
        let reward = kept("reward.safetensors", ParamLayout::with_scalar_head(&config, ScalarHeadKind::Reward).total)?;
        if let Some(kind) = run.stage_kind().filter(|k| !k.def().frozen.is_empty()) {
            // the stage reads some of the session's models as it trains (PPO: the
            // fine-tuned model and the reward model)
            let frozen = kind.def().frozen;
            let lacks = |f: Frozen, m: &Option<Vec<f32>>| frozen.contains(&f) && m.is_none();
            if lacks(Frozen::Reference, &reference) || lacks(Frozen::Reward, &reward) {
                return Err(KilnError::Checkpoint(format!(
                    "this {kind} checkpoint lacks its reference or reward model"
                )));
            }
            let base = reference.as_deref().unwrap_or_default();
            with_run!(&mut run, r => {
                let lora = r.model.lora.is_some();
                set_frozen(r, kind, base, reward.as_deref(), lora)
            })?;
        }
        let (tokenizer, step, history) = with_run!(&run, r => (r.tokenizer.clone(), r.step, r.history.clone()));
        let held_out = match files.get("held-out.jsonl") {
            Some(bytes) => {
                read_conversations(bytes).map_err(|e| KilnError::Checkpoint(format!("held-out.jsonl: {e}")))?.items
            }
            None => with_run!(&run, r => r.stage.as_ref().map(|s| s.held_out().to_vec())).unwrap_or_default(),
        };
        let online = files.get(online::ONLINE_FILE).map(|b| online::Online::restore(b)).transpose()?;
        if let Some(corpus) = files.get("corpus.txt") {
            self.corpus = Some(String::from_utf8_lossy(corpus).into());
        }
        self.backend = kind;
        if let Some(info) = self.info.as_mut() {
            info.kind = kind;
        }
        self.tokenizer = Some(tokenizer);
        (self.reference, self.reward) = (reference, reward);
        self.online = online;
        self.held_out = held_out;
        self.run = Some(run);
        self.generation = None;
        Ok(Restored { step, history, note })
    }

    /// Which model answers: `reference` asks for the fine-tuned one kept as the reference
    /// (the current one until a preference stage begins); a reward model does not answer,
    /// the fine-tuned model does in its place. Some(a temporary run of it), or None: the
    /// current run answers.
    fn answering_run(&self, reference: bool) -> Result<Option<Run>> {
        let run = self.run()?;
        let reward_model = run.stage_kind().is_some_and(|k| k.def().head == Some(ScalarHeadKind::Reward));
        let reference = reference || reward_model;
        match (&self.reference, reference) {
            (Some(params), true) => {
                let (config, extras) = (run.config(), with_run!(run, r => r.extras()));
                self.new_run(config, ParamLayout::new(&config), Some(params), 0, extras).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// `k` answers (2 to 6) to `messages` (ending with the user's turn), sampled together
    /// in one batch: (text, candidate).
    pub async fn sample_candidates(
        &mut self,
        messages: &[Message],
        k: usize,
        cfg: &SampleConfig,
    ) -> Result<Vec<(String, Candidate)>> {
        if !(2..=MAX_ANSWERS).contains(&k) {
            return Err(KilnError::Config(format!("answers to rank per prompt: 2 to {MAX_ANSWERS}, not {k}")));
        }
        let mut temp = self.answering_run(false)?;
        let run = match temp.as_mut() {
            Some(run) => run,
            None => self.run_mut()?,
        };
        with_run!(run, r => {
            let cands = r.sample_answers(messages, k, cfg).await?;
            cands.into_iter().map(|c| Ok((r.tokenizer.decode(c.content())?, c))).collect()
        })
    }

    /// Greedy answers to each of `prompts` by the current model, or the fine-tuned one
    /// the preference stages started from (`reference`): the before/after view.
    pub async fn answers(&mut self, prompts: &[Vec<Message>], reference: bool) -> Result<Vec<String>> {
        let cfg = SampleConfig { max_tokens: 24, ..SampleConfig::for_chat() };
        let mut temp = self.answering_run(reference)?;
        let run = match temp.as_mut() {
            Some(run) => run,
            None => self.run_mut()?,
        };
        with_run!(run, r => {
            let mut out = Vec::with_capacity(prompts.len());
            for p in prompts {
                let ids = r.chat_prompt(p)?;
                out.push(r.continue_ids(&ids, &cfg).await?);
            }
            Ok(out)
        })
    }
}
