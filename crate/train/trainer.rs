//! The trainer every stage shares: a model on a backend, its tokenizer, AdamW and the
//! schedule, the one-submit step, the loss history and tokens/s. A [`Stage`] supplies
//! the batches (with a loss weight per position), the validation set and its own state;
//! `begin` starts a stage on the model as it is (pretraining, then SFT, …), with a fresh
//! optimizer and schedule.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::guard::{GoodState, Guard, MAX_ROLLBACKS, SPIKE_FACTOR};
use super::optimizer::{lr_at, AdamW};
use super::parallel::{ShareResult, SharedStep, StepShares};
use super::stage::{Phase, Stage};
use super::step::{backward_with, evaluate, forward_outputs, train_step, Heads, Outputs, TokenBatch};
use super::{Metrics, StageKind};
use crate::backend::Backend;
use crate::checkpoint::ModelExtras;
use crate::clock::now_s;
use crate::cpu::adamw::AdamWConfig;
use crate::data::chat::Message;
use crate::data::format::ChatFormat;
use crate::data::template::ChatTemplate;
use crate::data::Files;
use crate::error::{KilnError, Result};
use crate::model::lora::{LoraConfig, LoraLayout};
use crate::model::weights::Weights;

use crate::model::{Activations, Gpt, GptConfig, ParamLayout, ScalarHeadKind};
use crate::sample::{generate, sample_candidates, Decoder, SampleConfig};
use crate::tokenizer::Tokenizer;

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
    #[serde(default, skip_serializing_if = "Metrics::is_empty")]
    pub metrics: Metrics,
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

/// A model a stage reads but does not train.
enum FrozenModel<B: Backend> {
    /// A copy on the device: the reward model, or the reference under full training.
    Copy(Box<Gpt<B>>),
    /// The trained model itself with its adapters off: under LoRA the base is the
    /// reference (as TRL does with PEFT), so no second copy is held.
    AdaptersOff,
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
    /// The imported model's own generation_config.json, kept for export (see
    /// `checkpoint::model_files_keeping`); None: Kiln's own is written. Never read for
    /// Kiln's sampling.
    pub generation_config: Option<serde_json::Value>,
    /// An imported model's own chat template (None: Kiln's).
    pub chat_template: Option<Arc<ChatTemplate>>,
    /// An imported Llama-family model's own tokenizer files, written back on export
    /// (`checkpoint::pretrained_model_files`); empty for Kiln's models.
    pub own_files: Files,
    acts: Option<Activations<B::Buf>>,
    eval_acts: Option<Activations<B::Buf>>,
    val: Vec<TokenBatch>,
    decoder: Option<Decoder<B::Buf>>,
    /// Models the stage reads but does not train ([`Trainer::set_frozen`]).
    frozen: Vec<FrozenModel<B>>,
    /// The K-row decoder of rollouts and candidate answers.
    batched_decoder: Option<Decoder<B::Buf>>,
    /// (time, step) when tokens/s was last measured.
    mark: (f64, u64),
    tokens_per_s: f64,
    started: f64,
    /// A step shared with helper workers (parallel.rs), between its calls.
    parallel: Option<SharedStep<B>>,
    /// The divergence guard's last good state and running loss (guard.rs).
    guard: Guard,
}

/// Refuses a run that cannot fit in the device's buffers, or in all the memory the
/// backend may use, before anything is allocated.
pub fn check_fits<B: Backend>(be: &B, model: &GptConfig, b: usize, t: usize) -> Result<()> {
    check_fits_within(be.max_buffer_bytes(), be.memory_budget_bytes(), model, b, t)
}

