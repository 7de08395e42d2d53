//! Online DPO: the model learns while the person ranks. Rankings arrive one at a time;
//! every `every` of them, a few DPO steps on all the rankings so far, from the model as it
//! is, the reference the fine-tuned model throughout (its log-probabilities from a frozen
//! copy, not from the model being trained), so the next prompt's answers come from the
//! updated model and each ranking is spent on answers the model gives now. Every fifth
//! usable ranking (the first included) is held back and never trained on: the DPO
//! implicit reward's agreement with it is what the chart shows after each update.

use super::dpo::Dpo;
use super::preference::{Group, PreferenceRows};
use super::step::Heads;
use super::{Metrics, TrainConfig, Trainer};
use crate::backend::Backend;
use crate::data::format::ChatFormat;
use crate::data::preference::Ranking;
use crate::data::BatcherState;
use crate::error::Result;
use crate::sample::Candidate;

/// One in this many usable rankings is held back.
pub const HOLD_BACK_ONE_IN: usize = 5;
/// An update every this many rankings, of this many DPO steps (on the tiny preset,
/// tests/chat_learning.rs: 8 steps an update cost 13 points of task accuracy, 4 kept it
/// within 4 over three seeds).
pub const DEFAULT_EVERY: usize = 4;
pub const DEFAULT_STEPS: u64 = 4;
/// The KL after an update is measured on this many held-back prompts, this many answers each.
const KL_PROMPTS: usize = 4;
const KL_ANSWERS: usize = 4;

/// What one update did: after how many rankings, its last loss, the agreement of its
/// implicit reward with the held-back rankings, the KL to the reference, and the rankings
/// it trained on.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Update {
    pub rankings: usize,
    pub trained_on: usize,
    pub held_back: usize,
    pub loss: Option<f32>,
    pub val_pair_accuracy: Option<f64>,
    /// The KL of the updated model to the reference, nats per answer: Σ (log π − log π_ref)
    /// over answers it samples to the newest held-back prompts.
    #[serde(default)]
    pub kl: Option<f64>,
}

/// The rankings so far and when the next update is due.
#[derive(Clone, Debug, Default)]
pub struct OnlineDpo {
    pub rankings: Vec<Ranking>,
    /// An update every this many rankings.
    pub every: usize,
    /// DPO steps per update.
    pub steps: u64,
    /// Updates so far.
    pub updates: Vec<Update>,
    /// What the last update's model trained held as that update began (its weights, or its
    /// adapters under LoRA): the state an undo puts back, until taken.
    before: Option<Vec<f32>>,
}

impl OnlineDpo {
    pub fn new(every: usize, steps: u64) -> OnlineDpo {
        OnlineDpo { rankings: Vec::new(), every: every.max(1), steps: steps.max(1), updates: Vec::new(), before: None }
    }

    /// What the model trained held before the last update (its weights, or its adapters
    /// under LoRA), for [`super::Trainer::put_trained`] to put back; once.
    pub fn take_before(&mut self) -> Option<Vec<f32>> {
        self.before.take()
    }

    /// Adds a ranking; true when an update is due.
    pub fn add(&mut self, ranking: Ranking) -> bool {
        self.rankings.push(ranking);
        self.rankings.len() % self.every == 0
    }

    /// (train, held back): the rankings with a pair of different answers, every fifth held
    /// back; those without a pair are left out.
    fn split(
        &self,
        format: &ChatFormat,
        tokenizer: &crate::tokenizer::Tokenizer,
        t: usize,
    ) -> Result<(Vec<Ranking>, Vec<Ranking>)> {
        let (mut train, mut val) = (Vec::new(), Vec::new());
        let mut usable = 0;
        for r in &self.rankings {
            if Group::of_in(format, tokenizer, r, t)?.is_none() {
                continue;
            }
            if usable % HOLD_BACK_ONE_IN == 0 {
                val.push(r.clone())
            } else {
                train.push(r.clone())
            }
            usable += 1;
        }
        Ok((train, val))
    }

