//! What the stages that learn from rankings (reward model, DPO) share: each ranked
//! prompt becomes a group of rows, one per answer, `<|bos|> prompt <|assistant|> answer
//! <|end|>`, and a batch holds whole groups, so every pair of a prompt is scored from
//! answers that ran once in the same step (InstructGPT). Per row:
//!   answer positions  the positions whose targets are the answer's tokens and `<|end|>`
//!                     (weight 1: their nll is read back; DPO's log-probability is −Σ nll)
//!   last position     the position whose input is `<|end|>` (the reward is read there)
//! An imported model's rows are its own template's prompt (with the generation prompt),
//! the answer, its own end of turn and its own padding.

use crate::data::chat::Role;
use crate::data::format::ChatFormat;
pub use crate::data::preference::{answer_row, answer_span};
use crate::data::preference::{rankings_jsonl, read_rankings, Ranking};
use crate::data::Files;
use crate::data::{make_batch, shuffle, Batcher, BatcherState, Row};
use crate::error::{KilnError, Result};
use crate::rng::Rng;
use crate::tokenizer::Tokenizer;
use crate::train::stage::BuildInput;
use crate::train::TokenBatch;

/// One ranked prompt: a row per answer and the (chosen, rejected) pairs between them.
pub struct Group {
    pub rows: Vec<Row>,
    pub pairs: Vec<(usize, usize)>,
}

impl Group {
    /// The ranking's rows: prompt (oldest turns dropped to fit) + answer + `<|end|>`, the
    /// answer cut to fit T + 1 tokens with a padding token after `<|end|>` so that
    /// `<|end|>` is an input. Pairs of two rows with the same tokens (texts that differ
    /// only past the cut, or not at all to the tokenizer) are left out: the model scores
    /// both alike whatever it learns (a DPO margin or reward gap of exactly 0), so they
    /// teach nothing and, held out, would read as wrong at every evaluation. None when no
    /// pair is left.
    pub fn of(tokenizer: &Tokenizer, ranking: &Ranking, t: usize) -> Result<Option<Group>> {
        Group::of_in(&ChatFormat::kiln(), tokenizer, ranking, t)
    }

    /// [`Group::of`] in the model's own `format`.
    pub fn of_in(format: &ChatFormat, tokenizer: &Tokenizer, ranking: &Ranking, t: usize) -> Result<Option<Group>> {
        let pairs = ranking.pairs();
        if pairs.is_empty() {
            return Ok(None);
        }
        let prompt = format.chat_prompt(tokenizer, &ranking.prompt, t)?;
        let room = (t + 1).saturating_sub(prompt.len() + 2);
        if room == 0 {
            return Err(KilnError::Data(format!(
                "the prompt {:?} leaves no room for an answer in the model's context of {t} tokens",
                ranking.question()
            )));
        }
        let mut rows = Vec::with_capacity(ranking.answers.len());
        for answer in &ranking.answers {
            let mut ids = tokenizer.encode(answer)?;
            ids.truncate(room);
            ids.push(format.end_of_turn());
            rows.push(answer_row(&prompt, &ids, t, format.roles.pad));
        }
        let pairs: Vec<_> = pairs.into_iter().filter(|&(c, r)| rows[c].ids != rows[r].ids).collect();
        Ok((!pairs.is_empty()).then_some(Group { rows, pairs }))
    }
}

/// A batch of whole groups and, per group, (group index, first row in the batch).
pub struct GroupBatch {
    pub batch: TokenBatch,
    pub groups: Vec<(usize, usize)>,
}

/// Groups in order, packed into batches of at most `b` rows.
pub(crate) fn pack(groups: &[Group], b: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut rows = 0;
    for (g, group) in groups.iter().enumerate() {
        match out.last_mut() {
            Some(last) if rows + group.rows.len() <= b => last.push(g),
            _ => {
                out.push(vec![g]);
                rows = 0;
            }
        }
        rows += group.rows.len();
    }
    out
}

pub(crate) fn batch_of(groups: &[Group], chosen: &[usize], b: usize, t: usize) -> GroupBatch {
    let mut rows = Vec::with_capacity(b);
    let mut placed = Vec::with_capacity(chosen.len());
    for &g in chosen {
        placed.push((g, rows.len()));
        rows.extend(groups[g].rows.iter());
    }
    GroupBatch { batch: make_batch(&rows, b, t), groups: placed }
}

