//! A training stage: where the trainer's batches come from. Every stage ends in the same
//! kernel — cross-entropy with a weight per position — so a stage is its data,
//! the weights it puts on each target, a validation set, and what it must save to resume.
//! Each stage's file also holds its [`StageDef`]: its name, what it reads, its defaults
//! and options, the models it needs, and how it is built and restored. A new stage is
//! that file and its line in `train/mod.rs`'s registration.

use serde::{Deserialize, Serialize};

use super::metrics::Metrics;
use super::step::{Gradients, Heads, Outputs, TokenBatch};
use super::{StageKind, TrainConfig};
use crate::data::chat::Conversation;
use crate::data::corpus::Language;
use crate::data::format::ChatFormat;
use crate::data::preference::Ranking;
use crate::data::thumbs::Thumb;
use crate::data::{Batcher, BatcherState, Dataset, Files, Row};
use crate::error::{KilnError, Result};
use crate::model::ScalarHeadKind;
use crate::sample::{Candidate, SampleConfig};
use crate::tokenizer::Tokenizer;

/// A stage, described once: every surface (the session, the CLI, the JS API's options
/// and `defaults()`) reads it rather than naming the stage.
pub struct StageDef {
    /// As checkpoints, the JS API and the CLI name it.
    pub name: &'static str,
    /// What it learns from besides the model.
    pub input: Input,
    /// Its options' defaults.
    pub defaults: fn() -> TrainConfig,
    /// Its own options among [`super::AlignConfig`]'s (camelCase, as serialised): a stage
    /// is given only its own (the CLI refuses `kiln dpo --kl-coef`).
    pub options: &'static [&'static str],
    /// The head it trains beside the language model's (the reward model's score, PPO's
    /// value), fresh and seeded by the run's seed.
    pub head: Option<ScalarHeadKind>,
    /// The session's models it reads but does not train, in the order
    /// [`Stage::score_rollouts`] is given their outputs.
    pub frozen: &'static [Frozen],
    /// Whether it trains a new model started from the fine-tuned one (the preference
    /// stages; the session keeps that model as the reference), rather than the current one.
    pub from_reference: bool,
    /// The stage for a new run.
    pub build: fn(BuildInput<'_>) -> Result<Built>,
    /// The stage again from its checkpoint files.
    pub restore: fn(RestoreInput<'_>) -> Result<Box<dyn Stage>>,
}

/// What a stage learns from besides the model; the session and the CLI read it in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// The session's corpus (raw text).
    Corpus,
    /// Conversations (JSONL: TRL's prompt/completion or messages), or the built-in
    /// instruction set.
    Conversations,
    /// Rankings (JSONL, or TRL's prompt/chosen/rejected pairs).
    Rankings,
    /// Thumbs up and down on single answers (TRL's unpaired prompt/completion/label), or
    /// rankings and pairs read as thumbs.
    Feedback,
    /// Prompts to answer: the rankings' prompts, conversations up to their last user
    /// turn, or the built-in questions.
    Prompts,
}

/// A model of the session that a stage reads but does not train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frozen {
    /// The fine-tuned model the preference stages started from.
    Reference,
    /// The reward model, with its score head.
    Reward,
    /// The reward model when the session has one (a rule may ask it: RLOO, GRPO); after
    /// the reference when both are read.
    RewardIfAny,
}

/// What a stage is built from for a new run: the model's tokenizer, chat format and
/// context `t`, the run's options, and the input its [`StageDef::input`] asks for, read.
pub struct BuildInput<'a> {
    pub tokenizer: &'a Tokenizer,
    /// The model's template and token roles (Kiln's, or an imported model's own).
    pub format: &'a ChatFormat,
    pub t: usize,
    pub cfg: &'a TrainConfig,
    /// The language of the built-in data, when the stage uses it.
    pub lang: Language,
    pub corpus: Option<&'a str>,
    pub conversations: Option<Vec<Conversation>>,
    pub rankings: Option<Vec<Ranking>>,
    pub thumbs: Option<Vec<Thumb>>,
}

