//! How a run begins or resumes a stage, read from the stage's [`super::StageDef`]: the
//! stage rebuilt from its checkpoint files, and a preference stage begun in the order that
//! matters (its head, the frozen models it reads, then the stage).

use super::stage::{Frozen, RestoreInput, Stage};
use super::{StageKind, TrainConfig, Trainer};
use crate::backend::Backend;
use crate::data::format::ChatFormat;
use crate::data::{BatcherState, Files};
use crate::error::{KilnError, Result};
use crate::model::ScalarHeadKind;
use crate::tokenizer::Tokenizer;

/// Rebuilds a stage from its checkpoint files, at `position`.
pub fn restore(
    kind: StageKind,
    files: &Files,
    (tokenizer, format): (&Tokenizer, &ChatFormat),
    t: usize,
    cfg: &TrainConfig,
    position: BatcherState,
) -> Result<Box<dyn Stage>> {
    (kind.def().restore)(RestoreInput { files, tokenizer, format, t, cfg, position })
}

/// The head a stage trains beside the language model's: the reward model's score, PPO's
/// value.
pub fn scalar_head(kind: StageKind) -> Option<ScalarHeadKind> {
    kind.def().head
}

/// Begins `stage` on `run`, a model holding the fine-tuned model's GPT-2 tensors, in the
/// order that matters: a fresh head when the stage trains one (seeded by `cfg.seed`; it
/// replaces the optimizer), the models the stage reads (PPO: `reference`, the fine-tuned
/// model, and `reward` with its score head), then the stage itself.
pub async fn begin_preference<B: Backend>(
    run: &mut Trainer<B>,
    stage: Box<dyn Stage>,
    cfg: TrainConfig,
    reference: &[f32],
    reward: Option<&[f32]>,
) -> Result<()> {
    let kind = stage.kind();
    // a rule that asks the reward model, with none trained, is refused before anything runs
    if kind.def().frozen.contains(&Frozen::RewardIfAny)
        && reward.is_none()
        && crate::data::rule::Rule::parse(&cfg.align.rule)?.reward_weight() != 0.0
    {
        return Err(KilnError::Config(format!(
            "the rule asks the reward model, but there is none: train one on your rankings first, or give {} a rule without rewardModel",
            kind.name().to_uppercase()
        )));
    }
    if let Some(head) = scalar_head(kind) {
        run.add_scalar_head(head, cfg.seed).await?;
    }
    set_frozen(run, kind, reference, reward, cfg.lora_rank > 0)?;
    run.begin(stage, cfg)
}

/// Gives `run` the models stage `kind` reads but does not train (its
/// [`super::StageDef::frozen`]: PPO's are the fine-tuned reference, then the reward
/// model); none for most stages. Under `lora` the reference is the run's own base with
/// its adapters off (the run must start from `reference`).
pub fn set_frozen<B: Backend>(
    run: &mut Trainer<B>,
    kind: StageKind,
    reference: &[f32],
    reward: Option<&[f32]>,
    lora: bool,
) -> Result<()> {
    let frozen = kind.def().frozen;
    if frozen.is_empty() {
        return Ok(());
    }
    let models = frozen
        .iter()
        .filter_map(|f| match f {
            Frozen::Reference => Some(Ok(((!lora).then_some(reference), None))),
            Frozen::Reward => Some(reward.map(|r| (Some(r), Some(ScalarHeadKind::Reward))).ok_or_else(|| {
                KilnError::Config(format!(
                    "{} needs a reward model: train one on your rankings first",
                    kind.name().to_uppercase()
                ))
            })),
            Frozen::RewardIfAny => reward.map(|r| Ok((Some(r), Some(ScalarHeadKind::Reward)))),
        })
        .collect::<Result<Vec<_>>>()?;
    run.set_frozen(&models)
}
