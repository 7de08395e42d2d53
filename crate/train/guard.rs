//! The divergence guard, shared by every stage. A step whose loss is NaN or infinite, or
//! (for the token losses of pretraining and SFT) a spike far above its running average,
//! is not kept: the run goes back to its last good state — the weights and AdamW's
//! moments as they were at the last save point (a validation that came out finite, or
//! the end of a PPO round: `Progress::save_point`) — halves the learning
//! rate, says so in the step's `event`, and continues. After MAX_ROLLBACKS it stops with
//! advice. The data keeps moving forward, so the batches that led to the blow-up are not
//! seen again in the same order.
//!
//! The good state is kept in host memory (three copies of the parameters' size), read at
//! each save point: cheap next to a validation, and no device memory is added.

use super::trainer::Trainer;
use crate::backend::Backend;
use crate::error::{KilnError, Result};

/// Rollbacks a run may take before it stops.
pub const MAX_ROLLBACKS: u32 = 3;
/// A training loss this many times its running average is a spike.
pub const SPIKE_FACTOR: f32 = 3.0;
/// Readings before spikes are looked for (the loss falls fast at first).
const SPIKE_WARMUP: u32 = 10;

#[derive(Default)]
pub struct Guard {
    good: Option<GoodState>,
    /// Exponential moving average of the training loss readings, and how many there were.
    average: Option<f32>,
    readings: u32,
    pub rollbacks: u32,
}

/// What the run goes back to.
struct GoodState {
    params: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    adam_step: u32,
    step: u64,
    history_len: usize,
}

impl Guard {
    /// Whether `loss` is a spike; a reading that is not joins the running average.
    pub fn is_spike(&mut self, loss: f32) -> Option<f32> {
        if let Some(average) = self.average {
            if self.readings >= SPIKE_WARMUP && average > 0.0 && loss > SPIKE_FACTOR * average {
                return Some(average);
            }
        }
        self.average = Some(self.average.map_or(loss, |a| 0.9 * a + 0.1 * loss));
        self.readings += 1;
        None
    }

    pub fn has_good_state(&self) -> bool {
        self.good.is_some()
    }
}

impl<B: Backend> Trainer<B> {
    /// Keeps the run as it is now as the state a rollback returns to.
    pub(super) async fn keep_good_state(&mut self) -> Result<()> {
        self.guard.good = Some(GoodState {
            params: self.be.read(&self.model.params).await?,
            m: self.be.read(&self.opt.m).await?,
            v: self.be.read(&self.opt.v).await?,
            adam_step: self.opt.step,
            step: self.step,
            history_len: self.history.len(),
        });
        Ok(())
    }

    /// Returns the run to its last good state with half the learning rate, and says what
    /// happened; `what` is what went wrong ("the loss became NaN at step 57"). An error
    /// with advice after MAX_ROLLBACKS.
    pub(super) fn roll_back(&mut self, what: &str) -> Result<String> {
        let good = self
            .guard
            .good
            .as_ref()
            .ok_or_else(|| KilnError::Config(format!("{what} before any good state was kept")))?;
        if self.guard.rollbacks >= MAX_ROLLBACKS {
            return Err(KilnError::Diverged(format!(
                "{what}, after {MAX_ROLLBACKS} rollbacks that each halved the learning rate (now {:.1e}): lower the learning rate further, use more warmup steps, clip gradients harder, or check the data",
                self.cfg.lr
            )));
        }
        self.guard.rollbacks += 1;
        self.be.write(&self.model.params, 0, &good.params);
        self.be.write(&self.opt.m, 0, &good.m);
        self.be.write(&self.opt.v, 0, &good.v);
        self.opt.step = good.adam_step;
        self.step = good.step;
        self.history.truncate(good.history_len);
        self.guard.average = None;
        self.guard.readings = 0;
        self.cfg.lr *= 0.5;
        self.cfg.min_lr = self.cfg.min_lr.min(self.cfg.lr);
        Ok(format!(
            "{what}: rolled back to step {} and halved the learning rate to {:.1e} (rollback {} of at most {MAX_ROLLBACKS})",
            good.step, self.cfg.lr, self.guard.rollbacks
        ))
    }
}