    /// One update of `policy` on the rankings so far: DPO with `cfg`'s options for
    /// `self.steps` steps (a fresh optimizer, no warm-up), the reference log-probabilities
    /// from `reference` (the fine-tuned model). None when no ranking is usable yet.
    pub async fn update<B: Backend, C: Backend>(
        &mut self,
        policy: &mut Trainer<B>,
        reference: &mut Trainer<C>,
        cfg: &TrainConfig,
    ) -> Result<Option<Update>> {
        let t = policy.model.config.block_size;
        let (format, tokenizer) = (policy.chat_format(), policy.tokenizer.clone());
        let (train, val) = self.split(&format, &tokenizer, t)?;
        if train.is_empty() || val.is_empty() {
            return Ok(None);
        }
        let (trained_on, held_back) = (train.len(), val.len());
        let kl_prompts: Vec<_> = val.iter().rev().take(KL_PROMPTS).map(|r| r.prompt.clone()).collect();
        // each update draws its own order
        let position = BatcherState { seed: cfg.seed ^ self.updates.len() as u64, epoch: 0, position: 0 };
        let rows = PreferenceRows::new_in(&format, &tokenizer, train, val, t, position)?;
        rows.check_batch(cfg.batch_size)?;
        let mut dpo = Dpo::new(rows, cfg.align.dpo_beta, cfg.align.rpo_alpha);
        let b = cfg.batch_size;
        let mut outputs = Vec::new();
        for batch in super::Stage::reference_batches(&dpo, b) {
            outputs.push(reference.outputs(&batch, Heads::LM).await?);
        }
        super::Stage::set_reference(&mut dpo, b, outputs)?;
        let steps = self.steps;
        let run =
            TrainConfig { steps, warmup_steps: 0, eval_every: steps, log_every: steps, sample_every: 0, ..cfg.clone() };
        policy.begin(Box::new(dpo), run)?;
        // after `begin`: under LoRA the adapters exist (fresh ones at the first update)
        self.before = Some(policy.trained_values().await?);
        let (mut loss, mut metrics) = (None, Metrics::default());
        while !policy.done() {
            let p = policy.train_one().await?;
            loss = p.loss.or(loss);
            if p.metrics.val_pair_accuracy.is_some() {
                metrics = p.metrics;
            }
        }
        // how far the model has moved: answers to the newest held-back prompts, sampled
        let mut kl = 0.0;
        for (i, prompt) in kl_prompts.iter().enumerate() {
            let sample = cfg.align.sample_config(cfg.seed ^ ((self.rankings.len() * KL_PROMPTS + i) as u64));
            let answers = policy.sample_answers(prompt, KL_ANSWERS, &sample).await?;
            let ids = format.chat_prompt(&tokenizer, prompt, t)?;
            kl += sampled_kl(reference, &ids, &answers).await? / kl_prompts.len() as f64;
        }
        let update = Update {
            rankings: self.rankings.len(),
            trained_on,
            held_back,
            loss,
            val_pair_accuracy: metrics.val_pair_accuracy,
            kl: Some(kl),
        };
        self.updates.push(update.clone());
        Ok(Some(update))
    }
}

/// How sure the model is of the order of `answers` it sampled to one prompt: the spread
/// (largest minus smallest) of their mean log-probability per token. Answers it finds
/// about equally likely are the ones it cannot tell apart, so a ranking of them teaches it
/// the most; the prompts with the smallest spread are asked first.
pub fn order_spread(answers: &[Candidate]) -> f64 {
    let means =
        answers.iter().map(|c| c.logprobs.iter().map(|&l| l as f64).sum::<f64>() / c.logprobs.len().max(1) as f64);
    let (lo, hi) = means.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), m| (lo.min(m), hi.max(m)));
    if lo.is_finite() {
        hi - lo
    } else {
        0.0
    }
}

/// The mean KL estimate Σ_t (log π − log π_ref) of sampled answers to `prompt` (ids ending
/// where the answer starts), π their own log-probabilities as sampled.
pub async fn sampled_kl<C: Backend>(reference: &mut Trainer<C>, prompt: &[u32], answers: &[Candidate]) -> Result<f64> {
    let ids: Vec<Vec<u32>> = answers.iter().map(|c| c.ids.clone()).collect();
    let ref_logps = reference.answer_logps(prompt, &ids).await?;
    let kl: f64 =
        answers.iter().zip(ref_logps).map(|(c, r)| c.logprobs.iter().map(|&l| l as f64).sum::<f64>() - r).sum();
    Ok(kl / answers.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(logprobs: &[f32]) -> Candidate {
        Candidate { ids: vec![0; logprobs.len()], logprobs: logprobs.to_vec(), ended: true }
    }

    #[test]
    fn the_spread_is_of_the_mean_log_probability_per_token() {
        // means −1, −0.5 and −2: the spread is 1.5
        let answers = [answer(&[-1.0, -1.0]), answer(&[-0.5]), answer(&[-3.0, -1.0, -2.0])];
        assert_eq!(order_spread(&answers), 1.5);
        // answers alike in likelihood: nothing tells them apart
        assert_eq!(order_spread(&[answer(&[-1.0]), answer(&[-0.5, -1.5])]), 0.0);
        assert_eq!(order_spread(&[]), 0.0);
    }
}
