//! RLOO (Ahmadian et al. 2024, "Back to basics"): REINFORCE with each answer's baseline
//! the mean reward of the other answers to its prompt, the reward a rule's score minus
//! β times the answer's KL to the fine-tuned model. TRL's defaults: 2 answers a prompt,
//! β 0.05. The round, the loss and the measures are [`super::group`]'s.

use super::group::{self, Baseline};
use super::stage::{Frozen, Input, StageDef};
use super::{AlignConfig, StageKind, TrainConfig};

pub const DEF: StageDef = StageDef {
    name: "rloo",
    input: Input::Prompts,
    // eight prompts of two answers a batch; one update a round
    defaults: || TrainConfig {
        steps: 200,
        lr: 3e-5,
        min_lr: 3e-5,
        batch_size: 16,
        align: AlignConfig { generations: 2, rollout_prompts: 8, kl_coef: 0.05, ..AlignConfig::default() },
        ..TrainConfig::preference()
    },
    options: group::OPTIONS,
    head: None,
    frozen: &[Frozen::Reference, Frozen::RewardIfAny],
    from_reference: true,
    build: |i| group::build(i, StageKind::Rloo, Baseline::LeaveOneOut),
    restore: |r| group::restore(r, StageKind::Rloo, Baseline::LeaveOneOut),
};
