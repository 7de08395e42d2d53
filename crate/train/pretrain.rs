//! Pretraining: next-token prediction on the user's text. Documents are packed into full
//! rows (`<|bos|> doc <|eos|>` one after another, an imported model's own markers in
//! their place), every target weighs the same.

use super::stage::{Built, Input, RowStage, StageDef, TokenRows};
use super::{StageKind, TrainConfig};
use crate::data::Files;
use crate::data::{BatcherState, Dataset};
use crate::error::{KilnError, Result};
use crate::tokenizer::{TokenRoles, Tokenizer};

pub const DEF: StageDef = StageDef {
    name: "pretrain",
    input: Input::Corpus,
    defaults: TrainConfig::shared,
    options: &[],
    head: None,
    frozen: &[],
    from_reference: false,
    build: |i| Ok(Built::new(Pretrain::by(i.tokenizer, &i.format.roles, i.corpus()?, i.t, i.cfg)?)),
    restore: |r| Ok(Box::new(Pretrain::restore(r.files, (r.tokenizer, &r.format.roles), r.t, r.cfg, r.position)?)),
};

pub struct Pretrain {
    pub rows: TokenRows,
    corpus: String,
    /// The model's document markers; a sample continues its bos (or end of text).
    roles: TokenRoles,
}

impl Pretrain {
    /// `text` split into documents, held out by `cfg.val_fraction` and `cfg.seed`.
    pub fn new(tokenizer: &Tokenizer, text: &str, t: usize, cfg: &TrainConfig) -> Result<Pretrain> {
        Pretrain::by(tokenizer, &TokenRoles::kiln(), text, t, cfg)
    }

    /// [`Pretrain::new`] for a model whose documents start and end with `roles`' tokens.
    pub fn by(tokenizer: &Tokenizer, roles: &TokenRoles, text: &str, t: usize, cfg: &TrainConfig) -> Result<Pretrain> {
        let data = Dataset::packed_by(tokenizer, roles, text, t, cfg.val_fraction, cfg.seed)?;
        Ok(Pretrain { rows: TokenRows::new(data, cfg.seed), corpus: text.to_string(), roles: roles.clone() })
    }

    pub fn restore(
        files: &Files,
        (tokenizer, roles): (&Tokenizer, &TokenRoles),
        t: usize,
        cfg: &TrainConfig,
        position: BatcherState,
    ) -> Result<Pretrain> {
        let bytes = files.get("corpus.txt").ok_or_else(|| KilnError::Checkpoint("corpus.txt is missing".into()))?;
        let corpus = std::str::from_utf8(bytes).map_err(|_| KilnError::Checkpoint("corpus.txt is not UTF-8".into()))?;
        let data = Dataset::packed_by(tokenizer, roles, corpus, t, cfg.val_fraction, cfg.seed)?;
        Ok(Pretrain { rows: TokenRows::resume(data, position)?, corpus: corpus.to_string(), roles: roles.clone() })
    }
}

impl RowStage for Pretrain {
    fn kind(&self) -> StageKind {
        StageKind::Pretrain
    }

    fn token_rows(&self) -> &TokenRows {
        &self.rows
    }

    fn token_rows_mut(&mut self) -> &mut TokenRows {
        &mut self.rows
    }

    fn data_files(&self) -> Files {
        Files::from([("corpus.txt".to_string(), self.corpus.as_bytes().to_vec())])
    }

    fn sample_prompt(&self, _: &Tokenizer) -> Result<(Vec<u32>, String)> {
        Ok((vec![self.roles.start()], String::new()))
    }
}
