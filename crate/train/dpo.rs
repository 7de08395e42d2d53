//! Direct preference optimisation (Rafailov et al. 2023) from the same pairs, no reward
//! model. With π = log p(answer | prompt) under the model being trained (−Σ nll over the
//! answer's tokens and `<|end|>`) and ρ the same under the reference (the model as the
//! stage began, computed once):
//!   z    = β · ((π_c − ρ_c) − (π_r − ρ_r))
//!   loss = mean over pairs of −log σ(z) + α · nll(chosen)/|chosen|
//! The second term (TRL's `rpo_alpha`, on by default) keeps the chosen answers likely:
//! when chosen and rejected share most of their tokens, plain DPO lowers both and wrecks
//! answers nobody asked to change (likelihood displacement). Each token's weight in the
//! cross-entropy backward is −d loss/dπ of its answer (π = −Σ nll).

use super::preference::{answer_span, stage_over_rankings, PreferenceRows};
use super::reward::{bradley_terry, PairStats};
use super::stage::{Built, Input, Phase, Stage, StageDef};
use super::step::{Gradients, Heads, Outputs, TokenBatch};
use super::Metrics;
use super::{StageKind, TrainConfig};
use crate::data::BatcherState;
use crate::data::Files;
use crate::error::{KilnError, Result};
use crate::data::format::ChatFormat;
use crate::tokenizer::Tokenizer;

pub const DEF: StageDef = StageDef {
    name: "dpo",
    input: Input::Rankings,
    defaults: || TrainConfig { steps: 100, lr: 3e-4, min_lr: 3e-5, ..TrainConfig::preference() },
    options: &["dpoBeta", "rpoAlpha"],
    head: None,
    frozen: &[],
    from_reference: true,
    build: |i| {
        let (beta, rpo_alpha) = (i.cfg.align.dpo_beta, i.cfg.align.rpo_alpha);
        Ok(Built::new(Dpo::new(PreferenceRows::from_input(i, "dpo")?, beta, rpo_alpha)))
    },
    restore: |r| {
        let a = &r.cfg.align;
        Ok(Box::new(Dpo::restore(r.files, (r.tokenizer, r.format), r.t, (a.dpo_beta, a.rpo_alpha), r.position)?))
    },
};

const REFERENCE_FILE: &str = "dpo-reference.json";

/// The reference log-probabilities of every answer, [group][row], training and validation.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reference {
    pub train: Vec<Vec<f64>>,
    pub val: Vec<Vec<f64>>,
}

pub struct Dpo {
    pub rows: PreferenceRows,
    pub beta: f64,
    pub rpo_alpha: f64,
    pub reference: Option<Reference>,
    train: PairStats,
    val: PairStats,
    /// Σ π over chosen and over rejected answers since the last report.
    logps: (f64, f64),
}

/// log p of each row of `group`s placed in a batch: −Σ nll over its answer positions.
fn answer_logps(rows: &[crate::data::Row], first: usize, t: usize, nll: &[f32]) -> Vec<f64> {
    let logp = |k: usize| {
        let (a, b, _) = answer_span(&rows[k]);
        -(a..=b).map(|p| nll[(first + k) * t + p] as f64).sum::<f64>()
    };
    (0..rows.len()).map(logp).collect()
}

impl Dpo {
    pub fn new(rows: PreferenceRows, beta: f64, rpo_alpha: f64) -> Dpo {
        Dpo {
            rows,
            beta,
            rpo_alpha,
            reference: None,
            train: PairStats::default(),
            val: PairStats::default(),
            logps: (0.0, 0.0),
        }
    }

    pub fn restore(
        files: &Files,
        vocabulary: (&Tokenizer, &ChatFormat),
        t: usize,
        (beta, rpo_alpha): (f64, f64),
        position: BatcherState,
    ) -> Result<Dpo> {
        let mut dpo = Dpo::new(PreferenceRows::restore(files, vocabulary, t, position)?, beta, rpo_alpha);
        let bytes =
            files.get(REFERENCE_FILE).ok_or_else(|| KilnError::Checkpoint(format!("{REFERENCE_FILE} is missing")))?;
        let reference: Reference =
            serde_json::from_slice(bytes).map_err(|e| KilnError::Checkpoint(format!("{REFERENCE_FILE}: {e}")))?;
        let shape = |groups: &[super::preference::Group]| groups.iter().map(|g| g.rows.len()).collect::<Vec<_>>();
        let lens = |r: &[Vec<f64>]| r.iter().map(Vec::len).collect::<Vec<_>>();
        if lens(&reference.train) != shape(&dpo.rows.train) || lens(&reference.val) != shape(&dpo.rows.val) {
            return Err(KilnError::Checkpoint(format!("{REFERENCE_FILE} does not match the rankings")));
        }
        dpo.reference = Some(reference);
        Ok(dpo)
    }
}

