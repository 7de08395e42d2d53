//! Training: the optimizer and schedule, the one training step every stage shares, and
//! the stages themselves (pretraining now; SFT, reward, PPO and DPO reuse the step).

pub mod optimizer;
pub mod pretrain;
pub mod step;

pub use optimizer::{lr_at, AdamW, Schedule};

pub use pretrain::{check_fits, LossPoint, PretrainConfig, Pretrainer, Progress};
pub use step::{evaluate, train_step, TokenBatch};
