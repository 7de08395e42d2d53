//! AdamW over the flat parameter buffer, gradient clipping, and the learning-rate schedule.

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::cpu::adamw::AdamWConfig;
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
    /// [‖g‖₂, clip scale], written on the device by grad_norm and read by adamw.
    pub norm: B::Buf,
    /// Updates done so far (bias correction uses step + 1).
    pub step: u32,
    /// Runs of consecutive tensors with the same weight-decay choice: (offset, len, decay).
    runs: Vec<(usize, usize, bool)>,
}

impl<B: Backend> AdamW<B> {
    pub fn new(be: &mut B, model: &Gpt<B>) -> Result<AdamW<B>> {
        let n = model.layout.total;
        let mut runs: Vec<(usize, usize, bool)> = Vec::new();
        for t in &model.layout.tensors {
            match runs.last_mut() {
                Some(last) if last.2 == t.decay && last.0 + last.1 == t.offset => last.1 += t.len(),
                _ => runs.push((t.offset, t.len(), t.decay)),
            }
        }
        Ok(AdamW { m: be.zeros(n)?, v: be.zeros(n)?, norm: be.zeros(2)?, step: 0, runs })
    }

    /// Clips the gradients to `max_norm` (≤ 0: no clipping) and applies one update.
    /// Weight decay applies to matrices only; biases and LayerNorm parameters keep theirs.
    pub fn update(&mut self, be: &mut B, model: &Gpt<B>, cfg: AdamWConfig, max_norm: f32) -> Result<()> {
        be.grad_norm(&self.norm, model.grads(), model.layout.total, max_norm)?;
        self.step += 1;
        for &(offset, len, decay) in &self.runs {
            let cfg = AdamWConfig { weight_decay: if decay { cfg.weight_decay } else { 0.0 }, ..cfg };
            be.adamw(&model.params, model.grads(), &self.m, &self.v, &self.norm, offset, len, cfg, self.step);
        }
        Ok(())
    }
}