impl BuildInput<'_> {
    pub fn corpus(&self) -> Result<&str> {
        self.corpus.ok_or_else(|| KilnError::Config("choose a corpus first".into()))
    }

    /// The rankings, which stage `name` cannot do without.
    pub fn rankings(&mut self, name: &str) -> Result<Vec<Ranking>> {
        self.rankings.take().ok_or_else(|| KilnError::Config(format!("the {name} stage needs rankings (JSONL)")))
    }
}

/// A stage built for a new run, with what a person should know about its data.
pub struct Built {
    pub stage: Box<dyn Stage>,
    /// Said to the person once (conversations cut at the context, say).
    pub notes: Vec<String>,
}

impl Built {
    pub fn new(stage: impl Stage + 'static) -> Built {
        Built { stage: Box::new(stage), notes: Vec::new() }
    }
}

/// What a stage is rebuilt from: its checkpoint files, the model's tokenizer, chat format
/// and context, the run's options, and where its data order was.
pub struct RestoreInput<'a> {
    pub files: &'a Files,
    pub tokenizer: &'a Tokenizer,
    pub format: &'a ChatFormat,
    pub t: usize,
    pub cfg: &'a TrainConfig,
    pub position: BatcherState,
}

impl StageKind {
    pub fn name(self) -> &'static str {
        self.def().name
    }

    pub fn parse(name: &str) -> Result<StageKind> {
        StageKind::ALL.into_iter().find(|k| k.name() == name).ok_or_else(|| {
            let names: Vec<&str> = StageKind::ALL.iter().map(|k| k.name()).collect();
            KilnError::Config(format!("unknown stage {name:?}: choose {}", names.join(", ")))
        })
    }

    /// The stage's options' defaults.
    pub fn defaults(self) -> TrainConfig {
        (self.def().defaults)()
    }

    /// The stage's own options among [`super::AlignConfig`]'s.
    pub fn options(self) -> &'static [&'static str] {
        self.def().options
    }
}

impl std::str::FromStr for StageKind {
    type Err = KilnError;

    fn from_str(name: &str) -> Result<StageKind> {
        StageKind::parse(name)
    }
}

impl std::fmt::Display for StageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for StageKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for StageKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<StageKind, D::Error> {
        let name = String::deserialize(d)?;
        StageKind::parse(&name).map_err(serde::de::Error::custom)
    }
}

pub trait Stage {
    fn kind(&self) -> StageKind;
    /// The next training micro-batch of B rows, weights 0 or 1 (the trainer scales them
    /// so that a step's weights sum to 1).
    fn next_batch(&mut self, b: usize) -> TokenBatch;
    /// The validation batches, the same every time.
    fn val_batches(&self, b: usize, max_batches: usize) -> Vec<TokenBatch>;
    /// (training rows, validation rows).
    fn rows(&self) -> (usize, usize);
    /// Where the stage's data order is, for a bit-exact resume.
    fn position(&self) -> BatcherState;
    /// The stage's data as checkpoint files (corpus.txt, sft-train.jsonl …).
    fn data_files(&self) -> Files;
    /// The ids a sample during training continues, and the text shown before it.
    fn sample_prompt(&self, tokenizer: &Tokenizer) -> Result<(Vec<u32>, String)>;

