//! GRPO (Shao et al. 2024, DeepSeekMath): each answer's advantage its rule score's
//! distance from its group's mean in the group's standard deviations, PPO's clipped ratio,
//! no value head. TRL's defaults: 8 answers a prompt, β 0 (no KL term; the KL to the
//! fine-tuned model is still reported), clip 0.2. The round, the loss and the measures
//! are [`super::group`]'s.

use super::group::{self, Baseline};
use super::stage::{Frozen, Input, StageDef};
use super::{AlignConfig, StageKind, TrainConfig};

pub const DEF: StageDef = StageDef {
    name: "grpo",
    input: Input::Prompts,
    // two prompts of eight answers a batch; one update a round
    defaults: || TrainConfig {
        steps: 200,
        lr: 3e-5,
        min_lr: 3e-5,
        batch_size: 16,
        align: AlignConfig { generations: 8, rollout_prompts: 2, kl_coef: 0.0, ..AlignConfig::default() },
        ..TrainConfig::preference()
    },
    options: group::OPTIONS,
    head: None,
    frozen: &[Frozen::Reference, Frozen::RewardIfAny],
    from_reference: true,
    build: |i| group::build(i, StageKind::Grpo, Baseline::GroupNormalised),
    restore: |r| group::restore(r, StageKind::Grpo, Baseline::GroupNormalised),
};
