//! The trainer every stage shares: a model on a backend, its tokenizer, AdamW and the
//! schedule, the one-submit step, the loss history and tokens/s. A [`Stage`] supplies
//! the batches (with a loss weight per position), the validation set and its own state;
//! `begin` starts a stage on the model as it is (pretraining, then SFT, …), with a fresh
//! optimizer and schedule.

use serde::{Deserialize, Serialize};

use super::optimizer::{lr_at, AdamW, Schedule};
use super::stage::{Phase, Stage, StageKind};
use super::step::{backward_with, evaluate, forward_outputs, train_step, Heads, TokenBatch};
use crate::backend::Backend;
use crate::clock::now_s;
use crate::cpu::adamw::AdamWConfig;
use crate::error::{KilnError, Result};
use crate::model::{Activations, Gpt, GptConfig, ParamLayout, ScalarHeadKind};
use crate::sample::{generate, sample_candidates, Decoder, SampleConfig};
use crate::tokenizer::Tokenizer;

/// How a stage trains. Each stage has its own defaults ([`TrainConfig::for_stage`]); the
/// CLI, the wasm session and the page all start from them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TrainConfig {
    pub steps: u64,
    /// Rows per micro-batch (B).
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub grad_clip: f32,
    /// Validate every N steps (and at the end).
    pub eval_every: u64,
    /// At most this many validation batches.
    pub eval_batches: usize,
    /// Generate a sample every N steps (0: never).
    pub sample_every: u64,
    pub sample_tokens: usize,
    /// Read the training loss back every N steps (and at the first and last).
    pub log_every: u64,
    pub seed: u64,
    /// Share of the documents (or conversations, or ranked prompts) held out for validation.
    pub val_fraction: f64,
    /// The preference stages' own options.
    #[serde(flatten)]
    pub align: AlignConfig,
}

/// The options of the stages that learn from rankings: TRL's defaults where TRL has one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AlignConfig {
    /// DPO's β: how strongly the policy is held to the reference (TRL: 0.1).
    pub dpo_beta: f64,
    /// Weight of the NLL of chosen answers added to DPO's loss (TRL's rpo_alpha; 0: plain
    /// DPO). On by default: it guards against likelihood displacement (module dpo).
    pub rpo_alpha: f64,
    /// The reward model's centring coefficient λ (TRL's center_rewards_coefficient; 0: off).
    pub reward_center: f64,
    /// PPO's KL penalty β per token (TRL: 0.05).
    pub kl_coef: f64,
    /// PPO's clip range ε for the probability ratio (TRL: 0.2) and for the value.
    pub clip_range: f64,
    pub value_clip: f64,
    /// Discount γ (TRL: 1) and GAE's λ (TRL: 0.95).
    pub gamma: f64,
    pub lam: f64,
    /// Weight of the value loss (TRL: 0.1).
    pub vf_coef: f64,
    /// Optimizer steps on each batch of rollouts (TRL: 4).
    pub ppo_epochs: u64,
    /// Prompts per batch of rollouts, and answers sampled per prompt (2 to 6).
    pub rollout_prompts: usize,
    pub answers_per_prompt: usize,
    /// Added to the score of an answer that never ends (TRL's missing_eos_penalty).
    pub missing_end_penalty: f64,
    /// Sampling of rollouts and candidates: temperature, top-k (0: all), top-p (1: all),
    /// and the longest answer in tokens.
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub answer_tokens: usize,
}

impl Default for AlignConfig {
    fn default() -> Self {
        AlignConfig {
            dpo_beta: 0.1,
            rpo_alpha: 1.0,
            reward_center: 0.01,
            kl_coef: 0.05,
            clip_range: 0.2,
            value_clip: 0.2,
            gamma: 1.0,
            lam: 0.95,
            vf_coef: 0.1,
            ppo_epochs: 4,
            rollout_prompts: 4,
            answers_per_prompt: 4,
            missing_end_penalty: -1.0,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            answer_tokens: 16,
        }
    }
}

impl AlignConfig {
    /// The options of this struct that `stage` reads (as serialised, camelCase): a stage is
    /// given only its own (the CLI refuses `kiln dpo --kl-coef`). Every field belongs to a
    /// stage (tests/cli.rs holds the union to the struct).
    pub fn stage_options(stage: StageKind) -> &'static [&'static str] {
        match stage {
            StageKind::Pretrain | StageKind::Sft => &[],
            StageKind::Reward => &["rewardCenter"],
            StageKind::Dpo => &["dpoBeta", "rpoAlpha"],
            StageKind::Ppo => &[
                "klCoef",
                "clipRange",
                "valueClip",
                "gamma",
                "lam",
                "vfCoef",
                "ppoEpochs",
                "rolloutPrompts",
                "answersPerPrompt",
                "missingEndPenalty",
                "temperature",
                "topK",
                "topP",
                "answerTokens",
            ],
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig::for_stage(StageKind::Pretrain)
    }
}

