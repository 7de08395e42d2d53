//! The registry of stages: how each is built for a new run and rebuilt from its
//! checkpoint files. A new stage is its file, a `StageKind`, and its lines here.

use super::dpo::Dpo;
use super::ppo::Ppo;
use super::pretrain::Pretrain;
use super::reward::Reward;
use super::sft::Sft;
use super::stage::{Stage, StageKind};
use super::{TrainConfig, Trainer};
use crate::backend::Backend;
use crate::data::{BatcherState, Files};
use crate::error::{KilnError, Result};
use crate::model::ScalarHeadKind;
use crate::tokenizer::Tokenizer;

/// Rebuilds a stage from its checkpoint files, at `position`.
pub fn restore(
    kind: StageKind,
    files: &Files,
    tokenizer: &Tokenizer,
    t: usize,
    cfg: &TrainConfig,
    position: BatcherState,
) -> Result<Box<dyn Stage>> {
    Ok(match kind {
        StageKind::Pretrain => Box::new(Pretrain::restore(files, tokenizer, t, cfg, position)?),
        StageKind::Sft => Box::new(Sft::restore(files, tokenizer, t, position)?),
        StageKind::Reward => Box::new(Reward::restore(files, tokenizer, t, cfg.align.reward_center, position)?),
        StageKind::Dpo => {
            let a = &cfg.align;
            Box::new(Dpo::restore(files, tokenizer, t, (a.dpo_beta, a.rpo_alpha), position)?)
        }
        StageKind::Ppo => Box::new(Ppo::restore(files, t, cfg.align.clone(), position)?),
    })
}

/// The head a stage trains beside the language model's: the reward model's score, PPO's
/// value.
pub fn scalar_head(kind: StageKind) -> Option<ScalarHeadKind> {
    match kind {
        StageKind::Reward => Some(ScalarHeadKind::Reward),
        StageKind::Ppo => Some(ScalarHeadKind::Value),
        _ => None,
    }
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
    if let Some(head) = scalar_head(kind) {
        run.add_scalar_head(head, cfg.seed).await?;
    }
    set_frozen(run, kind, reference, reward)?;
    run.begin(stage, cfg)
}

/// Gives `run` the models stage `kind` reads but does not train (PPO: the fine-tuned
/// reference, then the reward model); none for the other stages.
pub fn set_frozen<B: Backend>(
    run: &mut Trainer<B>,
    kind: StageKind,
    reference: &[f32],
    reward: Option<&[f32]>,
) -> Result<()> {
    if kind == StageKind::Ppo {
        let reward = reward
            .ok_or_else(|| KilnError::Config("PPO needs a reward model: train one on your rankings first".into()))?;
        run.set_frozen(&[(reference, None), (reward, Some(ScalarHeadKind::Reward))])?;
    }
    Ok(())
}
