//! Pretraining: next-token prediction on the user's text. Documents are packed into full
//! rows (`<|bos|> doc <|eos|>` one after another), every target weighs the same.

use super::stage::{Stage, StageKind};
use super::step::TokenBatch;
use super::TrainConfig;
use crate::checkpoint::Files;
use crate::data::{Batcher, BatcherState, Dataset};
use crate::error::{KilnError, Result};
use crate::tokenizer::{Tokenizer, BOS};

pub struct Pretrain {
    pub data: Dataset,
    batcher: Batcher,
    corpus: String,
}

impl Pretrain {
    /// `text` split into documents, held out by `cfg.val_fraction` and `cfg.seed`.
    pub fn new(tokenizer: &Tokenizer, text: &str, t: usize, cfg: &TrainConfig) -> Result<Pretrain> {
        let data = Dataset::packed(tokenizer, text, t, cfg.val_fraction, cfg.seed)?;
        let batcher = Batcher::new(data.train.len(), cfg.seed);
        Ok(Pretrain { data, batcher, corpus: text.to_string() })
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
        let mut stage = Pretrain::new(tokenizer, corpus, t, cfg)?;
        if position.position > stage.data.train.len() {
            return Err(KilnError::Checkpoint("trainer.json's data position is past the corpus".into()));
        }
        stage.batcher = Batcher::resume(stage.data.train.len(), position);
        Ok(stage)
    }
}

impl Stage for Pretrain {
    fn kind(&self) -> StageKind {
        StageKind::Pretrain
    }

    fn next_batch(&mut self, b: usize) -> TokenBatch {
        self.batcher.next(&self.data, b)
    }

    fn val_batches(&self, b: usize, max_batches: usize) -> Vec<TokenBatch> {
        self.data.val_batches(b, max_batches)
    }

    fn rows(&self) -> (usize, usize) {
        (self.data.train.len(), self.data.val.len())
    }

    fn position(&self) -> BatcherState {
        self.batcher.state()
    }

    fn data_files(&self) -> Files {
        Files::from([("corpus.txt".to_string(), self.corpus.as_bytes().to_vec())])
    }

    fn sample_prompt(&self, _: &Tokenizer) -> Result<(Vec<u32>, String)> {
        Ok((vec![BOS], String::new()))
    }
}