impl TrainConfig {
    /// The defaults of a stage. Pretraining: nanoGPT-like for tiny models. SFT starts
    /// from a trained model: a short warmup, fewer steps, short samples. Its learning rate
    /// stays at pretraining's: on the tiny preset after 300 pretraining steps, 400 SFT
    /// steps reached 73% held-out exact match at 2e-3, 86% at 3e-3 and 74% at 5e-3.
    pub fn for_stage(stage: StageKind) -> TrainConfig {
        let pretrain = TrainConfig {
            steps: 500,
            batch_size: 8,
            grad_accum: 1,
            lr: 3e-3,
            min_lr: 3e-4,
            warmup_steps: 20,
            beta1: 0.9,
            beta2: 0.99,
            weight_decay: 0.1,
            grad_clip: 1.0,
            eval_every: 50,
            eval_batches: 8,
            sample_every: 100,
            sample_tokens: 64,
            log_every: 10,
            seed: 1337,
            val_fraction: 0.1,
            align: AlignConfig::default(),
        };
        match stage {
            StageKind::Pretrain => pretrain,
            StageKind::Sft => TrainConfig { steps: 400, warmup_steps: 10, sample_tokens: 24, ..pretrain },
            // The preference stages see a few hundred ranked prompts at most: whole
            // prompts per batch (12 rows hold two of six answers; PPO's 16, four prompts
            // of four answers), short runs, frequent reports.
            StageKind::Reward | StageKind::Dpo | StageKind::Ppo => {
                let align = TrainConfig {
                    batch_size: 12,
                    warmup_steps: 5,
                    eval_every: 10,
                    eval_batches: 16,
                    sample_every: 0,
                    sample_tokens: 16,
                    log_every: 1,
                    ..pretrain
                };
                match stage {
                    StageKind::Reward => TrainConfig { steps: 150, lr: 1e-3, min_lr: 1e-4, ..align },
                    StageKind::Dpo => TrainConfig { steps: 100, lr: 3e-4, min_lr: 3e-5, ..align },
                    // PPO's gradient is noisy and AdamW turns noise into full-size steps:
                    // on the tiny preset (tests/chat_learning.rs) 3e-4 and 5e-5 cost 44
                    // and 11 points of task accuracy, 2e-5 three.
                    _ => TrainConfig { steps: 200, lr: 2e-5, min_lr: 2e-5, batch_size: 16, ..align },
                }
            }
        }
    }

    /// The stage's defaults with `options` on top (camelCase fields, as the JS API and
    /// the CLI give them; null for none). A learning rate given without `minLr` decays to
    /// a tenth of itself. Unknown fields are refused by name.
    pub fn from_options(stage: StageKind, options: &serde_json::Value) -> Result<TrainConfig> {
        let mut merged = serde_json::to_value(TrainConfig::for_stage(stage)).expect("JSON");
        let given = match options {
            serde_json::Value::Null => serde_json::Map::new(),
            serde_json::Value::Object(o) => o.clone(),
            _ => return Err(KilnError::Config("training options must be an object".into())),
        };
        for (key, value) in &given {
            if merged.get(key).is_none() {
                return Err(KilnError::Config(format!("unknown training option {key:?}")));
            }
            merged[key] = value.clone();
        }
        if let (Some(lr), false) = (given.get("lr").and_then(|x| x.as_f64()), given.contains_key("minLr")) {
            merged["minLr"] = (lr / 10.0).into();
        }
        let cfg: TrainConfig =
            serde_json::from_value(merged).map_err(|e| KilnError::Config(format!("training options: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(KilnError::Config(m.to_string()));
        if self.steps == 0 || self.batch_size == 0 || self.grad_accum == 0 {
            return bad("steps, batch size and gradient accumulation must be at least 1");
        }
        if self.batch_size > 4096 || self.grad_accum > 4096 || self.steps > 100_000_000 {
            return bad("the batch size and gradient accumulation must be at most 4096, the steps at most 10⁸");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) || self.min_lr < 0.0 || self.min_lr > self.lr {
            return bad("the learning rate must be positive, with 0 <= min_lr <= lr");
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("AdamW's betas must lie in [0, 1)");
        }
        if !(0.0..0.5).contains(&self.val_fraction) {
            return bad("the validation fraction must lie in [0, 0.5)");
        }
        Ok(())
    }

    pub fn schedule(&self) -> Schedule {
        Schedule { lr: self.lr, min_lr: self.min_lr, warmup_steps: self.warmup_steps, decay_steps: self.steps }
    }
}

/// What a step reports (camelCase in JSON, for the web page).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub stage: Option<StageKind>,
    pub step: u64,
    pub steps: u64,
    /// Training loss (mean nll per counted token), when it was read back this step.
    pub loss: Option<f32>,
    pub val_loss: Option<f32>,
    pub lr: f64,
    /// Tokens processed per second, padding and masked prompts included (the work done).
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
    pub eta_s: f64,
    pub sample: Option<String>,
    /// The most bytes of device buffers alive at once so far (WebGPU only).
    pub memory_peak_bytes: Option<u64>,
    /// Whether the run, as it stands after this step, resumes bit for bit from a
    /// checkpoint and is the divergence guard's good state: a finite validation, or (PPO,
    /// which has no validation set) the end of a round of rollouts. The browser autosaves here.
    pub save_point: bool,
    /// What the divergence guard did this step (a rollback, and why), else None.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The stage's own measures since the last report (pair accuracy, KL, …).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metrics: std::collections::BTreeMap<String, f64>,
}

/// What generating needs: the backend, the model and its KV-cache decoder.
pub type Generator<'a, B> = (&'a mut B, &'a Gpt<B>, &'a Decoder<<B as Backend>::Buf>);

/// A logged point of the loss curves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossPoint {
    pub step: u64,
    pub loss: Option<f32>,
    pub val_loss: Option<f32>,
}