/// Rankings for training and validation, rendered, in a seeded, resumable order.
pub struct PreferenceRows {
    pub train: Vec<Group>,
    pub val: Vec<Group>,
    rankings: (Vec<Ranking>, Vec<Ranking>),
    batcher: Batcher,
    t: usize,
    /// The groups of the training batch handed out last.
    pub last: Vec<(usize, usize)>,
    /// The model's template and tokens the rows are rendered with.
    format: ChatFormat,
}

impl PreferenceRows {
    /// The rankings stage `name` was given, split by the run's options and checked against
    /// its batch size.
    pub fn from_input(mut i: BuildInput<'_>, name: &str) -> Result<Self> {
        let rankings = i.rankings(name)?;
        let rows = Self::split_in(i.format, i.tokenizer, rankings, i.t, i.cfg.val_fraction, i.cfg.seed)?;
        rows.check_batch(i.cfg.batch_size)?;
        Ok(rows)
    }

    /// `val_fraction` of the ranked prompts (at least one) held out, by a seeded shuffle;
    /// only those with a pair of different answers ([`Group::of`]) count.
    pub fn split(
        tokenizer: &Tokenizer,
        rankings: Vec<Ranking>,
        t: usize,
        val_fraction: f64,
        seed: u64,
    ) -> Result<Self> {
        Self::split_in(&ChatFormat::kiln(), tokenizer, rankings, t, val_fraction, seed)
    }

    /// [`PreferenceRows::split`] in the model's own `format`.
    pub fn split_in(
        format: &ChatFormat,
        tokenizer: &Tokenizer,
        rankings: Vec<Ranking>,
        t: usize,
        val_fraction: f64,
        seed: u64,
    ) -> Result<Self> {
        let mut kept = Vec::with_capacity(rankings.len());
        for r in rankings {
            if Group::of_in(format, tokenizer, &r, t)?.is_some() {
                kept.push(r);
            }
        }
        let mut rankings = kept;
        if rankings.len() < 2 {
            return Err(KilnError::Data(format!(
                "learning from rankings needs at least 2 ranked prompts that prefer one answer to a different one (one is held out to measure agreement), not {}",
                rankings.len()
            )));
        }
        shuffle(&mut rankings, &mut Rng::new(seed));
        let n_val = ((rankings.len() as f64 * val_fraction).ceil() as usize).clamp(1, rankings.len() - 1);
        let train = rankings.split_off(n_val);
        Self::new_in(format, tokenizer, train, rankings, t, BatcherState { seed, epoch: 0, position: 0 })
    }

    pub fn new(
        tokenizer: &Tokenizer,
        train: Vec<Ranking>,
        val: Vec<Ranking>,
        t: usize,
        position: BatcherState,
    ) -> Result<Self> {
        Self::new_in(&ChatFormat::kiln(), tokenizer, train, val, t, position)
    }

    /// [`PreferenceRows::new`] in the model's own `format`.
    pub fn new_in(
        format: &ChatFormat,
        tokenizer: &Tokenizer,
        train: Vec<Ranking>,
        val: Vec<Ranking>,
        t: usize,
        position: BatcherState,
    ) -> Result<Self> {
        let groups = |rs: &[Ranking]| -> Result<Vec<Group>> {
            Ok(rs
                .iter()
                .map(|r| Group::of_in(format, tokenizer, r, t))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .flatten()
                .collect())
        };
        let (train_groups, val_groups) = (groups(&train)?, groups(&val)?);
        if train_groups.is_empty() || val_groups.is_empty() {
            return Err(KilnError::Data(
                "no ranking that prefers one answer to a different one to train on or to hold out".into(),
            ));
        }
        if position.position > train_groups.len() {
            return Err(KilnError::Checkpoint("trainer.json's data position is past the rankings".into()));
        }
        let batcher = Batcher::resume(train_groups.len(), position);
        Ok(PreferenceRows {
            train: train_groups,
            val: val_groups,
            rankings: (train, val),
            batcher,
            t,
            last: Vec::new(),
            format: format.clone(),
        })
    }

    /// Rebuilds from a checkpoint's rankings files, in the model's own `format`.
    pub fn restore(
        files: &Files,
        (tokenizer, format): (&Tokenizer, &ChatFormat),
        t: usize,
        position: BatcherState,
    ) -> Result<Self> {
        let read = |name: &str| -> Result<Vec<Ranking>> {
            let bytes = files.get(name).ok_or_else(|| KilnError::Checkpoint(format!("{name} is missing")))?;
            read_rankings(bytes).map(|r| r.items).map_err(|e| KilnError::Checkpoint(format!("{name}: {e}")))
        };
        Self::new_in(format, tokenizer, read("rankings-train.jsonl")?, read("rankings-val.jsonl")?, t, position)
    }

