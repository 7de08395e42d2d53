//! Data parallelism across workers: the browser's CPU backend, one WebAssembly instance
//! per core (wasm threads would need cross-origin isolation). A step is gradient
//! accumulation whose micro-batches run in different places:
//!
//! 1. The trainer draws the step's micro-batches as usual (`share_step`), splits each
//!    one's rows into `workers` shares, keeps the first and hands the rest to helpers.
//! 2. Each helper ([`Helper::gradients`]) sets the step's weights, runs forward and
//!    backward on its shares and returns its gradient and loss sum, while the trainer
//!    does the same on its own share ([`SharedStep::run_local`]).
//! 3. The trainer adds the helpers' gradients to its own in helper order and takes the
//!    AdamW step ([`SharedStep::finish`], through `Trainer::train_one`).
//!
//! The weights are normalised over the whole step, so the sum is the full batch's
//! gradient; its order is fixed, so a run with the same number of workers repeats bit for
//! bit. Stages whose loss needs a readback mid-step (reward, DPO, PPO) stay on one worker.

use super::optimizer::AdamW;
use super::step::{accumulate_gradients, TokenBatch};
use crate::backend::Backend;
use crate::cpu::adamw::AdamWConfig;
use crate::error::{KilnError, Result};
use crate::model::{Activations, Gpt, GptConfig, ParamLayout};

/// `batch`'s rows in `n` contiguous shares, as even as they go (the first ones a row
/// larger); never an empty share, so fewer than `n` when B < n.
pub fn split_rows(batch: &TokenBatch, n: usize) -> Vec<TokenBatch> {
    let (b, t) = (batch.b, batch.t);
    let n = n.clamp(1, b.max(1));
    let mut start = 0;
    (0..n)
        .map(|i| {
            let rows = b / n + usize::from(i < b % n);
            let span = start * t..(start + rows) * t;
            start += rows;
            TokenBatch {
                b: rows,
                t,
                tokens: batch.tokens[span.clone()].to_vec(),
                targets: batch.targets[span.clone()].to_vec(),
                weights: batch.weights[span].to_vec(),
            }
        })
        .collect()
}

/// What a helper sends back: the gradient of its shares' Σ w·nll, and that sum.
#[derive(Clone, Debug, PartialEq)]
pub struct ShareResult {
    pub grads: Vec<f32>,
    pub loss_sum: f32,
}

/// A step handed out by `share_step`: the trainer's own shares, and (once it has run
/// them) whether its gradient is in the model's buffer.
pub struct SharedStep<B: Backend> {
    local: Vec<TokenBatch>,
    acts: Option<Activations<B::Buf>>,
    computed: bool,
    /// How many helpers were handed shares, and what they sent back.
    helpers: usize,
    remote: Vec<ShareResult>,
}

/// What helpers get for one step.
pub struct StepShares {
    pub config: GptConfig,
    /// The weights to compute the gradient at (the model's, before this step's update).
    pub params: Vec<f32>,
    /// Helper i's shares, one per micro-batch.
    pub shares: Vec<Vec<TokenBatch>>,
}

impl<B: Backend> SharedStep<B> {
    /// Splits a step's micro-batches `micro` among `workers`: the first share of each
    /// stays here, helper i gets the (i+1)-th. `acts`: the previous shared step's
    /// activations, reused when their shape still fits.
    pub fn split(
        micro: &[TokenBatch],
        workers: usize,
        acts: Option<Activations<B::Buf>>,
    ) -> (SharedStep<B>, Vec<Vec<TokenBatch>>) {
        let mut local = Vec::new();
        let mut shares: Vec<Vec<TokenBatch>> = Vec::new();
        for batch in micro {
            let mut parts = split_rows(batch, workers).into_iter();
            local.push(parts.next().expect("at least one share"));
            for (i, part) in parts.enumerate() {
                if shares.len() <= i {
                    shares.push(Vec::new());
                }
                shares[i].push(part);
            }
        }
        let helpers = shares.len();
        (SharedStep { local, acts, computed: false, helpers, remote: Vec::new() }, shares)
    }

    /// The activations, for the next shared step.
    pub fn into_acts(self) -> Option<Activations<B::Buf>> {
        self.acts
    }

    /// Runs this worker's own shares on `model` (while helpers run theirs): its gradient
    /// is left in the model's gradient buffer.
    pub fn run_local(&mut self, be: &mut B, model: &Gpt<B>) -> Result<()> {
        if self.computed {
            return Err(KilnError::Config("no shared step to compute".into()));
        }
        let (b, t) = (self.local[0].b, model.config.block_size);
        if self.acts.as_ref().map(|a| a.b) != Some(b) {
            self.acts = Some(Activations::for_model(be, model, b, t)?);
        }
        let acts = self.acts.as_ref().expect("just made");
        accumulate_gradients(be, model, acts, &self.local, true)?;
        be.flush();
        self.computed = true;
        Ok(())
    }