/// [`check_fits`] for training with `lora` (None: every weight trains).
/// `half`: the frozen weights are kept in 16 bits (`model::weights`), which LoRA leaves
/// them in; training every weight holds them in f32.
pub fn check_fits_lora<B: Backend>(
    be: &B,
    model: &GptConfig,
    lora: Option<&LoraConfig>,
    half: bool,
    b: usize,
    t: usize,
) -> Result<()> {
    let (mut memory, mut largest) = match lora {
        Some(lora) => (crate::model::lora::memory(model, lora, b, t)?, model.largest_buffer(b, t)),
        None => (model.memory(b, t), model.largest_buffer(b, t)),
    };
    if let (true, Some(_)) = (half, lora) {
        memory = crate::model::weights::estimate_in_16_bits(memory, model);
        let (_, weights_largest) = crate::model::weights::stored_bytes(&ParamLayout::new(model), true);
        largest = weights_largest.max(model.largest_activation(b, t));
    }
    check_fits_memory(be.max_buffer_bytes(), be.memory_budget_bytes(), model, memory, largest, b)
}

/// [`check_fits`] against limits known without a backend at hand (the page's estimate).
pub fn check_fits_within(
    max_buffer: Option<u64>,
    budget: Option<u64>,
    model: &GptConfig,
    b: usize,
    t: usize,
) -> Result<()> {
    check_fits_memory(max_buffer, budget, model, model.memory(b, t), model.largest_buffer(b, t), b)
}