    pub fn data_files(&self) -> Files {
        Files::from([
            ("rankings-train.jsonl".to_string(), rankings_jsonl(&self.rankings.0).into_bytes()),
            ("rankings-val.jsonl".to_string(), rankings_jsonl(&self.rankings.1).into_bytes()),
        ])
    }

    pub fn held_out(&self) -> &[Ranking] {
        &self.rankings.1
    }

    /// The next training batch: whole groups in the seeded order while their rows fit in
    /// B (at least one group; B must hold a prompt's answers).
    pub fn next_batch(&mut self, b: usize) -> TokenBatch {
        let mut chosen = vec![self.batcher.take()];
        let mut rows = self.train[chosen[0]].rows.len();
        while chosen.len() < self.train.len() {
            let next = self.batcher.peek();
            if rows + self.train[next].rows.len() > b || chosen.contains(&next) {
                break;
            }
            rows += self.train[self.batcher.take()].rows.len();
            chosen.push(next);
        }
        let gb = batch_of(&self.train, &chosen, b, self.t);
        self.last = gb.groups;
        gb.batch
    }

    /// The validation groups packed in order into at most `max_batches` batches.
    pub fn val_batches(&self, b: usize, max_batches: usize) -> Vec<GroupBatch> {
        pack(&self.val, b).iter().take(max_batches).map(|chosen| batch_of(&self.val, chosen, b, self.t)).collect()
    }

    /// The groups of validation batch `i` (as [`PreferenceRows::val_batches`] packs them).
    pub fn val_groups(&self, b: usize, i: usize) -> Vec<(usize, usize)> {
        let chosen = pack(&self.val, b).swap_remove(i);
        let mut first = 0;
        let mut out = Vec::with_capacity(chosen.len());
        for g in chosen {
            out.push((g, first));
            first += self.val[g].rows.len();
        }
        out
    }

    /// Every group, training then validation, in batches: (is validation, batch).
    pub fn all_batches(&self, b: usize) -> Vec<(bool, GroupBatch)> {
        let train = pack(&self.train, b).into_iter().map(|c| (false, batch_of(&self.train, &c, b, self.t)));
        let val = pack(&self.val, b).into_iter().map(|c| (true, batch_of(&self.val, &c, b, self.t)));
        train.chain(val).collect()
    }

    pub fn position(&self) -> BatcherState {
        self.batcher.state()
    }

    /// Checks that B holds the largest group.
    pub fn check_batch(&self, b: usize) -> Result<()> {
        let most = self.train.iter().chain(&self.val).map(|g| g.rows.len()).max().unwrap_or(0);
        if most > b {
            return Err(KilnError::Config(format!(
                "a batch of {b} rows cannot hold a prompt's {most} answers; use a batch size of at least {most}"
            )));
        }
        Ok(())
    }

    /// The first held-out prompt, for samples during training.
    pub fn sample_prompt(&self, tokenizer: &Tokenizer) -> Result<(Vec<u32>, String)> {
        let r = &self.rankings.1[0];
        debug_assert_eq!(r.prompt.last().map(|m| m.role), Some(Role::User));
        Ok((self.format.chat_prompt(tokenizer, &r.prompt, self.t)?, format!("{} → ", r.question())))
    }
}

/// The [`Stage`](super::Stage) methods a stage over [`PreferenceRows`] (in its field
/// `rows`) takes from them: batches of whole ranked prompts, their counts, position and
/// sample prompt. Its own file adds the kind, the data files and how it weighs a batch.
macro_rules! stage_over_rankings {
    () => {
        fn next_batch(&mut self, b: usize) -> TokenBatch {
            self.rows.next_batch(b)
        }

        fn val_batches(&self, b: usize, max_batches: usize) -> Vec<TokenBatch> {
            self.rows.val_batches(b, max_batches).into_iter().map(|g| g.batch).collect()
        }

        fn rows(&self) -> (usize, usize) {
            (self.rows.train.len(), self.rows.val.len())
        }

        fn position(&self) -> BatcherState {
            self.rows.position()
        }

        fn sample_prompt(&self, tokenizer: &Tokenizer) -> Result<(Vec<u32>, String)> {
            self.rows.sample_prompt(tokenizer)
        }
    };
}
pub(crate) use stage_over_rankings;