/// A model, its optimizer and the stage it is in; `Checkpoint` saves and restores it.
pub struct Trainer<B: Backend> {
    pub be: B,
    pub model: Gpt<B>,
    pub tokenizer: Tokenizer,
    pub cfg: TrainConfig,
    pub opt: AdamW<B>,
    /// None until a stage begins: a model that can generate and be exported.
    pub stage: Option<Box<dyn Stage>>,
    pub step: u64,
    pub history: Vec<LossPoint>,
    acts: Option<Activations<B::Buf>>,
    eval_acts: Option<Activations<B::Buf>>,
    val: Vec<TokenBatch>,
    decoder: Option<Decoder<B::Buf>>,
    /// The models PPO reads but does not train.
    pub frozen: Frozen<B>,
    /// (time, step) when tokens/s was last measured.
    mark: (f64, u64),
    tokens_per_s: f64,
    started: f64,
    /// A step shared with helper workers (parallel.rs), between its calls.
    pub(super) parallel: Option<super::parallel::SharedStep<B>>,
    /// The divergence guard's last good state and running loss (guard.rs).
    pub(super) guard: super::guard::Guard,
}

/// Models that run forward only, with no gradient or optimizer buffers: PPO's reference
/// (the fine-tuned model) and reward model; and the K-row decoder its rollouts use.
pub struct Frozen<B: Backend> {
    pub reference: Option<Gpt<B>>,
    pub reward: Option<Gpt<B>>,
    rollout_decoder: Option<Decoder<B::Buf>>,
}

/// Refuses a run that cannot fit in the device's buffers, or in all the memory the
/// backend may use, before anything is allocated.
pub fn check_fits<B: Backend>(be: &B, model: &GptConfig, b: usize, t: usize) -> Result<()> {
    check_fits_within(be.max_buffer_bytes(), be.memory_budget_bytes(), model, b, t)
}

/// [`check_fits`] against limits known without a backend at hand (the page's estimate).
pub fn check_fits_within(
    max_buffer: Option<u64>,
    budget: Option<u64>,
    model: &GptConfig,
    b: usize,
    t: usize,
) -> Result<()> {
    if let Some(budget) = budget {
        let need = model.memory(b, t).total();
        if need > budget {
            return Err(KilnError::Config(format!(
                "a model of {model} at batch {b} needs {} MiB in all, over the {} MiB this backend can use; choose a smaller model, batch or context",
                need.div_ceil(1 << 20),
                budget >> 20
            )));
        }
    }
    let need = model.largest_buffer(b, t);
    if let Some(limit) = max_buffer {
        if need > limit {
            return Err(KilnError::Config(format!(
                "a model of {model} at batch {b} needs a buffer of {} MiB, over this device's limit of {} MiB (maxStorageBufferBindingSize); choose a smaller model, batch or context",
                need.div_ceil(1 << 20),
                limit >> 20
            )));
        }
    }
    Ok(())
}

impl<B: Backend> Trainer<B> {
    /// A model on `be`: from `params` (a checkpoint) when given, else GPT-2's
    /// initialisation from `seed`. No stage yet: call [`Trainer::begin`].
    pub fn with_model(
        be: B,
        tokenizer: Tokenizer,
        model_cfg: GptConfig,
        params: Option<&[f32]>,
        seed: u64,
    ) -> Result<Trainer<B>> {
        Trainer::with_layout(be, tokenizer, model_cfg, ParamLayout::new(&model_cfg), params, seed)
    }

