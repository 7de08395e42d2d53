//! Training: the optimizer and schedule, the one training step every stage shares, the
//! stage-agnostic [`Trainer`], and the stages — pretraining and supervised fine-tuning —
//! each a short file that supplies batches with a loss weight per position.

pub mod optimizer;
pub mod pretrain;
pub mod sft;
pub mod stage;
pub mod step;
pub mod trainer;

pub use optimizer::{lr_at, AdamW, Schedule};

pub use stage::{Stage, StageKind};
pub use step::{evaluate, train_step, TokenBatch};
pub use trainer::{check_fits, LossPoint, Progress, TrainConfig, Trainer};
