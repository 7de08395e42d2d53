//! The reward model: the fine-tuned trunk with a scalar head read at each answer's final
//! token (the position whose input is `<|end|>`), trained on the person's pairs with the
//! Bradley-Terry loss, all pairs of a prompt from one forward pass:
//!   loss = mean over pairs of −log σ(r_chosen − r_rejected)
//!          + λ · mean over pairs of (r_chosen + r_rejected)²     (centring, λ ≥ 0)
//! Pair accuracy — how often r_chosen > r_rejected, a tie counting half — on the held-out
//! rankings tells the person whether the model has learnt their taste.

use super::preference::{answer_span, stage_over_rankings, PreferenceRows};
use super::stage::{Built, Input, Phase, Stage, StageDef};
use super::step::{Gradients, Heads, Outputs, TokenBatch};
use super::Metrics;
use super::{StageKind, TrainConfig};
use crate::data::BatcherState;
use crate::data::Files;
use crate::error::Result;
use crate::model::ScalarHeadKind;
use crate::data::format::ChatFormat;
use crate::tokenizer::Tokenizer;

pub const DEF: StageDef = StageDef {
    name: "reward",
    input: Input::Rankings,
    defaults: || TrainConfig { steps: 150, lr: 1e-3, min_lr: 1e-4, ..TrainConfig::preference() },
    options: &["rewardCenter"],
    head: Some(ScalarHeadKind::Reward),
    frozen: &[],
    from_reference: true,
    build: |i| {
        let center = i.cfg.align.reward_center;
        Ok(Built::new(Reward::new(PreferenceRows::from_input(i, "reward")?, center)))
    },
    restore: |r| {
        let center = r.cfg.align.reward_center;
        Ok(Box::new(Reward::restore(r.files, (r.tokenizer, r.format), r.t, center, r.position)?))
    },
};

/// −log σ(r_c − r_r) and its derivative with respect to r_c (that for r_r is its negative).
pub fn bradley_terry(r_chosen: f64, r_rejected: f64) -> (f64, f64) {
    let d = r_chosen - r_rejected;
    let loss = if d > 0.0 { (-d).exp().ln_1p() } else { -d + d.exp().ln_1p() }; // softplus(−d), stable
    (loss, -sigmoid(-d))
}

pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Running sums over the pairs seen since the last report.
#[derive(Clone, Copy, Debug, Default)]
pub struct PairStats {
    pub pairs: usize,
    /// Pairs ordered as the person did, a tie counting half.
    pub correct: f64,
    pub margin: f64,
}

impl PairStats {
    pub fn add(&mut self, margin: f64) {
        self.pairs += 1;
        // a margin of exactly 0 (DPO's first step, the policy still the reference) orders
        // neither way: half, the accuracy of a coin, not a wrong answer (the Mann-Whitney
        // convention; TRL's strict `>` reads 0 there)
        self.correct += if margin > 0.0 {
            1.0
        } else if margin == 0.0 {
            0.5
        } else {
            0.0
        };
        self.margin += margin;
    }

    /// (accuracy, mean margin), None before any pair.
    pub fn take(&mut self) -> Option<(f64, f64)> {
        let s = std::mem::take(self);
        (s.pairs > 0).then(|| (s.correct / s.pairs as f64, s.margin / s.pairs as f64))
    }
}

pub struct Reward {
    pub rows: PreferenceRows,
    /// λ of the centring term (0: off).
    pub center: f64,
    train: PairStats,
    val: PairStats,
}

impl Reward {
    pub fn new(rows: PreferenceRows, center: f64) -> Reward {
        Reward { rows, center, train: PairStats::default(), val: PairStats::default() }
    }

    pub fn restore(
        files: &Files,
        vocabulary: (&Tokenizer, &ChatFormat),
        t: usize,
        center: f64,
        position: BatcherState,
    ) -> Result<Reward> {
        Ok(Reward::new(PreferenceRows::restore(files, vocabulary, t, position)?, center))
    }
}

impl Stage for Reward {
    fn kind(&self) -> StageKind {
        StageKind::Reward
    }

    stage_over_rankings!();

    fn data_files(&self) -> Files {
        self.rows.data_files()
    }

    fn heads(&self) -> Option<Heads> {
        Some(Heads::SCALAR)
    }

    fn weigh(&mut self, batch: &TokenBatch, out: &Outputs, phase: Phase) -> Result<Gradients> {
        let t = batch.t;
        let (groups, set, stats) = match phase {
            Phase::Train => (self.rows.last.clone(), &self.rows.train, &mut self.train),
            Phase::Val(i) => (self.rows.val_groups(batch.b, i), &self.rows.val, &mut self.val),
        };
        let n: usize = groups.iter().map(|&(g, _)| set[g].pairs.len()).sum();
        let mut grads = Gradients { weights: Vec::new(), dvalues: vec![0.0; batch.b * t], loss: 0.0 };
        for &(g, first) in &groups {
            let group = &set[g];
            let at = |k: usize| (first + k) * t + answer_span(&group.rows[k]).2;
            for &(c, r) in &group.pairs {
                let (rc, rr) = (out.values[at(c)] as f64, out.values[at(r)] as f64);
                let (loss, d_chosen) = bradley_terry(rc, rr);
                let centre = self.center * (rc + rr);
                grads.loss += (loss + centre * (rc + rr)) / n as f64;
                grads.dvalues[at(c)] += ((d_chosen + 2.0 * centre) / n as f64) as f32;
                grads.dvalues[at(r)] += ((-d_chosen + 2.0 * centre) / n as f64) as f32;
                stats.add(rc - rr);
            }
        }
        Ok(grads)
    }

    fn metrics(&mut self) -> Metrics {
        let (train, val) = (self.train.take(), self.val.take());
        Metrics {
            pair_accuracy: train.map(|m| m.0),
            reward_margin: train.map(|m| m.1),
            val_pair_accuracy: val.map(|m| m.0),
            val_reward_margin: val.map(|m| m.1),
            ..Metrics::default()
        }
    }
}
