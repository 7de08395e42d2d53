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

/// The state kept, as the trainer read it from the device.
pub struct GoodState {
    pub params: Vec<f32>,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub adam_step: u32,
    pub step: u64,
    pub history_len: usize,
}

impl Guard {
    /// Keeps `state` as the one a rollback returns to.
    pub fn keep(&mut self, state: GoodState) {
        self.good = Some(state);
    }

    /// Counts a rollback and returns the state to go back to; `what` is what went wrong
    /// ("the loss became NaN at step 57"), `lr` the learning rate now. An error with
    /// advice after MAX_ROLLBACKS. The running average starts again.
    pub fn roll_back(&mut self, what: &str, lr: f64) -> Result<&GoodState> {
        let good =
            self.good.as_ref().ok_or_else(|| KilnError::Config(format!("{what} before any good state was kept")))?;
        if self.rollbacks >= MAX_ROLLBACKS {
            return Err(KilnError::Diverged(format!(
                "{what}, after {MAX_ROLLBACKS} rollbacks that each halved the learning rate (now {lr:.1e}): lower the learning rate further, use more warmup steps, clip gradients harder, or check the data"
            )));
        }
        self.rollbacks += 1;
        self.average = None;
        self.readings = 0;
        Ok(good)
    }
}
