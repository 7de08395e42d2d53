//! AdamW over the flat parameter buffer, gradient clipping, and the learning-rate schedule.

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::cpu::adamw::{AdamWConfig, STEP_VALUES};
use crate::error::Result;
use crate::model::Gpt;

/// Linear warmup, then cosine decay to `min_lr` at `decay_steps` (nanoGPT's schedule).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub decay_steps: u64,
}

/// The learning rate of step `step` (counting from 0).
pub fn lr_at(s: &Schedule, step: u64) -> f64 {
    if step < s.warmup_steps {
        return s.lr * (step + 1) as f64 / (s.warmup_steps + 1) as f64;
    }
    if step >= s.decay_steps {
        return s.min_lr;
    }
    let ratio = (step - s.warmup_steps) as f64 / (s.decay_steps - s.warmup_steps).max(1) as f64;
    s.min_lr + 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos()) * (s.lr - s.min_lr)
}

/// AdamW state: the two moments, the step count and the gradient norm of the last step.
pub struct AdamW<B: Backend> {
    pub m: B::Buf,
    pub v: B::Buf,
    /// [‖g‖₂, clip scale, …] (STEP_VALUES): the first two written on the device by
    /// grad_norm, the rest (this step's lr and bias corrections) by the update, all read
    /// by adamw.
    pub norm: B::Buf,
    /// Which elements decay, a bit each (u32 words): the matrices' (`ParamLayout`'s
    /// `decay`), not the biases' or LayerNorm's.
    decay: B::Buf,
    /// Updates done so far (bias correction uses step + 1).
    pub step: u32,
}

impl<B: Backend> AdamW<B> {
    pub fn new(be: &mut B, model: &Gpt<B>) -> Result<AdamW<B>> {
        let (_, tensors, n) = model.trainable();
        let mut mask = vec![0u32; n.div_ceil(32).max(1)];
        for t in tensors.iter().filter(|t| t.decay) {
            for i in t.offset..t.offset + t.len() {
                mask[i / 32] |= 1 << (i % 32);
            }
        }
        Ok(AdamW {
            m: be.zeros(n)?,
            v: be.zeros(n)?,
            norm: be.zeros(STEP_VALUES)?,
            decay: be.upload_u32(&mask)?,
            step: 0,
        })
    }

    /// A placeholder until a stage begins (no moments: the model is not yet training).
    pub fn empty(be: &mut B) -> Result<AdamW<B>> {
        Ok(AdamW {
            m: be.zeros(1)?,
            v: be.zeros(1)?,
            norm: be.zeros(STEP_VALUES)?,
            decay: be.upload_u32(&[0])?,
            step: 0,
        })
    }

    /// Clips the gradients to `max_norm` (≤ 0: no clipping) and applies one update to
    /// every trainable parameter at once (the adapters alone under LoRA).
    pub fn update(&mut self, be: &mut B, model: &Gpt<B>, cfg: AdamWConfig, max_norm: f32) -> Result<()> {
        let (params, _, n) = model.trainable();
        be.grad_norm(&self.norm, model.grads(), n, max_norm)?;
        self.step += 1;
        be.adamw(params, model.grads(), &self.m, &self.v, &self.norm, &self.decay, n, cfg, self.step)
    }
}
