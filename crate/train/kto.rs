//! KTO (Ethayarajh et al. 2024) from thumbs up and down, no pairs: each answer is pushed
//! above or below a reference point, the KL of the policy to the reference. With π and ρ
//! an answer's log-probability under the model and under the reference (the model as the
//! stage began, computed once), r = π − ρ, and per batch
//!   z₀   = max(0, mean over its examples of π(y′|x) − ρ(y′|x)), y′ the answer of another
//!          example (a fixed partner): the KL estimate, held constant (no gradient)
//!   loss = mean over examples of λ_D·(1 − σ(β(r − z₀))) for a thumb up,
//!                                λ_U·(1 − σ(β(z₀ − r))) for a thumb down
//! TRL's loss and defaults (β 0.1). The weights λ_D, λ_U default to balancing the counts:
//! the more numerous kind is weighed down so that λ_D·n_D = λ_U·n_U. Each example is two
//! rows, its own answer and its partner's; a token's weight in the cross-entropy backward
//! is −d loss/dπ of its answer (the partner's rows weigh 0).

use super::preference::{batch_of, pack, Group};
use super::stage::{Built, Input, Phase, Stage, StageDef};
use super::step::{Gradients, Heads, Outputs, TokenBatch};
use super::{Metrics, StageKind, TrainConfig};
use crate::data::format::ChatFormat;
use crate::data::preference::{answer_row, answer_span};
use crate::data::thumbs::{read_feedback, thumbs_jsonl, Thumb};
use crate::data::{shuffle, Batcher, BatcherState, Files, Row};
use crate::error::{KilnError, Result};
use crate::rng::Rng;
use crate::tokenizer::Tokenizer;

pub const DEF: StageDef = StageDef {
    name: "kto",
    input: Input::Feedback,
    // A batch holds eight answers and their partners. On the tiny preset
    // (tests/chat_learning.rs) 1e-4 cost 7 points of task accuracy, 5e-5 gained 25 points
    // of the rule where 8e-5 gained 34.
    defaults: || TrainConfig { steps: 100, lr: 8e-5, min_lr: 8e-6, batch_size: 16, ..TrainConfig::preference() },
    options: &["ktoBeta", "desirableWeight", "undesirableWeight"],
    head: None,
    frozen: &[],
    from_reference: true,
    build: |mut i| {
        let thumbs = i.thumbs.take().ok_or_else(|| KilnError::Config("the kto stage needs thumbs or rankings (JSONL)".into()))?;
        let kto = Kto::split(i.format, i.tokenizer, thumbs, i.t, i.cfg)?;
        kto.check_batch(i.cfg.batch_size)?;
        Ok(Built::new(kto))
    },
    restore: |r| {
        let read = |name: &str| -> Result<Vec<Thumb>> {
            let bytes = r.files.get(name).ok_or_else(|| KilnError::Checkpoint(format!("{name} is missing")))?;
            read_feedback(bytes).map(|f| f.items).map_err(|e| KilnError::Checkpoint(format!("{name}: {e}")))
        };
        let (train, val) = (read(TRAIN_FILE)?, read(VAL_FILE)?);
        let mut kto = Kto::new(r.format, r.tokenizer, (train, val), r.t, r.cfg, r.position)?;
        let bytes =
            r.files.get(REFERENCE_FILE).ok_or_else(|| KilnError::Checkpoint(format!("{REFERENCE_FILE} is missing")))?;
        let reference: Reference =
            serde_json::from_slice(bytes).map_err(|e| KilnError::Checkpoint(format!("{REFERENCE_FILE}: {e}")))?;
        if reference.train.len() != kto.train.len() || reference.val.len() != kto.val.len() {
            return Err(KilnError::Checkpoint(format!("{REFERENCE_FILE} does not match the thumbs")));
        }
        kto.reference = Some(reference);
        Ok(Box::new(kto))
    },
};

const TRAIN_FILE: &str = "kto-train.jsonl";
const VAL_FILE: &str = "kto-val.jsonl";
const REFERENCE_FILE: &str = "kto-reference.json";

/// ρ of each example's answer and of its partner's, training and validation.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reference {
    pub train: Vec<(f64, f64)>,
    pub val: Vec<(f64, f64)>,
}