    /// None (pretraining, SFT): the batch's weights are the loss. Some(heads): the loss
    /// depends on the forward pass (reward model, DPO, PPO), so after each batch's forward
    /// [`Stage::weigh`] turns what `heads` read into gradients.
    fn heads(&self) -> Option<Heads> {
        None
    }
    /// A forward-dependent stage's loss and gradients for the training batch it handed
    /// out last (`Phase::Train`) or for validation batch i (`Phase::Val(i)`: the loss and
    /// the stage's held-out measures; the gradients are not used).
    fn weigh(&mut self, _batch: &TokenBatch, _out: &Outputs, _phase: Phase) -> Result<Gradients> {
        Err(KilnError::Config(format!("the {} stage's loss does not depend on the forward pass", self.kind())))
    }
    /// Batches whose outputs under the model as the stage begins it keeps (DPO's
    /// reference log-probabilities, computed once); empty for most stages.
    fn reference_batches(&self, _b: usize) -> Vec<TokenBatch> {
        Vec::new()
    }
    /// Whether the reference outputs are still to be computed.
    fn needs_reference(&self) -> bool {
        false
    }
    /// The outputs of [`Stage::reference_batches`] (B rows each), in order.
    fn set_reference(&mut self, _b: usize, _outputs: Vec<Outputs>) -> Result<()> {
        Ok(())
    }
    /// Answers the model must sample before the next batch, for a stage that learns from
    /// its own model's answers (PPO: once its rollouts are used up); None for most stages.
    /// `b`: rows per batch; `seed`: this round's (the trainer's seed and step).
    fn rollout_request(&mut self, _tokenizer: &Tokenizer, _b: usize, _seed: u64) -> Result<Option<RolloutRequest>> {
        Ok(None)
    }
    /// The answers to [`Stage::rollout_request`] (per prompt, its answers) as one batch
    /// of `b` rows, which the trainer runs through every frozen model and the model itself.
    fn rollout_batch(
        &mut self,
        _tokenizer: &Tokenizer,
        _prompts: &[Vec<u32>],
        _answers: &[Vec<Candidate>],
        _b: usize,
    ) -> Result<TokenBatch> {
        Err(KilnError::Config(format!("the {} stage samples no rollouts", self.kind())))
    }
    /// The outputs on that batch: each frozen model's (`Trainer::set_frozen`, in order),
    /// then the model's own; `ended`: which answers stopped by themselves.
    fn score_rollouts(&mut self, _frozen: &[Outputs], _own: &Outputs, _ended: &[bool]) -> Result<()> {
        Err(KilnError::Config(format!("the {} stage samples no rollouts", self.kind())))
    }
    /// Text shown in place of the step's sample, once (PPO: answers of the last rollouts
    /// with their scores); None: the trainer samples as usual.
    fn take_shown(&mut self, _tokenizer: &Tokenizer) -> Result<Option<String>> {
        Ok(None)
    }
    /// Its measures since the last call (pair accuracy, reward margin, KL …).
    fn metrics(&mut self) -> Metrics {
        Metrics::default()
    }
    /// Whether all of the stage's state is in [`Stage::position`] and its files right now,
    /// so that a checkpoint taken here resumes bit for bit (PPO: between rounds, when no
    /// rollouts are held).
    fn at_save_point(&self) -> bool {
        true
    }
    /// A training row to show as inputs, targets and the loss at each position (the
    /// stages that train on token rows: their first).
    fn example_row(&self) -> Option<&Row> {
        None
    }
    /// Conversations of the person's data held out from training, for before/after checks
    /// (SFT: its validation conversations); empty for most stages.
    fn held_out(&self) -> &[Conversation] {
        &[]
    }
}

/// What a stage asks the model it trains to answer: each prompt (token ids ending where
/// the answer starts) with its sampling settings, `answers` answers to each, decoded
/// together.
pub struct RolloutRequest {
    pub prompts: Vec<(Vec<u32>, SampleConfig)>,
    pub answers: usize,
}

impl RolloutRequest {
    /// A round of `align.rollout_prompts` prompts drawn from `order` (their indices into
    /// `pending`), prompt i rendered by `render` and sampled as `align` says with seed
    /// `seed ^ (i << 8)`, `answers` answers each; refused when they do not fit a batch of
    /// `b` rows.
    pub fn draw(
        (order, pending): (&mut Batcher, &mut Vec<usize>),
        align: &super::AlignConfig,
        answers: usize,
        (b, seed): (usize, u64),
        render: impl Fn(usize) -> Result<Vec<u32>>,
    ) -> Result<RolloutRequest> {
        let n = align.rollout_prompts;
        if n * answers > b {
            return Err(KilnError::Config(format!(
                "{n} prompts × {answers} answers do not fit a batch of {b} rows: raise batchSize or lower rolloutPrompts"
            )));
        }
        *pending = (0..n).map(|_| order.take()).collect();
        let prompts = pending
            .iter()
            .enumerate()
            .map(|(i, &p)| Ok((render(p)?, align.sample_config(seed ^ ((i as u64) << 8)))))
            .collect::<Result<Vec<_>>>()?;
        Ok(RolloutRequest { prompts, answers })
    }
}