    /// The helpers' results, in helper order, for a model of `total` parameters.
    pub fn add_results(&mut self, results: Vec<ShareResult>, total: usize) -> Result<()> {
        if results.len() != self.helpers {
            return Err(KilnError::Config(format!("{} helpers' results for {} helpers", results.len(), self.helpers)));
        }
        if let Some(r) = results.iter().find(|r| r.grads.len() != total) {
            return Err(KilnError::Config(format!("a helper sent {} gradient values, not {total}", r.grads.len())));
        }
        self.remote = results;
        Ok(())
    }

    /// Whether the step can be finished. A shared step whose helpers did not all answer
    /// is dropped (its rows go unused) and the step is taken whole.
    pub fn ready(&mut self) -> bool {
        if !self.computed {
            return false;
        }
        if self.remote.len() != self.helpers {
            self.computed = false;
            return false;
        }
        true
    }

    /// Finishes the step: this worker's gradient plus the helpers', in order, then AdamW.
    /// Returns Σ w·nll over the whole step.
    pub async fn finish(
        &mut self,
        be: &mut B,
        model: &Gpt<B>,
        opt: &mut AdamW<B>,
        adamw: AdamWConfig,
        grad_clip: f32,
    ) -> Result<f32> {
        self.computed = false;
        let remote = std::mem::take(&mut self.remote);
        let acts = self.acts.as_ref().expect("made by run_local");
        let mut loss = be.read(&acts.loss_sum).await?[0];
        let mut grads = be.read(model.grads()).await?;
        for r in &remote {
            grads.iter_mut().zip(&r.grads).for_each(|(g, x)| *g += x);
            loss += r.loss_sum;
        }
        be.write(model.grads(), 0, &grads);
        opt.update(be, model, adamw, grad_clip)?;
        be.flush();
        if !loss.is_finite() {
            return Err(KilnError::NonFiniteLoss { step: opt.step as u64, loss });
        }
        Ok(loss)
    }
}

/// A helper: a model of the trainer's shape whose weights are set at every step.
pub struct Helper<B: Backend> {
    be: B,
    model: Gpt<B>,
    acts: Option<Activations<B::Buf>>,
}

impl<B: Backend> Helper<B> {
    pub fn new(mut be: B, config: GptConfig) -> Result<Helper<B>> {
        config.validate()?;
        let layout = ParamLayout::new(&config);
        // zeros for now: every step writes the trainer's weights first
        let zeros = vec![0.0; layout.total];
        let model = Gpt::from_layout(&mut be, config, layout, &zeros, true)?;
        Ok(Helper { be, model, acts: None })
    }

    pub fn config(&self) -> GptConfig {
        self.model.config
    }

    /// The gradient of Σ w·nll over `shares` at the weights `params`.
    pub async fn gradients(&mut self, params: &[f32], shares: &[TokenBatch]) -> Result<ShareResult> {
        let (total, t) = (self.model.layout.total, self.model.config.block_size);
        if params.len() != total {
            return Err(KilnError::Config(format!("{} weights for a model of {total}", params.len())));
        }
        let Some(b) = shares.first().map(|s| s.b) else {
            return Ok(ShareResult { grads: vec![0.0; total], loss_sum: 0.0 });
        };
        let v = self.model.config.vocab_size as u32;
        let bad =
            |s: &TokenBatch| s.b != b || s.t != t || [s.tokens.len(), s.targets.len(), s.weights.len()] != [b * t; 3];
        if shares.iter().any(bad) {
            return Err(KilnError::Config("shares of different shapes in one step".into()));
        }
        if shares.iter().any(|s| s.tokens.iter().chain(&s.targets).any(|&id| id >= v)) {
            return Err(KilnError::Config("a share holds a token id past the vocabulary".into()));
        }
        self.be.write(self.model.weights.all_f32(), 0, params);
        if self.acts.as_ref().map(|a| a.b) != Some(b) {
            self.acts = Some(Activations::for_model(&mut self.be, &self.model, b, t)?);
        }
        let acts = self.acts.as_ref().expect("just made");
        accumulate_gradients(&mut self.be, &self.model, acts, shares, true)?;
        let loss_sum = self.be.read(&acts.loss_sum).await?[0];
        let grads = self.be.read(self.model.grads()).await?;
        Ok(ShareResult { grads, loss_sum })
    }
}