/// Running sums for the report.
#[derive(Default)]
struct Stats {
    examples: usize,
    up: (usize, f64, f64),
    down: (usize, f64, f64),
    kl: f64,
    batches: usize,
}

impl Stats {
    /// Adds an example: its label, π and its implicit reward β·r.
    fn add(&mut self, label: bool, pi: f64, reward: f64) {
        self.examples += 1;
        let side = if label { &mut self.up } else { &mut self.down };
        side.0 += 1;
        side.1 += pi;
        side.2 += reward;
    }

    /// The mean implicit reward of thumbs up minus that of thumbs down.
    fn margin(&self) -> Option<f64> {
        let mean = |s: &(usize, f64, f64)| (s.0 > 0).then(|| s.2 / s.0 as f64);
        Some(mean(&self.up)? - mean(&self.down)?)
    }
}

pub struct Kto {
    /// One group per thumb: its row and its partner's row.
    pub train: Vec<Group>,
    pub val: Vec<Group>,
    thumbs: (Vec<Thumb>, Vec<Thumb>),
    batcher: Batcher,
    t: usize,
    last: Vec<(usize, usize)>,
    format: ChatFormat,
    beta: f64,
    /// (λ_D, λ_U), resolved from the counts where the options leave them at 0.
    weights: (f64, f64),
    pub reference: Option<Reference>,
    train_stats: Stats,
    val_stats: Stats,
}

/// The row `prompt + answer + end of turn + pad`, the answer cut to fit.
fn thumb_row(format: &ChatFormat, tokenizer: &Tokenizer, thumb: &Thumb, answer: &str, t: usize) -> Result<Row> {
    let prompt = format.chat_prompt(tokenizer, &thumb.prompt, t)?;
    let room = (t + 1).saturating_sub(prompt.len() + 2);
    if room == 0 {
        let question = thumb.prompt.last().map_or("", |m| m.content.as_str());
        return Err(KilnError::Data(format!(
            "the prompt {question:?} leaves no room for an answer in the model's context of {t} tokens"
        )));
    }
    let mut ids = tokenizer.encode(answer)?;
    ids.truncate(room);
    ids.push(format.end_of_turn());
    Ok(answer_row(&prompt, &ids, t, format.roles.pad))
}

/// Each thumb's group: its own answer, then the next thumb's answer to its prompt.
fn groups(format: &ChatFormat, tokenizer: &Tokenizer, thumbs: &[Thumb], t: usize) -> Result<Vec<Group>> {
    let n = thumbs.len();
    (0..n)
        .map(|i| {
            let partner = &thumbs[(i + 1) % n].completion;
            let rows =
                vec![thumb_row(format, tokenizer, &thumbs[i], &thumbs[i].completion, t)?, thumb_row(format, tokenizer, &thumbs[i], partner, t)?];
            Ok(Group { rows, pairs: Vec::new() })
        })
        .collect()
}