/// The [`Stage`] methods a stage that learns from its own rollouts (PPO, RLOO, GRPO) takes
/// from its fields `prompts`, `order` (their seeded order) and `rollouts` (the round's
/// batch), with `$left` the optimizer steps still to take on that round: each step trains
/// on the round's batch again; a checkpoint resumes bit for bit between rounds; there is no
/// fixed validation set (the measures come with each round).
macro_rules! stage_over_rollouts {
    ($left:ident) => {
        fn next_batch(&mut self, _b: usize) -> TokenBatch {
            self.$left = self.$left.saturating_sub(1);
            self.rollouts.as_ref().expect("rollouts come first").batch.clone()
        }

        fn at_save_point(&self) -> bool {
            self.$left == 0
        }

        fn val_batches(&self, _b: usize, _max_batches: usize) -> Vec<TokenBatch> {
            Vec::new()
        }

        fn rows(&self) -> (usize, usize) {
            (self.prompts.len(), 0)
        }

        fn position(&self) -> BatcherState {
            self.order.state()
        }
    };
}
pub(crate) use stage_over_rollouts;

/// Which batch a forward-dependent stage weighs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Train,
    Val(usize),
}

/// Training and validation rows in a seeded, resumable order: what the stages that train
/// on token rows (pretraining, SFT) draw their batches from.
pub struct TokenRows {
    pub data: Dataset,
    batcher: Batcher,
}

impl TokenRows {
    pub fn new(data: Dataset, seed: u64) -> TokenRows {
        TokenRows { batcher: Batcher::new(data.train.len(), seed), data }
    }

    /// The rows with the order continuing at `position` (from a checkpoint).
    pub fn resume(data: Dataset, position: BatcherState) -> Result<TokenRows> {
        if position.position > data.train.len() {
            return Err(KilnError::Checkpoint("trainer.json's data position is past the training rows".into()));
        }
        Ok(TokenRows { batcher: Batcher::resume(data.train.len(), position), data })
    }
}

/// A stage that trains on token rows: it names its rows, its files and its samples;
/// batching, validation and position come with [`TokenRows`].
pub trait RowStage {
    fn kind(&self) -> StageKind;
    fn token_rows(&self) -> &TokenRows;
    fn token_rows_mut(&mut self) -> &mut TokenRows;
    fn data_files(&self) -> Files;
    fn sample_prompt(&self, tokenizer: &Tokenizer) -> Result<(Vec<u32>, String)>;
    fn held_out(&self) -> &[Conversation] {
        &[]
    }
}

impl<S: RowStage> Stage for S {
    fn kind(&self) -> StageKind {
        RowStage::kind(self)
    }

    fn next_batch(&mut self, b: usize) -> TokenBatch {
        let TokenRows { data, batcher } = self.token_rows_mut();
        batcher.next(data, b)
    }

    fn val_batches(&self, b: usize, max_batches: usize) -> Vec<TokenBatch> {
        self.token_rows().data.val_batches(b, max_batches)
    }

    fn rows(&self) -> (usize, usize) {
        let data = &self.token_rows().data;
        (data.train.len(), data.val.len())
    }

    fn position(&self) -> BatcherState {
        self.token_rows().batcher.state()
    }

    fn data_files(&self) -> Files {
        RowStage::data_files(self)
    }

    fn sample_prompt(&self, tokenizer: &Tokenizer) -> Result<(Vec<u32>, String)> {
        RowStage::sample_prompt(self, tokenizer)
    }

    fn example_row(&self) -> Option<&Row> {
        self.token_rows().data.train.first()
    }

    fn held_out(&self) -> &[Conversation] {
        RowStage::held_out(self)
    }
}
