//! From text to batches: checking the text, documents, token rows with `<|bos|>`/`<|eos|>`
//! at document boundaries, a train/validation split, and seeded, resumable batching with
//! padding masked out of the loss.

pub mod chat;
pub mod corpus;
pub mod instruct;
pub mod jsonl;

use serde::{Deserialize, Serialize};

use crate::error::{KilnError, Result};
use crate::rng::Rng;
use crate::tokenizer::{Tokenizer, BOS, EOS, PAD};
use crate::train::TokenBatch;

/// Bytes from a file or a paste, checked to be usable text: not empty, UTF-8, not binary.
pub fn text_from_bytes(bytes: &[u8]) -> Result<String> {
    if bytes.is_empty() {
        return Err(KilnError::Data("the file is empty".into()));
    }
    // NUL bytes do not occur in text files; they do in images, archives and executables.
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(KilnError::Data(format!("this looks like a binary file (a NUL byte at offset {at}), not text")));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        KilnError::Data(format!("this is not UTF-8 text: the byte at offset {} is invalid", e.valid_up_to()))
    })?;
    if text.trim().is_empty() {
        return Err(KilnError::Data("the text holds only whitespace".into()));
    }
    Ok(text.replace("\r\n", "\n"))
}

/// Documents are separated by blank lines.
pub fn documents(text: &str) -> Vec<&str> {
    text.split("\n\n").map(str::trim).filter(|d| !d.is_empty()).collect()
}

/// One document as rows of at most T + 1 tokens: `<|bos|> doc <|eos|>` cut every T
/// tokens, so consecutive rows overlap by one and every token is predicted once.
pub fn rows_of(ids: &[u32], t: usize) -> Vec<Vec<u32>> {
    let mut seq = Vec::with_capacity(ids.len() + 2);
    seq.push(BOS);
    seq.extend_from_slice(ids);
    seq.push(EOS);
    (0..seq.len() - 1).step_by(t).map(|start| seq[start..(start + t + 1).min(seq.len())].to_vec()).collect()
}

/// Rows → a batch of B × T: inputs are a row's tokens, targets the same shifted left by
/// one; positions past a row's end are padding with weight 0 (as are missing rows).
pub fn make_batch(rows: &[&[u32]], b: usize, t: usize) -> TokenBatch {
    let mut batch = TokenBatch { b, t, tokens: vec![PAD; b * t], targets: vec![PAD; b * t], weights: vec![0.0; b * t] };
    for (r, row) in rows.iter().take(b).enumerate() {
        for i in 0..row.len().saturating_sub(1).min(t) {
            batch.tokens[r * t + i] = row[i];
            batch.targets[r * t + i] = row[i + 1];
            batch.weights[r * t + i] = 1.0;
        }
    }
    batch
}

/// The tokenized text, split into training and validation rows.
pub struct Dataset {
    pub t: usize,
    pub train: Vec<Vec<u32>>,
    pub val: Vec<Vec<u32>>,
}

impl Dataset {
    /// Splits whole documents (shuffled by `seed`) into train and validation; with a
    /// single document, its rows are split instead.
    pub fn new(tokenizer: &Tokenizer, text: &str, t: usize, val_fraction: f64, seed: u64) -> Result<Dataset> {
        let docs = documents(text);
        if docs.is_empty() {
            return Err(KilnError::Data("the text is empty".into()));
        }
        let mut encoded = Vec::with_capacity(docs.len());
        for d in &docs {
            encoded.push(tokenizer.encode(d)?);
        }
        let total: usize = encoded.iter().map(|ids| ids.len() + 2).sum();
        if total < t + 2 {
            return Err(KilnError::Data(format!(
                "the text is {total} tokens long (with document markers), shorter than one context of {} plus a token to hold out for validation; give more text or choose a smaller context",
                t + 1
            )));
        }
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        shuffle(&mut order, &mut Rng::new(seed));
        let (mut train, mut val) = (Vec::new(), Vec::new());
        if encoded.len() >= 2 {
            let n_val = ((encoded.len() as f64 * val_fraction).ceil() as usize).clamp(1, encoded.len() - 1);
            for (i, &d) in order.iter().enumerate() {
                let rows = rows_of(&encoded[d], t);
                if i < n_val {
                    val.extend(rows)
                } else {
                    train.extend(rows)
                }
            }
        } else {
            let rows = rows_of(&encoded[0], t);
            if rows.len() < 2 {
                // one row: hold out its tail for validation
                let row = &rows[0];
                let cut = (row.len() * 9 / 10).clamp(2, row.len() - 1);
                train.push(row[..cut].to_vec());
                val.push(row[cut - 1..].to_vec());
            } else {
                let n_val = ((rows.len() as f64 * val_fraction).ceil() as usize).clamp(1, rows.len() - 1);
                let split = rows.len() - n_val;
                train.extend_from_slice(&rows[..split]);
                val.extend_from_slice(&rows[split..]);
            }
        }
        Ok(Dataset { t, train, val })
    }

    /// Number of predicted tokens in the training rows.
    pub fn train_tokens(&self) -> usize {
        self.train.iter().map(|r| r.len() - 1).sum()
    }

    /// The validation set as batches of B rows, in order (the same every time).
    pub fn val_batches(&self, b: usize, max_batches: usize) -> Vec<TokenBatch> {
        self.val
            .chunks(b)
            .take(max_batches.max(1))
            .map(|rows| make_batch(&rows.iter().map(|r| r.as_slice()).collect::<Vec<_>>(), b, self.t))
            .collect()
    }

    /// Entropy (nats) of the training targets' unigram distribution: the loss of a model
    /// that knows token frequencies and nothing else.
    pub fn unigram_entropy(&self) -> f64 {
        let mut counts = std::collections::HashMap::<u32, u64>::new();
        for row in &self.train {
            for &id in &row[1..] {
                *counts.entry(id).or_default() += 1;
            }
        }
        let n: u64 = counts.values().sum();
        counts.values().map(|&c| c as f64 / n as f64).map(|p| -p * p.ln()).sum()
    }
}

fn shuffle<T>(items: &mut [T], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i as u64 + 1) as usize);
    }
}

/// Where the batcher is: enough to continue exactly where a run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatcherState {
    pub seed: u64,
    pub epoch: u64,
    pub position: usize,
}

/// Draws training rows in a seeded order, reshuffled every epoch.
pub struct Batcher {
    state: BatcherState,
    order: Vec<usize>,
}

impl Batcher {
    pub fn new(rows: usize, seed: u64) -> Batcher {
        Self::resume(rows, BatcherState { seed, epoch: 0, position: 0 })
    }

    pub fn resume(rows: usize, state: BatcherState) -> Batcher {
        Batcher { order: Self::epoch_order(rows, state.seed, state.epoch), state }
    }

    fn epoch_order(rows: usize, seed: u64, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..rows).collect();
        shuffle(&mut order, &mut Rng::new(seed ^ (epoch + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        order
    }

    pub fn state(&self) -> BatcherState {
        self.state
    }

    /// The next B × T training batch.
    pub fn next(&mut self, data: &Dataset, b: usize) -> TokenBatch {
        let mut rows: Vec<&[u32]> = Vec::with_capacity(b);
        while rows.len() < b {
            if self.state.position == self.order.len() {
                self.state.epoch += 1;
                self.state.position = 0;
                self.order = Self::epoch_order(data.train.len(), self.state.seed, self.state.epoch);
            }
            rows.push(&data.train[self.order[self.state.position]]);
            self.state.position += 1;
        }
        make_batch(&rows, b, data.t)
    }
}
