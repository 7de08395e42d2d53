//! Pretraining: next-token prediction on the user's text. Documents are packed into full
//! rows (`<|bos|> doc <|eos|>` one after another), every target weighs the same.

use super::stage::{Built, Input, RowStage, StageDef, TokenRows};
use super::{StageKind, TrainConfig};
use crate::data::Files;
use crate::data::{BatcherState, Dataset};
use crate::error::{KilnError, Result};
use crate::tokenizer::{Tokenizer, BOS};

pub const DEF: StageDef = StageDef {
    name: "pretrain",
    input: Input::Corpus,
    defaults: TrainConfig::shared,
    options: &[],
    head: None,
    frozen: &[],
    from_reference: false,
    build: |i| Ok(Built::new(Pretrain::new(i.tokenizer, i.corpus()?, i.t, i.cfg)?)),
    restore: |r| Ok(Box::new(Pretrain::restore(r.files, r.tokenizer, r.t, r.cfg, r.position)?)),
};

pub struct Pretrain {
    pub rows: TokenRows,
    corpus: String,
}

impl Pretrain {
    /// `text` split into documents, held out by `cfg.val_fraction` and `cfg.seed`.
    pub fn new(tokenizer: &Tokenizer, text: &str, t: usize, cfg: &TrainConfig) -> Result<Pretrain> {
        let data = Dataset::packed(tokenizer, text, t, cfg.val_fraction, cfg.seed)?;
        Ok(Pretrain { rows: TokenRows::new(data, cfg.seed), corpus: text.to_string() })
    }

    pub fn restore(
        files: &Files,
        tokenizer: &Tokenizer,
        t: usize,
        cfg: &TrainConfig,
        position: BatcherState,
    ) -> Result<Pretrain> {
        let bytes = files.get("corpus.txt").ok_or_else(|| KilnError::Checkpoint("corpus.txt is missing".into()))?;
        let corpus = std::str::from_utf8(bytes).map_err(|_| KilnError::Checkpoint("corpus.txt is not UTF-8".into()))?;
        let data = Dataset::packed(tokenizer, corpus, t, cfg.val_fraction, cfg.seed)?;
        Ok(Pretrain { rows: TokenRows::resume(data, position)?, corpus: corpus.to_string() })
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
        Ok((vec![BOS], String::new()))
    }
}
