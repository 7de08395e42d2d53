//! The training step every stage shares: clear the gradients, forward and backward over
//! each micro-batch, clip, AdamW. The stages differ only in the batches and the loss
//! weights they build (every stage is cross-entropy with a weight per position).

use super::optimizer::AdamW;
use crate::backend::{at, Backend};
use crate::cpu::adamw::AdamWConfig;
pub use crate::data::TokenBatch;
use crate::error::{KilnError, Result};
use crate::model::{backward, forward, trunk_backward, trunk_forward, Activations, Gpt, LmHead, ScalarHead};

fn load<B: Backend>(be: &mut B, a: &Activations<B::Buf>, batch: &TokenBatch) {
    assert_eq!((batch.b, batch.t), (a.b, a.t), "batch shape differs from the activations'");
    be.write_u32(&a.tokens, 0, &batch.tokens);
    be.write_u32(&a.targets, 0, &batch.targets);
    be.write(&a.weights, 0, &batch.weights);
}

/// The gradient of Σ w·nll over `micro_batches` (gradient accumulation) into the model's
/// gradient buffer, and, when `report`, that sum into `acts.loss_sum`. Queued, not run.
pub fn accumulate_gradients<B: Backend>(
    be: &mut B,
    model: &Gpt<B>,
    acts: &Activations<B::Buf>,
    micro_batches: &[TokenBatch],
    report: bool,
) -> Result<()> {
    be.clear(model.grads());
    be.clear(&acts.loss_sum);
    for batch in micro_batches {
        load(be, acts, batch);
        forward(be, model, acts);
        backward(be, model, acts, &batch.tokens)?;
        if report {
            add_losses(be, acts, batch)?;
        }
    }
    Ok(())
}

/// One optimizer step over `micro_batches` (gradient accumulation). Everything is queued
/// into one submit; the loss is summed on the device and read back (one readback, after
/// the submit) only when `report` — then it is Σ w·nll.
pub async fn train_step<B: Backend>(
    be: &mut B,
    model: &Gpt<B>,
    acts: &Activations<B::Buf>,
    opt: &mut AdamW<B>,
    micro_batches: &[TokenBatch],
    adamw: AdamWConfig,
    max_norm: f32,
    report: bool,
) -> Result<Option<f32>> {
    accumulate_gradients(be, model, acts, micro_batches, report)?;
    opt.update(be, model, adamw, max_norm)?;
    be.flush();
    if report {
        let loss = be.read(&acts.loss_sum).await?[0];
        if !loss.is_finite() {
            return Err(KilnError::NonFiniteLoss { step: opt.step as u64, loss });
        }
        return Ok(Some(loss));
    }
    Ok(None)
}

/// Σ w·nll over `batches` without updating anything (validation): one submit, one readback.
pub async fn evaluate<B: Backend>(
    be: &mut B,
    model: &Gpt<B>,
    acts: &Activations<B::Buf>,
    batches: &[TokenBatch],
) -> Result<f32> {
    be.clear(&acts.loss_sum);
    for batch in batches {
        load(be, acts, batch);
        forward(be, model, acts);
        add_losses(be, acts, batch)?;
    }
    Ok(be.read(&acts.loss_sum).await?[0])
}

/// loss_sum += Σ losses of the batch just run, on the device (one readback per step).
fn add_losses<B: Backend>(be: &mut B, acts: &Activations<B::Buf>, batch: &TokenBatch) -> Result<()> {
    be.sum_rows(at(&acts.loss_sum, 0), at(&acts.losses, 0), batch.b * batch.t, 1, true)
}

/// Which heads a forward-dependent stage reads: the language-model head's per-position
/// log-likelihoods (DPO, PPO's policy), a scalar head's per-position values (the reward
/// model, PPO's value function), or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heads {
    pub lm: bool,
    pub scalar: bool,
    /// Whether the scalar head's gradient flows into the trunk. PPO's value head does not:
    /// a value function learning from scratch would otherwise rewrite the features the
    /// policy answers with (on the tiny preset it cost half the task accuracy).
    pub scalar_into_trunk: bool,
}

impl Heads {
    /// The language-model head alone (DPO; the reference's log-probabilities).
    pub const LM: Heads = Heads { lm: true, scalar: false, scalar_into_trunk: false };
    /// The scalar head alone, trained with the trunk (the reward model).
    pub const SCALAR: Heads = Heads { lm: false, scalar: true, scalar_into_trunk: true };
    /// Both: a policy and its value head, the value learnt on the policy's features (PPO).
    pub const POLICY_AND_VALUE: Heads = Heads { lm: true, scalar: true, scalar_into_trunk: false };
}

/// What the forward pass gives such a stage, (B·T) each: the negative log-likelihood of
/// each position's target (0 where the batch's weight is 0), and the scalar head's output
/// (empty without one).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outputs {
    pub nll: Vec<f32>,
    pub values: Vec<f32>,
}

/// What the stage gives back, (B·T) each: d loss/d nll for every position (the weight the
/// cross-entropy backward takes) and d loss/d value; and the loss itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gradients {
    pub weights: Vec<f32>,
    pub dvalues: Vec<f32>,
    pub loss: f64,
}

/// Forward over one batch and read back what `heads` ask for (the first read submits).
/// The batch's weights mark the positions whose nll is wanted.
pub async fn forward_outputs<B: Backend>(
    be: &mut B,
    model: &Gpt<B>,
    acts: &Activations<B::Buf>,
    batch: &TokenBatch,
    heads: Heads,
) -> Result<Outputs> {
    load(be, acts, batch);
    trunk_forward(be, model, acts);
    if heads.lm {
        LmHead::forward(be, model, acts);
    }
    if heads.scalar {
        ScalarHead::forward(be, model, acts);
    }
    let mut out = Outputs::default();
    if heads.lm {
        out.nll = be.read(&acts.losses).await?;
    }
    if heads.scalar {
        out.values = be.read(&acts.values).await?;
    }
    Ok(out)
}

/// Adds the gradient of a forward-dependent loss to `model.grads`: the forward pass (whose
/// activations are still in `acts`) is backpropagated with the stage's `grads` in place of
/// fixed weights — the same kernels as every other stage.
pub fn backward_with<B: Backend>(
    be: &mut B,
    model: &Gpt<B>,
    acts: &Activations<B::Buf>,
    batch: &TokenBatch,
    heads: Heads,
    grads: &Gradients,
) -> Result<()> {
    if heads.lm {
        be.write(&acts.weights, 0, &grads.weights);
        LmHead::backward(be, model, acts);
    }
    if heads.scalar {
        be.write(&acts.dvalues, 0, &grads.dvalues);
        ScalarHead::backward(be, model, acts, heads.lm, heads.scalar_into_trunk)?;
    }
    trunk_backward(be, model, acts, &batch.tokens)
}