/// log p of the answer of row `k` of a batch: −Σ nll over its answer positions.
fn answer_logp(row: &Row, k: usize, t: usize, nll: &[f32]) -> f64 {
    let (a, b, _) = answer_span(row);
    -(a..=b).map(|p| nll[k * t + p] as f64).sum::<f64>()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl Kto {
    /// `val_fraction` of the thumbs (at least one) held out, by a seeded shuffle.
    pub fn split(
        format: &ChatFormat,
        tokenizer: &Tokenizer,
        mut thumbs: Vec<Thumb>,
        t: usize,
        cfg: &TrainConfig,
    ) -> Result<Kto> {
        if thumbs.len() < 3 {
            return Err(KilnError::Data(format!(
                "KTO needs at least 3 thumbs (one is held out to measure, and each answer is compared with another's), not {}",
                thumbs.len()
            )));
        }
        shuffle(&mut thumbs, &mut Rng::new(cfg.seed));
        let n_val = ((thumbs.len() as f64 * cfg.val_fraction).ceil() as usize).clamp(1, thumbs.len() - 2);
        let train = thumbs.split_off(n_val);
        Kto::new(format, tokenizer, (train, thumbs), t, cfg, BatcherState { seed: cfg.seed, epoch: 0, position: 0 })
    }

    pub fn new(
        format: &ChatFormat,
        tokenizer: &Tokenizer,
        (train, val): (Vec<Thumb>, Vec<Thumb>),
        t: usize,
        cfg: &TrainConfig,
        position: BatcherState,
    ) -> Result<Kto> {
        let (train_groups, val_groups) = (groups(format, tokenizer, &train, t)?, groups(format, tokenizer, &val, t)?);
        if train_groups.len() < 2 || val_groups.is_empty() {
            return Err(KilnError::Data("KTO needs at least 2 thumbs to train on and 1 to hold out".into()));
        }
        if position.position > train_groups.len() {
            return Err(KilnError::Checkpoint("trainer.json's data position is past the thumbs".into()));
        }
        let a = &cfg.align;
        let up = train.iter().filter(|t| t.label).count() as f64;
        let down = train.len() as f64 - up;
        // balanced: the more numerous kind weighs less, so that λ_D·n_D = λ_U·n_U; with
        // thumbs of one kind only there is nothing to balance
        let weigh = |more: f64, fewer: f64| if more > fewer && fewer > 0.0 { fewer / more } else { 1.0 };
        let balanced = (weigh(up, down), weigh(down, up));
        let weights = (
            if a.desirable_weight > 0.0 { a.desirable_weight } else { balanced.0 },
            if a.undesirable_weight > 0.0 { a.undesirable_weight } else { balanced.1 },
        );
        Ok(Kto {
            batcher: Batcher::resume(train_groups.len(), position),
            train: train_groups,
            val: val_groups,
            thumbs: (train, val),
            t,
            last: Vec::new(),
            format: format.clone(),
            beta: a.kto_beta,
            weights,
            reference: None,
            train_stats: Stats::default(),
            val_stats: Stats::default(),
        })
    }

    /// Checks that B holds an example and its partner.
    fn check_batch(&self, b: usize) -> Result<()> {
        if b < 2 {
            return Err(KilnError::Config(format!("KTO needs a batch of at least 2 rows (an answer and its partner's), not {b}")));
        }
        Ok(())
    }

    /// The weights (λ_D, λ_U) in use.
    pub fn weights(&self) -> (f64, f64) {
        self.weights
    }
}

impl Stage for Kto {
    fn kind(&self) -> StageKind {
        StageKind::Kto
    }

    /// Whole examples in the seeded order while they fit in B.
    fn next_batch(&mut self, b: usize) -> TokenBatch {
        let mut chosen = vec![self.batcher.take()];
        while (chosen.len() + 1) * 2 <= b && chosen.len() < self.train.len() {
            let next = self.batcher.peek();
            if chosen.contains(&next) {
                break;
            }
            chosen.push(self.batcher.take());
        }
        let gb = batch_of(&self.train, &chosen, b, self.t);
        self.last = gb.groups;
        gb.batch
    }

    fn val_batches(&self, b: usize, max_batches: usize) -> Vec<TokenBatch> {
        pack(&self.val, b).iter().take(max_batches).map(|c| batch_of(&self.val, c, b, self.t).batch).collect()
    }

    fn rows(&self) -> (usize, usize) {
        (self.train.len(), self.val.len())
    }

    fn position(&self) -> BatcherState {
        self.batcher.state()
    }

    fn data_files(&self) -> Files {
        let mut files = Files::from([
            (TRAIN_FILE.to_string(), thumbs_jsonl(&self.thumbs.0).into_bytes()),
            (VAL_FILE.to_string(), thumbs_jsonl(&self.thumbs.1).into_bytes()),
        ]);
        if let Some(reference) = &self.reference {
            files.insert(REFERENCE_FILE.into(), serde_json::to_vec(reference).expect("JSON"));
        }
        files
    }

    fn sample_prompt(&self, tokenizer: &Tokenizer) -> Result<(Vec<u32>, String)> {
        let prompt = &self.thumbs.1[0].prompt;
        let question = prompt.last().map_or("", |m| m.content.as_str());
        Ok((self.format.chat_prompt(tokenizer, prompt, self.t)?, format!("{question} → ")))
    }

    fn heads(&self) -> Option<Heads> {
        Some(Heads::LM)
    }

    fn needs_reference(&self) -> bool {
        self.reference.is_none()
    }

    fn reference_batches(&self, b: usize) -> Vec<TokenBatch> {
        let train = pack(&self.train, b).into_iter().map(|c| batch_of(&self.train, &c, b, self.t).batch);
        let val = pack(&self.val, b).into_iter().map(|c| batch_of(&self.val, &c, b, self.t).batch);
        train.chain(val).collect()
    }

    fn set_reference(&mut self, b: usize, outputs: Vec<Outputs>) -> Result<()> {
        let mut reference = Reference::default();
        let batches = pack(&self.train, b).into_iter().map(|c| (false, c)).chain(pack(&self.val, b).into_iter().map(|c| (true, c)));
        for ((is_val, chosen), out) in batches.zip(&outputs) {
            let (set, into) = if is_val { (&self.val, &mut reference.val) } else { (&self.train, &mut reference.train) };
            let gb = batch_of(set, &chosen, b, self.t);
            for &(g, first) in &gb.groups {
                let rows = &set[g].rows;
                into.push((answer_logp(&rows[0], first, self.t, &out.nll), answer_logp(&rows[1], first + 1, self.t, &out.nll)));
            }
        }
        self.reference = Some(reference);
        Ok(())
    }

    fn weigh(&mut self, batch: &TokenBatch, out: &Outputs, phase: Phase) -> Result<Gradients> {
        let t = batch.t;
        let reference = self.reference.as_ref().expect("reference log-probabilities are computed first");
        let (examples, set, thumbs, refs, stats) = match phase {
            Phase::Train => (self.last.clone(), &self.train, &self.thumbs.0, &reference.train, &mut self.train_stats),
            Phase::Val(i) => {
                let chosen = pack(&self.val, batch.b).swap_remove(i);
                let groups = batch_of(&self.val, &chosen, batch.b, t).groups;
                (groups, &self.val, &self.thumbs.1, &reference.val, &mut self.val_stats)
            }
        };
        // z₀: the batch's KL estimate from each example's partner answer, held constant
        let kl: f64 = examples
            .iter()
            .map(|&(g, first)| answer_logp(&set[g].rows[1], first + 1, t, &out.nll) - refs[g].1)
            .sum::<f64>()
            / examples.len() as f64;
        let z0 = kl.max(0.0);
        let n = examples.len() as f64;
        let mut grads = Gradients { weights: vec![0.0; batch.b * t], dvalues: Vec::new(), loss: 0.0 };
        for &(g, first) in &examples {
            let row = &set[g].rows[0];
            let pi = answer_logp(row, first, t, &out.nll);
            let r = pi - refs[g].0;
            let label = thumbs[g].label;
            // 1 − σ(x) with x = ±β(r − z₀); d/dπ = ∓λβ·σ(x)(1 − σ(x))
            let (lambda, sign) = if label { (self.weights.0, 1.0) } else { (self.weights.1, -1.0) };
            let x = sign * self.beta * (r - z0);
            let s = sigmoid(x);
            grads.loss += lambda * (1.0 - s) / n;
            let d_pi = -lambda * sign * self.beta * s * (1.0 - s) / n;
            let (a, b, _) = answer_span(row);
            for p in a..=b {
                grads.weights[first * t + p] = -d_pi as f32;
            }
            stats.add(label, pi, self.beta * r);
        }
        stats.kl += z0;
        stats.batches += 1;
        Ok(grads)
    }

    fn metrics(&mut self) -> Metrics {
        let (train, val) = (std::mem::take(&mut self.train_stats), std::mem::take(&mut self.val_stats));
        let mean = |s: &(usize, f64, f64)| (s.0 > 0).then(|| s.1 / s.0 as f64);
        Metrics {
            reward_margin: train.margin(),
            logp_chosen: mean(&train.up),
            logp_rejected: mean(&train.down),
            kl: (train.batches > 0).then(|| train.kl / train.batches as f64),
            val_reward_margin: val.margin(),
            ..Metrics::default()
        }
    }
}