    /// A model of any layout (one with a scalar head, say); see [`Trainer::with_model`].
    pub fn with_layout(
        mut be: B,
        tokenizer: Tokenizer,
        model_cfg: GptConfig,
        layout: ParamLayout,
        params: Option<&[f32]>,
        seed: u64,
    ) -> Result<Trainer<B>> {
        model_cfg.validate()?;
        if model_cfg.vocab_size != tokenizer.vocab_size() {
            return Err(KilnError::Config(format!(
                "the model's vocabulary ({}) differs from the tokenizer's ({})",
                model_cfg.vocab_size,
                tokenizer.vocab_size()
            )));
        }
        check_fits(&be, &model_cfg, 1, model_cfg.block_size)?;
        if let Some(values) = params {
            if values.len() != layout.total {
                return Err(KilnError::Config(format!(
                    "{} parameter values for a model of {}",
                    values.len(),
                    layout.total
                )));
            }
        }
        let values = match params {
            Some(values) => values.to_vec(),
            None => layout.init(&model_cfg, seed),
        };
        let model = Gpt::from_layout(&mut be, model_cfg, layout, &values, true)?;
        let opt = AdamW::new(&mut be, &model)?;
        let started = now_s();
        Ok(Trainer {
            be,
            model,
            tokenizer,
            cfg: TrainConfig::default(),
            opt,
            stage: None,
            step: 0,
            history: Vec::new(),
            acts: None,
            eval_acts: None,
            val: Vec::new(),
            decoder: None,
            frozen: Frozen { reference: None, reward: None, rollout_decoder: None },
            mark: (started, 0),
            tokens_per_s: 0.0,
            started,
            parallel: None,
            guard: Default::default(),
        })
    }

    /// A fresh pretraining run: a new model from `model_cfg` (initialised from
    /// `cfg.seed`) on `text`.
    pub fn pretrain(
        be: B,
        tokenizer: Tokenizer,
        text: &str,
        model_cfg: GptConfig,
        cfg: TrainConfig,
    ) -> Result<Trainer<B>> {
        cfg.validate()?;
        let stage = super::pretrain::Pretrain::new(&tokenizer, text, model_cfg.block_size, &cfg)?;
        let mut run = Trainer::with_model(be, tokenizer, model_cfg, None, cfg.seed)?;
        run.begin(Box::new(stage), cfg)?;
        Ok(run)
    }

    /// Starts `stage` on the model as it is: a fresh optimizer, step 0, a new history.
    pub fn begin(&mut self, stage: Box<dyn Stage>, cfg: TrainConfig) -> Result<()> {
        cfg.validate()?;
        let t = self.model.config.block_size;
        check_fits(&self.be, &self.model.config, cfg.batch_size, t)?;
        self.opt = AdamW::new(&mut self.be, &self.model)?;
        self.resume_stage(stage, cfg, 0, Vec::new())
    }

    /// Puts `stage` in place at `step` with the optimizer as it is (a resume checkpoint
    /// restores the optimizer's moments first).
    pub(crate) fn resume_stage(
        &mut self,
        stage: Box<dyn Stage>,
        cfg: TrainConfig,
        step: u64,
        history: Vec<LossPoint>,
    ) -> Result<()> {
        let t = self.model.config.block_size;
        check_fits(&self.be, &self.model.config, cfg.batch_size, t)?;
        let mut val = stage.val_batches(cfg.batch_size, cfg.eval_batches);
        if stage.heads().is_none() {
            // fixed weights: the mean over the counted tokens of all validation batches
            let total: f64 = val.iter().map(TokenBatch::weight_sum).sum();
            val = val.iter().map(|b| b.scaled((1.0 / total.max(1.0)) as f32)).collect();
        }
        self.acts = Some(Activations::new(&mut self.be, &self.model.config, cfg.batch_size, t)?);
        self.eval_acts = None;
        self.parallel = None;
        self.guard = Default::default();
        self.val = val;
        self.stage = Some(stage);
        self.cfg = cfg;
        self.step = step;
        self.history = history;
        self.started = now_s();
        self.mark = (self.started, step);
        self.tokens_per_s = 0.0;
        Ok(())
    }

    /// The stage in progress.
    pub fn stage(&self) -> Result<&dyn Stage> {
        self.stage.as_deref().ok_or_else(|| KilnError::Config("no training stage has begun".into()))
    }

    pub fn done(&self) -> bool {
        self.stage.is_none() || self.step >= self.cfg.steps
    }

    /// Tokens one optimizer step processes (B · T · accumulation).
    pub fn tokens_per_step(&self) -> usize {
        self.cfg.batch_size * self.model.config.block_size * self.cfg.grad_accum
    }