impl Stage for Dpo {
    fn kind(&self) -> StageKind {
        StageKind::Dpo
    }

    stage_over_rankings!();

    fn data_files(&self) -> Files {
        let mut files = self.rows.data_files();
        if let Some(reference) = &self.reference {
            files.insert(REFERENCE_FILE.into(), serde_json::to_vec(reference).expect("JSON"));
        }
        files
    }

    fn heads(&self) -> Option<Heads> {
        Some(Heads::LM)
    }

    fn needs_reference(&self) -> bool {
        self.reference.is_none()
    }

    fn reference_batches(&self, b: usize) -> Vec<TokenBatch> {
        self.rows.all_batches(b).into_iter().map(|(_, g)| g.batch).collect()
    }

    fn set_reference(&mut self, b: usize, outputs: Vec<Outputs>) -> Result<()> {
        let mut reference = Reference::default();
        for ((is_val, gb), out) in self.rows.all_batches(b).into_iter().zip(&outputs) {
            let (set, into) =
                if is_val { (&self.rows.val, &mut reference.val) } else { (&self.rows.train, &mut reference.train) };
            for &(g, first) in &gb.groups {
                into.push(answer_logps(&set[g].rows, first, gb.batch.t, &out.nll));
            }
        }
        self.reference = Some(reference);
        Ok(())
    }

    fn weigh(&mut self, batch: &TokenBatch, out: &Outputs, phase: Phase) -> Result<Gradients> {
        let t = batch.t;
        let reference = self.reference.as_ref().expect("reference log-probabilities are computed first");
        let (groups, set, refs, stats) = match phase {
            Phase::Train => (self.rows.last.clone(), &self.rows.train, &reference.train, &mut self.train),
            Phase::Val(i) => (self.rows.val_groups(batch.b, i), &self.rows.val, &reference.val, &mut self.val),
        };
        let n: usize = groups.iter().map(|&(g, _)| set[g].pairs.len()).sum();
        let mut grads = Gradients { weights: vec![0.0; batch.b * t], dvalues: Vec::new(), loss: 0.0 };
        for &(g, first) in &groups {
            let rows = &set[g].rows;
            let pi = answer_logps(rows, first, t, &out.nll);
            // d loss/dπ of each answer of the group
            let mut d_pi = vec![0.0f64; rows.len()];
            for &(c, r) in &set[g].pairs {
                let z = self.beta * ((pi[c] - refs[g][c]) - (pi[r] - refs[g][r]));
                let tokens = {
                    let (a, b, _) = answer_span(&rows[c]);
                    (b + 1 - a) as f64
                };
                // −log σ(z) is Bradley-Terry on the implicit rewards β(π − ρ)
                let (loss, d_z) = bradley_terry(z, 0.0);
                grads.loss += (loss + self.rpo_alpha * -pi[c] / tokens) / n as f64;
                d_pi[c] += (self.beta * d_z - self.rpo_alpha / tokens) / n as f64;
                d_pi[r] += -self.beta * d_z / n as f64;
                stats.add(z);
                if phase == Phase::Train {
                    self.logps.0 += pi[c];
                    self.logps.1 += pi[r];
                }
            }
            for (k, d) in d_pi.iter().enumerate() {
                let (a, b, _) = answer_span(&rows[k]);
                for p in a..=b {
                    grads.weights[(first + k) * t + p] = -*d as f32;
                }
            }
        }
        Ok(grads)
    }

    fn metrics(&mut self) -> Metrics {
        let pairs = self.train.pairs.max(1) as f64;
        let (chosen, rejected) = std::mem::take(&mut self.logps);
        let (train, val) = (self.train.take(), self.val.take());
        Metrics {
            pair_accuracy: train.map(|m| m.0),
            reward_margin: train.map(|m| m.1),
            logp_chosen: train.map(|_| chosen / pairs),
            logp_rejected: train.map(|_| rejected / pairs),
            val_pair_accuracy: val.map(|m| m.0),
            val_reward_margin: val.map(|m| m.1),
            ..Metrics::default()
        }
    }
}