fn check_fits_memory(
    max_buffer: Option<u64>,
    budget: Option<u64>,
    model: &GptConfig,
    memory: crate::model::MemoryEstimate,
    need: u64,
    b: usize,
) -> Result<()> {
    if let Some(budget) = budget {
        let need = memory.total();
        if need > budget {
            return Err(KilnError::Config(format!(
                "a model of {model} at batch {b} needs {} MiB in all, over the {} MiB this backend can use; choose a smaller model, batch or context",
                need.div_ceil(1 << 20),
                budget >> 20
            )));
        }
    }
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
        // an imported model may have more embedding rows than tokens (rounded up), never fewer
        let fits = match tokenizer.is_pretrained() {
            true => tokenizer.vocab_size() <= model_cfg.vocab_size,
            false => tokenizer.vocab_size() == model_cfg.vocab_size,
        };
        if !fits {
            return Err(KilnError::Config(format!(
                "the model's vocabulary ({}) differs from the tokenizer's ({})",
                model_cfg.vocab_size,
                tokenizer.vocab_size()
            )));
        }
        // the least a run of it needs (LoRA's); a stage checks its own when it begins
        if let Some(values) = params {
            if values.len() != layout.total {
                return Err(KilnError::Config(format!(
                    "{} parameter values for a model of {}",
                    values.len(),
                    layout.total
                )));
            }
        }
        let half = params.is_some_and(|v| Weights::<B::Buf>::format_for(&be, &layout, v, true).is_some());
        check_fits_lora(&be, &model_cfg, Some(&LoraConfig::default()), half, 1, model_cfg.block_size)?;
        let values = match params {
            Some(values) => values.to_vec(),
            None => layout.init(&model_cfg, seed),
        };
        // no gradients or moments yet: a stage gives them to what it trains ([`Trainer::begin`])
        let model = Gpt::from_layout(&mut be, model_cfg, layout, &values, false)?;
        let opt = AdamW::empty(&mut be)?;
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
            generation_config: None,
            chat_template: None,
            own_files: Files::new(),
            acts: None,
            eval_acts: None,
            val: Vec::new(),
            decoder: None,
            frozen: Vec::new(),
            batched_decoder: None,
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
    /// With `cfg.lora_rank` above 0 the model's weights freeze and adapters train: new
    /// ones on a model without, the same ones on a model that has them (merge others
    /// first: [`Trainer::fit_lora`]).
    pub fn begin(&mut self, stage: Box<dyn Stage>, cfg: TrainConfig) -> Result<()> {
        cfg.validate()?;
        let t = self.model.config.block_size;
        let wanted = cfg.lora()?;
        let half = self.model.weights.format().is_some();
        check_fits_lora(&self.be, &self.model.config, wanted.as_ref(), half, cfg.batch_size, t)?;
        let has = self.model.lora.as_ref().map(|l| &l.layout.config);
        if has != wanted.as_ref() {
            if has.is_some() {
                return Err(KilnError::Config(
                    "the model trains other LoRA adapters; merge them into it first (fit_lora)".into(),
                ));
            }
            let lora = wanted.expect("differs from none");
            self.model.add_lora(&mut self.be, lora, None, cfg.seed)?;
            self.decoder = None;
            self.batched_decoder = None;
        }
        self.model.ensure_grads(&mut self.be)?;
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
        let lora = self.model.lora.as_ref().map(|l| &l.layout.config);
        let half = self.model.weights.format().is_some();
        check_fits_lora(&self.be, &self.model.config, lora, half, cfg.batch_size, t)?;
        let mut val = stage.val_batches(cfg.batch_size, cfg.eval_batches);
        if stage.heads().is_none() {
            // fixed weights: the mean over the counted tokens of all validation batches
            let total: f64 = val.iter().map(TokenBatch::weight_sum).sum();
            val = val.iter().map(|b| b.scaled((1.0 / total.max(1.0)) as f32)).collect();
        }
        self.acts = Some(Activations::for_model(&mut self.be, &self.model, cfg.batch_size, t)?);
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
                    SPIKE_FACTOR
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
        // a stage may show its own (PPO: a few answers of each round, with their scores)
        let shown = match self.stage.as_mut() {
            Some(stage) => stage.take_shown(&self.tokenizer)?,
            None => None,
        };
        let sample = if shown.is_some() {
            shown
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
            metrics: self.stage.as_mut().map(|s| s.metrics()).unwrap_or_default(),
        })
    }

    /// Keeps the run as it is now as the state a rollback returns to (guard.rs).
    async fn keep_good_state(&mut self) -> Result<()> {
        self.guard.keep(GoodState {
            params: self.be.read(self.model.trainable().0).await?,
            m: self.be.read(&self.opt.m).await?,
            v: self.be.read(&self.opt.v).await?,
            adam_step: self.opt.step,
            step: self.step,
            history_len: self.history.len(),
        });
        Ok(())
    }

    /// Returns the run to its last good state with half the learning rate, and says what
    /// happened (guard.rs).
    fn roll_back(&mut self, what: &str) -> Result<String> {
        let good = self.guard.roll_back(what, self.cfg.lr)?;
        self.be.write(self.model.trainable().0, 0, &good.params);
        self.be.write(&self.opt.m, 0, &good.m);
        self.be.write(&self.opt.v, 0, &good.v);
        self.opt.step = good.adam_step;
        self.step = good.step;
        self.history.truncate(good.history_len);
        self.cfg.lr *= 0.5;
        self.cfg.min_lr = self.cfg.min_lr.min(self.cfg.lr);
        Ok(format!(
            "{what}: rolled back to step {} and halved the learning rate to {:.1e} (rollback {} of at most {MAX_ROLLBACKS})",
            self.step, self.cfg.lr, self.guard.rollbacks
        ))
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

    /// Begins a step shared by `workers` (this trainer and `workers − 1` helpers;
    /// parallel.rs). None when it cannot be shared: one worker, a stage with a
    /// forward-dependent loss, a model with a scalar head or LoRA adapters, or a batch of
    /// one row.
    pub async fn share_step(&mut self, workers: usize) -> Result<Option<StepShares>> {
        let plain = self.model.layout.scalar_head.is_none() && self.model.lora.is_none();
        let fixed = self.stage.as_ref().is_some_and(|s| s.heads().is_none());
        if workers < 2 || !plain || !fixed || self.done() || self.cfg.batch_size < 2 {
            return Ok(None);
        }
        let micro = self.step_batches();
        let acts = self.parallel.take().and_then(SharedStep::into_acts);
        let (step, shares) = SharedStep::split(&micro, workers, acts);
        self.parallel = Some(step);
        let params = self.model.weights.read(&mut self.be, &self.model.layout).await?;
        Ok(Some(StepShares { config: self.model.config, params, shares }))
    }

    /// Runs the trainer's own shares of the step `share_step` began (while helpers run
    /// theirs).
    pub async fn local_share(&mut self) -> Result<()> {
        let p = self.parallel.as_mut().ok_or_else(|| KilnError::Config("no shared step to compute".into()))?;
        p.run_local(&mut self.be, &self.model)
    }

    /// The helpers' results for the shared step, in helper order.
    pub fn add_share_results(&mut self, results: Vec<ShareResult>) -> Result<()> {
        let p = self.parallel.as_mut().ok_or_else(|| KilnError::Config("no shared step".into()))?;
        p.add_results(results, self.model.layout.total)
    }

    /// A step of a stage whose weights are fixed by its batches (pretraining, SFT): one
    /// submit; the loss is read back only when `report`.
    /// A step shared with helpers (parallel.rs) is finished here instead.
    async fn fixed_weight_step(&mut self, adamw: AdamWConfig, report: bool) -> Result<Option<f32>> {
        if self.parallel.as_mut().is_some_and(SharedStep::ready) {
            let p = self.parallel.as_mut().expect("checked");
            let loss = p.finish(&mut self.be, &self.model, &mut self.opt, adamw, self.cfg.grad_clip).await?;
            return Ok(report.then_some(loss));
        }
        let micro = self.step_batches();
        let acts = self.acts.as_ref().expect("a stage has begun");
        train_step(&mut self.be, &self.model, acts, &mut self.opt, &micro, adamw, self.cfg.grad_clip, report).await
    }

    /// The next step's micro-batches, their weights summing to 1 over the whole step:
    /// accumulation averages over counted tokens (supervised ones in SFT), not over
    /// micro-batches.
    fn step_batches(&mut self) -> Vec<TokenBatch> {
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
        self.rollouts().await?;
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

    /// The model's parameters: GPT-2's, then a scalar head's when it has one; its
    /// adapters merged in when it trains LoRA.
    pub async fn params(&mut self) -> Result<Vec<f32>> {
        let mut values = self.model.weights.read(&mut self.be, &self.model.layout).await?;
        if let Some((lora, adapters)) = self.adapter().await? {
            lora.merge(&self.model.config, &self.model.layout, &mut values, &adapters);
        }
        Ok(values)
    }

    /// The frozen parameters under the adapters (all of them without LoRA).
    pub async fn base_params(&mut self) -> Result<Vec<f32>> {
        self.model.weights.read(&mut self.be, &self.model.layout).await
    }

    /// The LoRA adapters the model trains, and their values.
    pub async fn adapter(&mut self) -> Result<Option<(LoraLayout, Vec<f32>)>> {
        match &self.model.lora {
            Some(lora) => Ok(Some((lora.layout.clone(), self.be.read(&lora.params).await?))),
            None => Ok(None),
        }
    }

    /// The values this run trains, as [`Trainer::put_trained`] takes them back: the
    /// adapters (and a head beside them) under LoRA, else every weight.
    pub async fn trained_values(&mut self) -> Result<Vec<f32>> {
        match &self.model.lora {
            Some(lora) => self.be.read(&lora.params).await,
            None => self.base_params().await,
        }
    }

    /// Puts back values [`Trainer::trained_values`] read, in place (the stage and the
    /// optimizer as they are): an undo.
    pub fn put_trained(&mut self, values: &[f32]) -> Result<()> {
        let (buf, len) = match &self.model.lora {
            Some(lora) => (&lora.params, lora.layout.total),
            None if self.model.weights.format().is_none() => (self.model.weights.all_f32(), self.model.layout.total),
            None => return Err(KilnError::Config("a model held in 16 bits trains only adapters".into())),
        };
        if values.len() != len {
            return Err(KilnError::Config(format!("{} values for a model that trains {len}", values.len())));
        }
        self.be.write(buf, 0, values);
        Ok(())
    }

    /// Makes the model ready for `cfg`'s LoRA: adapters that differ from what it wants
    /// (other ones, or none: full fine-tuning) are merged into the weights first.
    pub async fn fit_lora(&mut self, cfg: &TrainConfig) -> Result<()> {
        let wanted = cfg.lora()?;
        match &self.model.lora {
            Some(lora) if Some(&lora.layout.config) != wanted.as_ref() => {}
            _ => return Ok(()),
        }
        let values = self.params().await?;
        let layout = self.model.layout.clone();
        let roles = self.model.roles.clone();
        self.model = Gpt::from_layout(&mut self.be, self.model.config, layout, &values, false)?;
        self.model.roles = roles;
        self.opt = AdamW::empty(&mut self.be)?;
        self.acts = None;
        self.eval_acts = None;
        self.decoder = None;
        self.batched_decoder = None;
        Ok(())
    }

    /// Puts adapters on the model (a resume, or a preference stage continuing the
    /// fine-tuning's adapters) and a fresh optimizer for them.
    pub fn set_adapter(&mut self, config: LoraConfig, values: &[f32]) -> Result<()> {
        self.model.add_lora(&mut self.be, config, Some(values), 0)?;
        self.opt = AdamW::new(&mut self.be, &self.model)?;
        self.acts = None;
        self.eval_acts = None;
        self.decoder = None;
        self.batched_decoder = None;
        Ok(())
    }

    /// Gradients and AdamW's moments for every weight (a resume of full training).
    pub fn train_every_weight(&mut self) -> Result<()> {
        self.model.ensure_grads(&mut self.be)?;
        self.opt = AdamW::new(&mut self.be, &self.model)?;
        Ok(())
    }

    /// Gives the model a fresh scalar head (GPT-2's initialisation for it, from `seed`)
    /// after its GPT-2 tensors, replacing one it has; no optimizer and no stage until one
    /// begins.
    pub async fn add_scalar_head(&mut self, kind: ScalarHeadKind, seed: u64) -> Result<()> {
        let cfg = self.model.config;
        let mut values = self.params().await?;
        values.truncate(cfg.num_params());
        let layout = ParamLayout::with_scalar_head(&cfg, kind);
        values.extend_from_slice(&layout.init(&cfg, seed)[cfg.num_params()..]);
        let roles = self.model.roles.clone();
        self.model = Gpt::from_layout(&mut self.be, cfg, layout, &values, false)?;
        self.model.roles = roles; // the same vocabulary: its tokens keep their roles
        self.opt = AdamW::empty(&mut self.be)?;
        self.stage = None;
        self.decoder = None;
        self.batched_decoder = None;
        Ok(())
    }

    /// Models the stage reads but does not train (PPO: the fine-tuned reference, then the
    /// reward model with its head), each of this model's shape with the given head; no
    /// gradient or optimizer buffers. None: this model's base with its adapters off (the
    /// reference under LoRA, which the stage trains on top of it).
    pub fn set_frozen(&mut self, models: &[(Option<&[f32]>, Option<ScalarHeadKind>)]) -> Result<()> {
        let cfg = self.model.config;
        let mut frozen = Vec::with_capacity(models.len());
        for &(values, head) in models {
            let Some(values) = values else {
                frozen.push(FrozenModel::AdaptersOff);
                continue;
            };
            let layout = match head {
                Some(kind) => ParamLayout::with_scalar_head(&cfg, kind),
                None => ParamLayout::new(&cfg),
            };
            if values.len() != layout.total {
                return Err(KilnError::Config(format!(
                    "a frozen model of {} values for a policy whose shape needs {}",
                    values.len(),
                    layout.total
                )));
            }
            frozen.push(FrozenModel::Copy(Box::new(Gpt::from_layout(&mut self.be, cfg, layout, values, false)?)));
        }
        self.frozen = frozen;
        Ok(())
    }

    /// Samples the answers the stage asks for (PPO's rollouts, K answers per prompt
    /// decoded together) and gives it their outputs under every frozen model and this one.
    async fn rollouts(&mut self) -> Result<()> {
        let (b, seed) = (self.cfg.batch_size, self.cfg.seed ^ (self.step << 16));
        let Some(stage) = self.stage.as_mut() else { return Ok(()) };
        let Some(request) = stage.rollout_request(&self.tokenizer, b, seed)? else { return Ok(()) };
        let k = request.answers;
        if self.batched_decoder.as_ref().map(Decoder::seqs) != Some(k) {
            self.batched_decoder = Some(Decoder::batched(&mut self.be, &self.model, k)?);
        }
        let decoder = self.batched_decoder.as_ref().expect("just made");
        let mut answers = Vec::with_capacity(request.prompts.len());
        for (prompt, sc) in &request.prompts {
            answers.push(sample_candidates(&mut self.be, &self.model, decoder, prompt, sc).await?);
        }
        let ended: Vec<bool> = answers.iter().flatten().map(|c| c.ended).collect();
        let prompts: Vec<Vec<u32>> = request.prompts.into_iter().map(|(ids, _)| ids).collect();
        let stage = self.stage.as_mut().expect("checked");
        let batch = stage.rollout_batch(&self.tokenizer, &prompts, &answers, b)?;
        let heads = stage.heads().unwrap_or(Heads::LM);
        self.eval_acts()?;
        let acts = self.acts.as_ref().or(self.eval_acts.as_ref()).expect("just made");
        let mut frozen = Vec::with_capacity(self.frozen.len());
        for model in &self.frozen {
            frozen.push(match model {
                FrozenModel::Copy(model) => {
                    let heads = if model.layout.scalar_head.is_some() { Heads::SCALAR } else { Heads::LM };
                    forward_outputs(&mut self.be, model, acts, &batch, heads).await?
                }
                FrozenModel::AdaptersOff => {
                    let lora = self.model.lora.as_ref().ok_or_else(|| {
                        KilnError::Config("the stage reads the base under the adapters, but the model has none".into())
                    })?;
                    lora.on.set(false);
                    let out = forward_outputs(&mut self.be, &self.model, acts, &batch, Heads::LM).await;
                    lora.on.set(true);
                    out?
                }
            });
        }
        let own = forward_outputs(&mut self.be, &self.model, acts, &batch, heads).await?;
        self.stage.as_mut().expect("checked").score_rollouts(&frozen, &own, &ended)
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
        let ids = self.chat_prompt(messages)?;
        if self.batched_decoder.as_ref().map(Decoder::seqs) != Some(k) {
            self.batched_decoder = Some(Decoder::batched(&mut self.be, &self.model, k)?);
        }
        let decoder = self.batched_decoder.as_ref().expect("just made");
        sample_candidates(&mut self.be, &self.model, decoder, &ids, cfg).await
    }

    /// log p(answer | prompt) of each answer (token ids, the stop token included) under
    /// this model: one forward pass per B answers.
    pub async fn answer_logps(&mut self, prompt: &[u32], answers: &[Vec<u32>]) -> Result<Vec<f64>> {
        let (b, t, pad) = (self.cfg.batch_size, self.model.config.block_size, self.model.roles.pad);
        self.eval_acts()?;
        let acts = self.acts.as_ref().or(self.eval_acts.as_ref()).expect("just made");
        let mut out = Vec::with_capacity(answers.len());
        for chunk in answers.chunks(b) {
            let rows: Vec<_> = chunk.iter().map(|a| crate::data::preference::answer_row(prompt, a, t, pad)).collect();
            let refs: Vec<&crate::data::Row> = rows.iter().collect();
            let batch = crate::data::make_batch(&refs, b, t);
            let nll = forward_outputs(&mut self.be, &self.model, acts, &batch, Heads::LM).await?.nll;
            for (k, row) in rows.iter().enumerate() {
                let (first, last, _) = crate::data::preference::answer_span(row);
                out.push(-(first..=last).map(|p| nll[k * t + p] as f64).sum::<f64>());
            }
        }
        Ok(out)
    }

    /// A reward model's score of each row (prompt, answer, `<|end|>`, as
    /// [`crate::data::preference::answer_row`] lays them out): its score head at the answer's
    /// last token, one forward pass per B rows.
    pub async fn row_rewards(&mut self, rows: &[crate::data::Row]) -> Result<Vec<f64>> {
        if self.model.layout.scalar_head.is_none() {
            return Err(KilnError::Config("this model has no score head: score with a reward model's folder".into()));
        }
        let (b, t) = (self.cfg.batch_size, self.model.config.block_size);
        self.eval_acts()?;
        let acts = self.acts.as_ref().or(self.eval_acts.as_ref()).expect("just made");
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(b) {
            let refs: Vec<&crate::data::Row> = chunk.iter().collect();
            let batch = crate::data::make_batch(&refs, b, t);
            let values = forward_outputs(&mut self.be, &self.model, acts, &batch, Heads::SCALAR).await?.values;
            for (k, row) in chunk.iter().enumerate() {
                out.push(values[k * t + crate::data::preference::answer_span(row).2] as f64);
            }
        }
        Ok(out)
    }

    /// The outputs of `batch` under this model (no step): what a frozen model gives a
    /// stage that keeps reference outputs computed elsewhere (online DPO's reference).
    pub async fn outputs(&mut self, batch: &TokenBatch, heads: Heads) -> Result<Outputs> {
        let t = self.model.config.block_size;
        let fits = |a: &&Activations<B::Buf>| a.b == batch.b && a.t == t;
        if let Some(acts) = self.acts.as_ref().filter(fits).or(self.eval_acts.as_ref().filter(fits)) {
            return forward_outputs(&mut self.be, &self.model, acts, batch, heads).await;
        }
        // another batch size than this model's runs: activations for this pass only
        let acts = Activations::for_model(&mut self.be, &self.model, batch.b, t)?;
        forward_outputs(&mut self.be, &self.model, &acts, batch, heads).await
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
            self.eval_acts = Some(Activations::for_model(&mut self.be, &self.model, b, t)?);
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
        let mut ids: Vec<u32> = self.model.roles.bos.into_iter().collect();
        ids.extend(self.tokenizer.encode(prompt)?);
        Ok(ids)
    }

    /// A chat's prompt ids in the model's own template (Kiln's, or an imported model's),
    /// ending where the assistant's answer begins, cut to leave room for one.
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<Vec<u32>> {
        self.chat_format().chat_prompt(&self.tokenizer, messages, self.model.config.block_size)
    }

    /// How this model's conversations become ids: its template and its tokens' roles, what
    /// every stage it trains in is built with.
    pub fn chat_format(&self) -> ChatFormat {
        ChatFormat::of(&self.tokenizer, self.model.roles.clone(), self.chat_template.clone())
    }

    /// What the model's folder said beside its weights and tokenizer.
    pub fn extras(&self) -> ModelExtras {
        ModelExtras {
            roles: self.model.roles.clone(),
            chat_template: self.chat_template.clone(),
            generation_config: self.generation_config.clone(),
            own_files: self.own_files.clone(),
        }
    }

    /// Gives the model `extras` (a folder's, or another run's of the same model).
    pub fn set_extras(&mut self, extras: ModelExtras) {
        self.model.roles = extras.roles;
        self.chat_template = extras.chat_template;
        self.generation_config = extras.generation_config;
        self.own_files = extras.own_files;
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
