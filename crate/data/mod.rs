//! From text to batches: checking the text, documents packed into full rows with
//! `<|bos|>`/`<|eos|>` at document boundaries, a train/validation split, rows with a
//! supervised flag per target (SFT masks prompts), and seeded, resumable batching with
//! padding masked out of the loss.

pub mod agreement;
pub mod chat;
pub mod corpus;
pub mod format;
pub mod instruct;
pub mod jsonl;
pub mod preference;
pub mod rule;
pub mod template;
pub mod thumbs;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{KilnError, Result};
use crate::rng::Rng;
use crate::tokenizer::{TokenRoles, Tokenizer, PAD};

/// Named files, name → contents: a checkpoint folder, a stage's data, an autosave.
pub type Files = HashMap<String, Vec<u8>>;

/// One micro-batch of B rows × T positions, on the host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenBatch {
    pub b: usize,
    pub t: usize,
    pub tokens: Vec<u32>,  // (B, T) inputs
    pub targets: Vec<u32>, // (B, T) inputs shifted left by one
    /// (B, T) the loss weight of each position; 0 masks it out. The step's loss is
    /// Σ weight · nll over all its micro-batches, so the stage normalises (e.g. by 1/tokens).
    pub weights: Vec<f32>,
}

impl TokenBatch {
    /// Σ weights: the number of counted positions when weights are 0/1.
    pub fn weight_sum(&self) -> f64 {
        self.weights.iter().map(|&w| w as f64).sum()
    }

    /// The same batch with every weight multiplied by `scale`.
    pub fn scaled(&self, scale: f32) -> TokenBatch {
        TokenBatch { weights: self.weights.iter().map(|w| w * scale).collect(), ..self.clone() }
    }
}

/// The largest training text Kiln reads (the page and the CLI check a file's size against
/// it before reading a byte). Tokenizing 256 MiB in a browser already takes minutes.
pub const MAX_TEXT_BYTES: u64 = 256 << 20;

/// Refuses a file over `cap` by its size alone, before it is read.
pub fn check_file_size(size: u64, cap: u64, what: &str) -> Result<()> {
    if size > cap {
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        return Err(KilnError::Data(format!(
            "the file is {:.1} MiB, over the {:.0} MiB Kiln reads for {what}",
            mib(size),
            mib(cap)
        )));
    }
    Ok(())
}

/// What every text file goes through first: the size cap; UTF-16 (a Windows "Unicode"
/// save) recognised and explained rather than called binary; a UTF-8 byte-order mark dropped.
pub fn text_bytes<'a>(bytes: &'a [u8], cap: u64, what: &str) -> Result<&'a [u8]> {
    check_file_size(bytes.len() as u64, cap, what)?;
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") || looks_like_utf16(bytes) {
        return Err(KilnError::Data(
            "this file is UTF-16 text; Kiln reads UTF-8: save it as UTF-8 (in most editors, Save As → Encoding → UTF-8)"
                .into(),
        ));
    }
    Ok(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes))
}

/// UTF-16 without a byte-order mark: ASCII text in it has a NUL in every other byte, all
/// on one side of each pair.
fn looks_like_utf16(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(1024) & !1];
    let zeros = |parity: usize| head.iter().skip(parity).step_by(2).filter(|&&b| b == 0).count();
    let (even, odd) = (zeros(0), zeros(1));
    let pairs = head.len() / 2;
    pairs >= 2 && ((even * 2 >= pairs && odd == 0) || (odd * 2 >= pairs && even == 0))
}

/// Bytes from a file or a paste, checked to be usable text: not empty, UTF-8, not binary.
pub fn text_from_bytes(bytes: &[u8]) -> Result<String> {
    let bytes = text_bytes(bytes, MAX_TEXT_BYTES, "training text")?;
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

/// One training row of at most T + 1 tokens: position i's input is `ids[i]`, its target
/// `ids[i + 1]`, counted in the loss when `supervised[i + 1]` (SFT leaves prompts out).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub ids: Vec<u32>,
    pub supervised: Vec<bool>,
}

impl Row {
    /// A row whose every target counts (pretraining).
    pub fn all(ids: Vec<u32>) -> Row {
        Row { supervised: vec![true; ids.len()], ids }
    }

    /// Targets that count in the loss.
    pub fn targets(&self) -> usize {
        self.supervised.iter().skip(1).filter(|&&s| s).count()
    }
}

/// A stream of token ids cut into rows of at most T + 1 tokens, every T tokens, so
/// consecutive rows overlap by one and every token is predicted once.
pub fn windows(stream: &[u32], t: usize) -> Vec<Row> {
    if stream.len() < 2 {
        return Vec::new();
    }
    (0..stream.len() - 1)
        .step_by(t)
        .map(|start| Row::all(stream[start..(start + t + 1).min(stream.len())].to_vec()))
        .collect()
}

/// Documents packed one after another, each `<|bos|> doc <|eos|>` (nanoGPT and llm.c
/// do the same): rows are full, so no batch position is wasted on padding.
pub fn pack(docs: &[&[u32]]) -> Vec<u32> {
    pack_by(docs, &TokenRoles::kiln())
}

/// [`pack`] with a model's own markers: its bos before each document when it has one (Qwen
/// has none), its end of text after each.
pub fn pack_by(docs: &[&[u32]], roles: &TokenRoles) -> Vec<u32> {
    let mut stream = Vec::with_capacity(docs.iter().map(|d| d.len() + 2).sum());
    for d in docs {
        stream.extend(roles.bos);
        stream.extend_from_slice(d);
        stream.push(roles.end_of_text());
    }
    stream
}