    /// One optimizer step, with validation and a sample when they are due.
    pub async fn train_one(&mut self) -> Result<Progress> {
        let cfg = self.cfg.clone();
        let kind = self.stage()?.kind();
        let lr = lr_at(&cfg.schedule(), self.step);
        let adamw = AdamWConfig { lr, beta1: cfg.beta1, beta2: cfg.beta2, eps: 1e-8, weight_decay: cfg.weight_decay };
        let last = self.step + 1 == cfg.steps;
        let report = self.step == 0 || (self.step + 1) % cfg.log_every.max(1) == 0 || last;
        if !self.guard.has_good_state() {
            self.keep_good_state().await?;
        }
        let token_loss = self.stage()?.heads().is_none();
        let step = self.step + 1;
        let loss = match self.stage()?.heads() {
            None => self.fixed_weight_step(adamw, report).await,
            Some(heads) => self.forward_dependent_step(heads, adamw).await.map(Some),
        };
        let loss = match loss {
            Err(KilnError::NonFiniteLoss { loss, .. }) => {
                return self.rolled_back(&format!("the loss became {loss} at step {step}"), kind, lr)
            }
            other => other?,
        };
        if let (Some(l), true) = (loss, token_loss) {
            if let Some(average) = self.guard.is_spike(l) {
                let what = format!(
                    "the loss jumped to {l:.3} at step {step}, over {}× its running average {average:.3}",
                    super::guard::SPIKE_FACTOR
                );
                return self.rolled_back(&what, kind, lr);
            }
        }
        self.step += 1;

        let due = self.step % cfg.eval_every.max(1) == 0 || last;
        // PPO has no validation set: its measures come with each round of rollouts
        let val_loss = if due && !self.val.is_empty() {
            match self.validate().await {
                Ok(v) if v.is_finite() => Some(v),
                Ok(v) | Err(KilnError::NonFiniteLoss { loss: v, .. }) => {
                    return self.rolled_back(&format!("the validation loss became {v} at step {step}"), kind, lr)
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        // without a validation set (PPO), the validation steps that fall between rounds
        let save_point = val_loss.is_some() || (due && self.val.is_empty() && self.stage()?.at_save_point());
        if save_point {
            self.keep_good_state().await?;
        }
        // PPO shows a few answers of each round of rollouts, with their scores
        let rollouts = match self.stage.as_mut().and_then(|s| s.as_ppo()) {
            Some(ppo) => ppo.take_latest(&self.tokenizer)?,
            None => None,
        };
        let sample = if rollouts.is_some() {
            rollouts
        } else if cfg.sample_every > 0 && (self.step % cfg.sample_every == 0 || last) {
            let sc = SampleConfig {
                max_tokens: cfg.sample_tokens,
                temperature: 0.8,
                top_k: 40,
                top_p: 1.0,
                seed: self.step,
            };
            Some(self.sample_stage(&sc).await?)
        } else {
            None
        };
        let now = now_s();
        if loss.is_some() || val_loss.is_some() {
            // Rates are measured between readbacks: only then has the GPU surely finished.
            let (t0, s0) = self.mark;
            if self.step > s0 && now > t0 {
                self.tokens_per_s = ((self.step - s0) as usize * self.tokens_per_step()) as f64 / (now - t0);
            }
            self.mark = (now, self.step);
            self.history.push(LossPoint { step: self.step, loss, val_loss });
        }
        let remaining = cfg.steps.saturating_sub(self.step) as f64 * self.tokens_per_step() as f64;
        Ok(Progress {
            stage: Some(kind),
            step: self.step,
            steps: cfg.steps,
            loss,
            val_loss,
            lr,
            tokens_per_s: self.tokens_per_s,
            elapsed_s: now - self.started,
            eta_s: if self.tokens_per_s > 0.0 { remaining / self.tokens_per_s } else { 0.0 },
            sample,
            memory_peak_bytes: self.be.memory_peak_bytes(),
            save_point,
            event: None,
            metrics: self.stage.as_mut().map(|s| s.metrics().into_iter().collect()).unwrap_or_default(),
        })
    }

    /// The step's report after the divergence guard rolled the run back (guard.rs).
    fn rolled_back(&mut self, what: &str, kind: StageKind, lr: f64) -> Result<Progress> {
        let event = self.roll_back(what)?;
        self.parallel = None;
        Ok(Progress {
            stage: Some(kind),
            step: self.step,
            steps: self.cfg.steps,
            loss: None,
            val_loss: None,
            lr,
            tokens_per_s: self.tokens_per_s,
            elapsed_s: now_s() - self.started,
            eta_s: 0.0,
            sample: None,
            memory_peak_bytes: self.be.memory_peak_bytes(),
            save_point: false,
            event: Some(event),
            metrics: Default::default(),
        })
    }

    /// A step of a stage whose weights are fixed by its batches (pretraining, SFT): one
    /// submit; the loss is read back only when `report`.
    /// A step shared with helpers (parallel.rs) is finished here instead.
    async fn fixed_weight_step(&mut self, adamw: AdamWConfig, report: bool) -> Result<Option<f32>> {
        if self.shared_step_ready() {
            let loss = self.finish_shared_step(adamw).await?;
            return Ok(report.then_some(loss));
        }
        let micro = self.step_batches();
        let acts = self.acts.as_ref().expect("a stage has begun");
        train_step(&mut self.be, &self.model, acts, &mut self.opt, &micro, adamw, self.cfg.grad_clip, report).await
    }

    /// The next step's micro-batches, their weights summing to 1 over the whole step:
    /// accumulation averages over counted tokens (supervised ones in SFT), not over
    /// micro-batches.
    pub(super) fn step_batches(&mut self) -> Vec<TokenBatch> {
        let (b, accum) = (self.cfg.batch_size, self.cfg.grad_accum);
        let stage = self.stage.as_mut().expect("a stage has begun");
        let micro: Vec<TokenBatch> = (0..accum).map(|_| stage.next_batch(b)).collect();
        let tokens: f64 = micro.iter().map(TokenBatch::weight_sum).sum();
        micro.iter().map(|b| b.scaled((1.0 / tokens.max(1.0)) as f32)).collect()
    }

    /// A step of a stage whose loss depends on the forward pass (reward model, DPO, PPO):
    /// per micro-batch, forward, one readback, the stage's gradients, backward; then AdamW.
    /// A non-finite loss stops the step before anything is updated.
    async fn forward_dependent_step(&mut self, heads: Heads, adamw: AdamWConfig) -> Result<f32> {
        self.prepare_reference().await?;
        self.ppo_round().await?;
        let (b, accum) = (self.cfg.batch_size, self.cfg.grad_accum);
        let Trainer { be, model, opt, stage, acts, .. } = self;
        let (stage, acts) = (stage.as_mut().expect("a stage has begun"), acts.as_ref().expect("a stage has begun"));
        be.clear(model.grads());
        let mut loss = 0.0;
        for _ in 0..accum {
            let batch = stage.next_batch(b);
            let out = forward_outputs(be, model, acts, &batch, heads).await?;
            let mut grads = stage.weigh(&batch, &out, Phase::Train)?;
            let scale = 1.0 / accum as f32;
            grads.weights.iter_mut().chain(grads.dvalues.iter_mut()).for_each(|g| *g *= scale);
            backward_with(be, model, acts, &batch, heads, &grads)?;
            loss += grads.loss / accum as f64;
        }
        if !loss.is_finite() {
            return Err(KilnError::NonFiniteLoss { step: self.step, loss: loss as f32 });
        }
        opt.update(be, model, adamw, self.cfg.grad_clip)?;
        be.flush();
        Ok(loss as f32)
    }

    /// The model's parameters: GPT-2's, then a scalar head's when it has one.
    pub async fn params(&mut self) -> Result<Vec<f32>> {
        self.be.read(&self.model.params).await
    }

    /// Gives the model a fresh scalar head (GPT-2's initialisation for it, from `seed`)
    /// after its GPT-2 tensors, replacing one it has; a fresh optimizer; no stage.
    pub async fn add_scalar_head(&mut self, kind: ScalarHeadKind, seed: u64) -> Result<()> {
        let cfg = self.model.config;
        let mut values = self.params().await?;
        values.truncate(cfg.num_params());
        let layout = ParamLayout::with_scalar_head(&cfg, kind);
        values.extend_from_slice(&layout.init(&cfg, seed)[cfg.num_params()..]);
        self.model = Gpt::from_layout(&mut self.be, cfg, layout, &values, true)?;
        self.opt = AdamW::new(&mut self.be, &self.model)?;
        self.stage = None;
        self.decoder = None;
        self.frozen.rollout_decoder = None;
        Ok(())
    }

    /// PPO's frozen models: the reference (GPT-2 tensors of the fine-tuned model) and the
    /// reward model (GPT-2 tensors and its reward head), same shape as this model.
    pub fn set_frozen(&mut self, reference: &[f32], reward: &[f32]) -> Result<()> {
        let cfg = self.model.config;
        let (plain, scored) = (ParamLayout::new(&cfg), ParamLayout::with_scalar_head(&cfg, ScalarHeadKind::Reward));
        if reference.len() != plain.total || reward.len() != scored.total {
            return Err(KilnError::Config(
                "the reference and reward models must have the policy's shape (the reward model with its head)".into(),
            ));
        }
        self.frozen.reference = Some(Gpt::from_layout(&mut self.be, cfg, plain, reference, false)?);
        self.frozen.reward = Some(Gpt::from_layout(&mut self.be, cfg, scored, reward, false)?);
        Ok(())
    }

    /// PPO: when its rollouts are used up, samples the next round with the policy (K
    /// answers per prompt decoded together) and scores it with the three models.
    async fn ppo_round(&mut self) -> Result<()> {
        let Some(ppo) = self.stage.as_mut().and_then(|s| s.as_ppo()) else { return Ok(()) };
        let Some(prompts) = ppo.rollout_prompts(&self.tokenizer)? else { return Ok(()) };
        let (b, a) = (self.cfg.batch_size, self.cfg.align.clone());
        if ppo.rows_per_round() > b {
            return Err(KilnError::Config(format!(
                "{} prompts × {} answers do not fit a batch of {b} rows",
                a.rollout_prompts, a.answers_per_prompt
            )));
        }
        let k = a.answers_per_prompt;
        if self.frozen.rollout_decoder.as_ref().map(Decoder::seqs) != Some(k) {
            self.frozen.rollout_decoder = Some(Decoder::batched(&mut self.be, &self.model, k)?);
        }
        let mut answers = Vec::with_capacity(prompts.len());
        for (i, prompt) in prompts.iter().enumerate() {
            let seed = self.cfg.seed ^ (self.step << 16) ^ ((i as u64) << 8);
            let sc = SampleConfig {
                max_tokens: a.answer_tokens,
                temperature: a.temperature,
                top_k: a.top_k,
                top_p: a.top_p,
                seed,
            };
            let decoder = self.frozen.rollout_decoder.as_ref().expect("just made");
            answers.push(sample_candidates(&mut self.be, &self.model, decoder, prompt, &sc).await?);
        }
        let ended: Vec<bool> = answers.iter().flatten().map(|c| c.ended).collect();
        let ppo = self.stage.as_mut().and_then(|s| s.as_ppo()).expect("checked");
        let batch = ppo.rollout_batch(&prompts, &answers, b);
        self.eval_acts()?;
        let acts = self.acts.as_ref().or(self.eval_acts.as_ref()).expect("just made");
        let missing = || KilnError::Config("PPO needs the reference and reward models (set_frozen)".into());
        let reference = self.frozen.reference.as_ref().ok_or_else(missing)?;
        let reward = self.frozen.reward.as_ref().ok_or_else(missing)?;
        let be = &mut self.be;
        let ref_out = forward_outputs(be, reference, acts, &batch, Heads::LM).await?;
        let reward_out = forward_outputs(be, reward, acts, &batch, Heads::SCALAR).await?;
        let policy_out = forward_outputs(be, &self.model, acts, &batch, Heads::POLICY_AND_VALUE).await?;
        let ppo = self.stage.as_mut().and_then(|s| s.as_ppo()).expect("checked");
        ppo.set_rollouts(&ref_out, &reward_out, &policy_out, &ended)
    }

    /// `k` answers to a chat prompt (ending with the user's turn), decoded together in one
    /// batch (row r samples with seed `cfg.seed + r`), each with its tokens' log-probs.
    pub async fn sample_answers(
        &mut self,
        messages: &[crate::data::chat::Message],
        k: usize,
        cfg: &SampleConfig,
    ) -> Result<Vec<crate::sample::Candidate>> {
        if !(1..=crate::data::preference::MAX_ANSWERS).contains(&k) {
            return Err(KilnError::Config(format!(
                "answers per prompt: 1 to {}, not {k}",
                crate::data::preference::MAX_ANSWERS
            )));
        }
        let ids = super::sft::chat_prompt(&self.tokenizer, messages, self.model.config.block_size)?;
        if self.frozen.rollout_decoder.as_ref().map(Decoder::seqs) != Some(k) {
            self.frozen.rollout_decoder = Some(Decoder::batched(&mut self.be, &self.model, k)?);
        }
        let decoder = self.frozen.rollout_decoder.as_ref().expect("just made");
        sample_candidates(&mut self.be, &self.model, decoder, &ids, cfg).await
    }

    /// log p(answer | prompt) of each answer (token ids, the stop token included) under
    /// this model: one forward pass per B answers.
    pub async fn answer_logps(&mut self, prompt: &[u32], answers: &[Vec<u32>]) -> Result<Vec<f64>> {
        let (b, t) = (self.cfg.batch_size, self.model.config.block_size);
        self.eval_acts()?;
        let acts = self.acts.as_ref().or(self.eval_acts.as_ref()).expect("just made");
        let mut out = Vec::with_capacity(answers.len());
        for chunk in answers.chunks(b) {
            let rows: Vec<_> = chunk.iter().map(|a| super::preference::answer_row(prompt, a, t)).collect();
            let refs: Vec<&crate::data::Row> = rows.iter().collect();
            let batch = crate::data::make_batch(&refs, b, t);
            let nll = forward_outputs(&mut self.be, &self.model, acts, &batch, Heads::LM).await?.nll;
            for (k, row) in rows.iter().enumerate() {
                let (first, last, _) = super::preference::answer_span(row);
                out.push(-(first..=last).map(|p| nll[k * t + p] as f64).sum::<f64>());
            }
        }
        Ok(out)
    }

    /// Gives a stage that keeps reference outputs (DPO) those of the model as it is now.
    async fn prepare_reference(&mut self) -> Result<()> {
        let Some(stage) = self.stage.as_ref().filter(|s| s.needs_reference()) else { return Ok(()) };
        let heads = stage.heads().unwrap_or(Heads::LM);
        let b = self.cfg.batch_size;
        let batches = stage.reference_batches(b);
        self.eval_acts()?;
        let acts = self.acts.as_ref().or(self.eval_acts.as_ref()).expect("just made");
        let mut outputs = Vec::with_capacity(batches.len());
        for batch in &batches {
            outputs.push(forward_outputs(&mut self.be, &self.model, acts, batch, heads).await?);
        }
        self.stage.as_mut().expect("checked").set_reference(b, outputs)
    }

    /// Makes sure there are activations for passes outside a step (validation, references,
    /// rollouts' scores): the training step's own, when a stage has begun (every step
    /// writes them afresh, so nothing is kept in them between steps, and a second set
    /// would double the largest part of the device memory), else a set of their own.
    fn eval_acts(&mut self) -> Result<()> {
        if self.acts.is_none() && self.eval_acts.is_none() {
            let (b, t) = (self.cfg.batch_size, self.model.config.block_size);
            self.eval_acts = Some(Activations::new(&mut self.be, &self.model.config, b, t)?);
        }
        Ok(())
    }

    /// Mean validation loss per counted token.
    pub async fn validate(&mut self) -> Result<f32> {
        let heads = self.stage()?.heads();
        self.eval_acts()?;
        let Trainer { be, model, stage, acts, eval_acts, val, .. } = self;
        let (stage, acts) =
            (stage.as_mut().expect("checked"), acts.as_ref().or(eval_acts.as_ref()).expect("just made"));
        let loss = match heads {
            None => evaluate(be, model, acts, val).await?,
            Some(heads) => {
                let mut sum = 0.0;
                for (i, batch) in val.iter().enumerate() {
                    let out = forward_outputs(be, model, acts, batch, heads).await?;
                    sum += stage.weigh(batch, &out, Phase::Val(i))?.loss;
                }
                (sum / val.len().max(1) as f64) as f32
            }
        };
        if !loss.is_finite() {
            return Err(KilnError::NonFiniteLoss { step: self.step, loss });
        }
        Ok(loss)
    }

    /// The backend, the model and its KV-cache decoder, for generating.
    pub fn generator(&mut self) -> Result<Generator<'_, B>> {
        if self.decoder.is_none() {
            self.decoder = Some(Decoder::new(&mut self.be, &self.model)?);
        }
        Ok((&mut self.be, &self.model, self.decoder.as_ref().expect("just made")))
    }

    /// Token ids a prompt starts from: `<|bos|>` and the prompt's tokens.
    pub fn prompt_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        let mut ids = vec![crate::tokenizer::BOS];
        ids.extend(self.tokenizer.encode(prompt)?);
        Ok(ids)
    }

    /// Text generated from `prompt` by the current model.
    pub async fn sample(&mut self, prompt: &str, cfg: &SampleConfig) -> Result<String> {
        let ids = self.prompt_ids(prompt)?;
        self.continue_ids(&ids, cfg).await
    }

    /// Text generated after the token ids `ids`.
    pub async fn continue_ids(&mut self, ids: &[u32], cfg: &SampleConfig) -> Result<String> {
        let (be, model, decoder) = self.generator()?;
        let out = generate(be, model, decoder, ids, cfg, |_| true).await?;
        self.tokenizer.decode(&out)
    }

    /// A sample of what the stage teaches: a continuation of nothing in pretraining, the
    /// answer to a held-out question in SFT (shown with its prompt).
    async fn sample_stage(&mut self, cfg: &SampleConfig) -> Result<String> {
        let (ids, shown) = self.stage()?.sample_prompt(&self.tokenizer)?;
        let text = self.continue_ids(&ids, cfg).await?;
        Ok(format!("{shown}{text}"))
    }
}
