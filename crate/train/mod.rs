//! Training: each stage's options ([`config`]), the optimizer and schedule, the one
//! training step every stage shares, the [`Trainer`], and the stages — pretraining,
//! supervised fine-tuning, the reward model, DPO, PPO, KTO on thumbs, and RLOO and GRPO on a rule — each a short file that supplies
//! batches with a loss weight per position and describes itself in a [`StageDef`],
//! registered below. Below the trainer: the divergence guard ([`guard`]) and the CPU step
//! shared across workers ([`parallel`]); beside it, the backend probe ([`choose`]),
//! resume checkpoints ([`resume`]) and how a run begins a stage ([`stages`]).

pub mod choose;
pub mod config;
pub mod golden;
pub mod group;
pub mod guard;
pub mod metrics;
pub mod online;
pub mod optimizer;
pub mod parallel;
pub mod preference;
pub mod resume;
pub mod stage;
pub mod stages;
pub mod step;
pub mod trainer;

pub use optimizer::{lr_at, AdamW, Schedule};

pub use config::{AlignConfig, TrainConfig};
pub use metrics::Metrics;
pub use stage::{Phase, Stage, StageDef};
pub use step::{evaluate, train_step, Gradients, Heads, Outputs, TokenBatch};
pub use trainer::{check_fits, check_fits_within, LossPoint, Progress, Trainer};

/// Declares each stage's module and [`StageKind`], the stages as checkpoints, the JS API
/// and the CLI name them, with each one's [`StageDef`] (the `DEF` in its file).
macro_rules! register_stages {
    ($($(#[$doc:meta])* $kind:ident => $module:ident,)*) => {
        $(pub mod $module;)*

        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum StageKind {
            $($(#[$doc])* $kind,)*
        }

        impl StageKind {
            pub const ALL: [StageKind; [$(StageKind::$kind,)*].len()] = [$(StageKind::$kind,)*];

            /// What the stage is: its name, input, defaults, options, and how it is built.
            pub fn def(self) -> &'static StageDef {
                match self {
                    $(StageKind::$kind => &$module::DEF,)*
                }
            }
        }
    };
}

// The registration: a new stage is its file (an impl of [`Stage`] and its `DEF`) and a
// line here.
register_stages! {
    /// Next-token prediction on raw text.
    Pretrain => pretrain,
    /// Supervised fine-tuning on conversations, loss on the assistant's turns only.
    Sft => sft,
    /// A reward model learning the person's rankings (Bradley-Terry on pairs).
    Reward => reward,
    /// Direct preference optimisation on the same pairs.
    Dpo => dpo,
    /// PPO against the reward model, with a KL penalty to the fine-tuned model.
    Ppo => ppo,
    /// KTO on thumbs up and down (rankings read as thumbs).
    Kto => kto,
    /// REINFORCE with the other answers to the prompt as baseline, scored by a rule.
    Rloo => rloo,
    /// Group-normalised advantages and a clipped ratio, scored by a rule.
    Grpo => grpo,
}