/// Rows → a batch of B × T: inputs are a row's tokens, targets the same shifted left by
/// one, weight 1 on supervised targets; positions past a row's end are padding with
/// weight 0 (as are missing rows).
pub fn make_batch(rows: &[&Row], b: usize, t: usize) -> TokenBatch {
    let mut batch = TokenBatch { b, t, tokens: vec![PAD; b * t], targets: vec![PAD; b * t], weights: vec![0.0; b * t] };
    for (r, row) in rows.iter().take(b).enumerate() {
        for i in 0..row.ids.len().saturating_sub(1).min(t) {
            batch.tokens[r * t + i] = row.ids[i];
            batch.targets[r * t + i] = row.ids[i + 1];
            batch.weights[r * t + i] = if row.supervised[i + 1] { 1.0 } else { 0.0 };
        }
    }
    batch
}

/// Training and validation rows of context T.
pub struct Dataset {
    pub t: usize,
    pub train: Vec<Row>,
    pub val: Vec<Row>,
}

impl Dataset {
    /// Pretraining data: whole documents (shuffled by `seed`) split into train and
    /// validation, each side packed into one stream and cut into rows; a single document's
    /// stream is split at its tail instead.
    pub fn packed(tokenizer: &Tokenizer, text: &str, t: usize, val_fraction: f64, seed: u64) -> Result<Dataset> {
        Dataset::packed_by(tokenizer, &TokenRoles::kiln(), text, t, val_fraction, seed)
    }

    /// [`Dataset::packed`] with a model's own document markers ([`pack_by`]).
    pub fn packed_by(
        tokenizer: &Tokenizer,
        roles: &TokenRoles,
        text: &str,
        t: usize,
        val_fraction: f64,
        seed: u64,
    ) -> Result<Dataset> {
        let docs = documents(text);
        if docs.is_empty() {
            return Err(KilnError::Data("the text is empty".into()));
        }
        let mut encoded = Vec::with_capacity(docs.len());
        for d in &docs {
            encoded.push(tokenizer.encode(d)?);
        }
        let markers = 1 + usize::from(roles.bos.is_some());
        let total: usize = encoded.iter().map(|ids| ids.len() + markers).sum();
        if total < t + 2 {
            return Err(KilnError::Data(format!(
                "the text is {total} tokens long (with document markers), shorter than one context of {} plus a token to hold out for validation; give more text or choose a smaller context",
                t + 1
            )));
        }
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        shuffle(&mut order, &mut Rng::new(seed));
        let (train, val) = if encoded.len() >= 2 {
            let n_val = ((encoded.len() as f64 * val_fraction).ceil() as usize).clamp(1, encoded.len() - 1);
            let side = |ids: &[usize]| pack_by(&ids.iter().map(|&d| encoded[d].as_slice()).collect::<Vec<_>>(), roles);
            (side(&order[n_val..]), side(&order[..n_val]))
        } else {
            let stream = pack_by(&[&encoded[0]], roles);
            let n_val = ((stream.len() as f64 * val_fraction).ceil() as usize).clamp(2, (stream.len() - t - 1).max(2));
            let cut = stream.len() - n_val;
            (stream[..cut].to_vec(), stream[cut - 1..].to_vec())
        };
        let (train, val) = (windows(&train, t), windows(&val, t));
        if train.is_empty() || val.is_empty() {
            return Err(KilnError::Data("the text is too short to hold out a validation part".into()));
        }
        Ok(Dataset { t, train, val })
    }

    /// Predicted tokens in the training rows.
    pub fn train_tokens(&self) -> usize {
        self.train.iter().map(Row::targets).sum()
    }

    /// The validation set as batches of B rows, in order (the same every time).
    pub fn val_batches(&self, b: usize, max_batches: usize) -> Vec<TokenBatch> {
        self.val
            .chunks(b)
            .take(max_batches.max(1))
            .map(|rows| make_batch(&rows.iter().collect::<Vec<_>>(), b, self.t))
            .collect()
    }

    /// Entropy (nats) of the training targets' unigram distribution: the loss of a model
    /// that knows token frequencies and nothing else.
    pub fn unigram_entropy(&self) -> f64 {
        let mut counts = std::collections::HashMap::<u32, u64>::new();
        for row in &self.train {
            for (&id, &s) in row.ids.iter().zip(&row.supervised).skip(1) {
                if s {
                    *counts.entry(id).or_default() += 1;
                }
            }
        }
        let n: u64 = counts.values().sum();
        counts.values().map(|&c| c as f64 / n as f64).map(|p| -p * p.ln()).sum()
    }
}

pub(crate) fn shuffle<T>(items: &mut [T], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i as u64 + 1) as usize);
    }
}

/// Where the batcher is: enough to continue exactly where a run stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

    /// The index of the next item, without taking it (a new epoch's order starts when
    /// the last one is used up).
    pub fn peek(&mut self) -> usize {
        if self.state.position == self.order.len() {
            self.state.epoch += 1;
            self.state.position = 0;
            self.order = Self::epoch_order(self.order.len(), self.state.seed, self.state.epoch);
        }
        self.order[self.state.position]
    }

    /// The index of the next item.
    pub fn take(&mut self) -> usize {
        let i = self.peek();
        self.state.position += 1;
        i
    }

    /// The next B × T training batch.
    pub fn next(&mut self, data: &Dataset, b: usize) -> TokenBatch {
        let rows: Vec<&Row> = (0..b).map(|_| &data.train[self.take()]).collect();
        make_batch(&rows, b, data.t)
    }
}

/// A file's name without the folders before it ("SmolLM2/config.json" → "config.json"),
/// as a browser's folder input gives them.
pub fn base_name(name: &str) -> &str {
    name.rsplit(['/', '\\']).next().unwrap_or(name)
}
