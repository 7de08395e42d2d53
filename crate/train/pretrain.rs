//! Pretraining: next-token prediction on the user's text. A short loop over the shared
//! step: draw micro-batches, weight every real token 1/N over the whole step (so
//! accumulation averages over tokens, not micro-batches), step, and now and then
//! validate and sample.

use serde::{Deserialize, Serialize};

use super::optimizer::{lr_at, AdamW, Schedule};
use super::step::{evaluate, train_step, TokenBatch};
use crate::backend::Backend;
use crate::clock::now_s;
use crate::cpu::adamw::AdamWConfig;
use crate::data::{Batcher, BatcherState, Dataset};
use crate::error::{KilnError, Result};
use crate::model::{Activations, Gpt, GptConfig};
use crate::sample::{generate, Decoder, SampleConfig};
use crate::tokenizer::Tokenizer;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainConfig {
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
    pub val_fraction: f64,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
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
        }
    }
}

impl PretrainConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(KilnError::Config(m.to_string()));
        if self.steps == 0 || self.batch_size == 0 || self.grad_accum == 0 {
            return bad("steps, batch size and gradient accumulation must be at least 1");
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
    pub step: u64,
    pub steps: u64,
    /// Training loss (mean nll per token), when it was read back this step.
    pub loss: Option<f32>,
    pub val_loss: Option<f32>,
    pub lr: f64,
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

/// Everything a pretraining run holds; `Checkpoint` saves and restores it.
pub struct Pretrainer<B: Backend> {
    pub be: B,
    pub model: Gpt<B>,
    pub tokenizer: Tokenizer,
    pub data: Dataset,
    pub cfg: PretrainConfig,
    pub opt: AdamW<B>,
    pub batcher: Batcher,
    pub step: u64,
    pub history: Vec<LossPoint>,
    acts: Activations<B::Buf>,
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

impl<B: Backend> Pretrainer<B> {
    /// A fresh run: the dataset from `text`, a new model from `model_cfg` (its vocabulary
    /// is the tokenizer's), initialised from `cfg.seed`.
    pub fn new(
        be: B,
        tokenizer: Tokenizer,
        text: &str,
        model_cfg: GptConfig,
        cfg: PretrainConfig,
    ) -> Result<Pretrainer<B>> {
        Self::with_params(be, tokenizer, text, model_cfg, cfg, None)
    }

    /// A fresh run that starts from given parameters (an imported model) when `params`
    /// is Some, with a new optimizer.
    pub fn with_params(
        mut be: B,
        tokenizer: Tokenizer,
        text: &str,
        model_cfg: GptConfig,
        cfg: PretrainConfig,
        params: Option<&[f32]>,
    ) -> Result<Pretrainer<B>> {
        cfg.validate()?;
        model_cfg.validate()?;
        if model_cfg.vocab_size != tokenizer.vocab_size() {
            return Err(KilnError::Config(format!(
                "the model's vocabulary ({}) differs from the tokenizer's ({})",
                model_cfg.vocab_size,
                tokenizer.vocab_size()
            )));
        }
        let t = model_cfg.block_size;
        check_fits(be.max_buffer_bytes(), &model_cfg, cfg.batch_size, t)?;
        let data = Dataset::new(&tokenizer, text, t, cfg.val_fraction, cfg.seed)?;
        let model = match params {
            Some(values) => Gpt::from_params(&mut be, model_cfg, values)?,
            None => Gpt::new(&mut be, model_cfg, cfg.seed)?,
        };
        let opt = AdamW::new(&mut be, &model)?;
        let batcher = Batcher::new(data.train.len(), cfg.seed);
        Self::assemble(be, model, tokenizer, data, cfg, opt, batcher, 0, Vec::new())
    }

    pub(crate) fn assemble(
        mut be: B,
        model: Gpt<B>,
        tokenizer: Tokenizer,
        data: Dataset,
        cfg: PretrainConfig,
        opt: AdamW<B>,
        batcher: Batcher,
        step: u64,
        history: Vec<LossPoint>,
    ) -> Result<Pretrainer<B>> {
        let acts = Activations::new(&mut be, &model.config, cfg.batch_size, data.t)?;
        let mut val = data.val_batches(cfg.batch_size, cfg.eval_batches);
        let total: f64 = val.iter().map(TokenBatch::weight_sum).sum();
        val = val.iter().map(|b| b.scaled((1.0 / total.max(1.0)) as f32)).collect();
        let started = now_s();
        Ok(Pretrainer {
            be,
            model,
            tokenizer,
            data,
            cfg,
            opt,
            batcher,
            step,
            history,
            acts,
            eval_acts: None,
            val,
            decoder: None,
            mark: (started, step),
            tokens_per_s: 0.0,
            started,
        })
    }

    pub fn batcher_state(&self) -> BatcherState {
        self.batcher.state()
    }

    pub fn done(&self) -> bool {
        self.step >= self.cfg.steps
    }

    /// Tokens one optimizer step processes (B · T · accumulation).
    pub fn tokens_per_step(&self) -> usize {
        self.cfg.batch_size * self.data.t * self.cfg.grad_accum
    }

    /// One optimizer step, with validation and a sample when they are due.
    pub async fn train_one(&mut self) -> Result<Progress> {
        let cfg = self.cfg.clone();
        let mut micro: Vec<TokenBatch> =
            (0..cfg.grad_accum).map(|_| self.batcher.next(&self.data, cfg.batch_size)).collect();
        let tokens: f64 = micro.iter().map(TokenBatch::weight_sum).sum();
        micro = micro.iter().map(|b| b.scaled((1.0 / tokens.max(1.0)) as f32)).collect();
        let lr = lr_at(&cfg.schedule(), self.step);
        let adamw = AdamWConfig { lr, beta1: cfg.beta1, beta2: cfg.beta2, eps: 1e-8, weight_decay: cfg.weight_decay };
        let last = self.step + 1 == cfg.steps;
        let report = self.step == 0 || (self.step + 1) % cfg.log_every.max(1) == 0 || last;
        let loss =
            train_step(&mut self.be, &self.model, &self.acts, &mut self.opt, &micro, adamw, cfg.grad_clip, report)
                .await?;
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
            Some(self.sample("", &sc).await?)
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

    /// Mean validation loss per token.
    pub async fn validate(&mut self) -> Result<f32> {
        if self.eval_acts.is_none() {
            let b = self.cfg.batch_size;
            self.eval_acts = Some(Activations::new(&mut self.be, &self.model.config, b, self.data.t)?);
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
        let (be, model, decoder) = self.generator()?;
        let out = generate(be, model, decoder, &ids, cfg, |_| true).await?;
        self.tokenizer.decode(&out)
    }
}
