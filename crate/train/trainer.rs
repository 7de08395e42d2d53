//! The trainer every stage shares: a model on a backend, its tokenizer, AdamW and the
//! schedule, the one-submit step, the loss history and tokens/s. A [`Stage`] supplies
//! the batches (with a loss weight per position), the validation set and its own state;
//! `begin` starts a stage on the model as it is (pretraining, then SFT, …), with a fresh
//! optimizer and schedule.

use serde::{Deserialize, Serialize};

use super::optimizer::{lr_at, AdamW, Schedule};
use super::stage::{Stage, StageKind};
use super::step::{evaluate, train_step, TokenBatch};
use crate::backend::Backend;
use crate::clock::now_s;
use crate::cpu::adamw::AdamWConfig;
use crate::error::{KilnError, Result};
use crate::model::{Activations, Gpt, GptConfig};
use crate::sample::{generate, Decoder, SampleConfig};
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
    /// Share of the documents (or conversations) held out for validation.
    pub val_fraction: f64,
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
        };
        match stage {
            StageKind::Pretrain => pretrain,
            StageKind::Sft => TrainConfig { steps: 400, warmup_steps: 10, sample_tokens: 24, ..pretrain },
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
    /// (time, step) when tokens/s was last measured.
    mark: (f64, u64),
    tokens_per_s: f64,
    started: f64,
}

/// Refuses a run that cannot fit in the device's buffers, before anything is allocated.
pub fn check_fits(limit: Option<u64>, model: &GptConfig, b: usize, t: usize) -> Result<()> {
    let need = model.largest_buffer(b, t);
    if let Some(limit) = limit {
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
        mut be: B,
        tokenizer: Tokenizer,
        model_cfg: GptConfig,
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
        check_fits(be.max_buffer_bytes(), &model_cfg, 1, model_cfg.block_size)?;
        let model = match params {
            Some(values) => Gpt::from_params(&mut be, model_cfg, values)?,
            None => Gpt::new(&mut be, model_cfg, seed)?,
        };
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
            mark: (started, 0),
            tokens_per_s: 0.0,
            started,
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
        check_fits(self.be.max_buffer_bytes(), &self.model.config, cfg.batch_size, t)?;
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
        check_fits(self.be.max_buffer_bytes(), &self.model.config, cfg.batch_size, t)?;
        let mut val = stage.val_batches(cfg.batch_size, cfg.eval_batches);
        let total: f64 = val.iter().map(TokenBatch::weight_sum).sum();
        val = val.iter().map(|b| b.scaled((1.0 / total.max(1.0)) as f32)).collect();
        self.acts = Some(Activations::new(&mut self.be, &self.model.config, cfg.batch_size, t)?);
        self.eval_acts = None;
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
        let stage = self.stage.as_mut().ok_or_else(|| KilnError::Config("no training stage has begun".into()))?;
        let kind = stage.kind();
        let mut micro: Vec<TokenBatch> = (0..cfg.grad_accum).map(|_| stage.next_batch(cfg.batch_size)).collect();
        // Σ weights over the whole step = 1: accumulation averages over counted tokens
        // (supervised ones in SFT), not over micro-batches.
        let tokens: f64 = micro.iter().map(TokenBatch::weight_sum).sum();
        micro = micro.iter().map(|b| b.scaled((1.0 / tokens.max(1.0)) as f32)).collect();
        let lr = lr_at(&cfg.schedule(), self.step);
        let adamw = AdamWConfig { lr, beta1: cfg.beta1, beta2: cfg.beta2, eps: 1e-8, weight_decay: cfg.weight_decay };
        let last = self.step + 1 == cfg.steps;
        let report = self.step == 0 || (self.step + 1) % cfg.log_every.max(1) == 0 || last;
        let acts = self.acts.as_ref().expect("a stage has begun");
        let loss =
            train_step(&mut self.be, &self.model, acts, &mut self.opt, &micro, adamw, cfg.grad_clip, report).await?;
        self.step += 1;

        let val_loss = if self.step % cfg.eval_every.max(1) == 0 || last { Some(self.validate().await?) } else { None };
        let sample = if cfg.sample_every > 0 && (self.step % cfg.sample_every == 0 || last) {
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
        })
    }

    /// Mean validation loss per counted token.
    pub async fn validate(&mut self) -> Result<f32> {
        self.stage()?;
        if self.eval_acts.is_none() {
            let (b, t) = (self.cfg.batch_size, self.model.config.block_size);
            self.eval_acts = Some(Activations::new(&mut self.be, &self.model.config, b, t)?);
        }
        let acts = self.eval_acts.as_ref().expect("just made");
        let loss = evaluate(&mut self.be, &self.model, acts, &self.val).await?;
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
