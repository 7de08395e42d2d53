//! Training: each stage's options ([`config`]), the optimizer and schedule, the one
//! training step every stage shares, the [`Trainer`], and the stages — pretraining,
//! supervised fine-tuning, the reward model, DPO and PPO — each a short file that supplies
//! batches with a loss weight per position, registered in [`stages`]. Below the trainer:
//! the divergence guard ([`guard`]) and the CPU step shared across workers ([`parallel`]);
//! beside it, the backend probe ([`choose`]) and resume checkpoints ([`resume`]).

pub mod choose;
pub mod config;
pub mod dpo;
pub mod guard;
pub mod optimizer;
pub mod parallel;
pub mod ppo;
pub mod preference;
pub mod pretrain;
pub mod resume;
pub mod reward;
pub mod sft;
pub mod stage;
pub mod stages;
pub mod step;
pub mod trainer;

pub use optimizer::{lr_at, AdamW, Schedule};

pub use config::{AlignConfig, TrainConfig};
pub use stage::{Phase, Stage, StageKind};
pub use step::{evaluate, train_step, Gradients, Heads, Outputs, TokenBatch};
pub use trainer::{check_fits, check_fits_within, LossPoint, Progress, Trainer};
