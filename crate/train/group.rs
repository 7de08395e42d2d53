//! Policy gradient with each prompt's group of answers as its own baseline: what RLOO and
//! GRPO share. No reward model and no value head: a rule ([`crate::data::rule`]) scores
//! the answers, and the other answers to the same prompt say what score was to be
//! expected. The reference (the fine-tuned model, frozen) gives the KL. One round:
//!   rollouts    P prompts × G answers sampled together (KV cache); each answer's score
//!               s_i from the rule (plus `missingEndPenalty` if it never ended), then one
//!               forward of the reference and of the policy over them
//!   advantage   per answer, from its group's scores (the stage's [`Baseline`]):
//!                 RLOO  r_i = s_i − β·KL_i,  A_i = r_i − mean_{j≠i} r_j
//!                 GRPO  A_i = (s_i − mean_j s_j) / (std_j s_j + 1e-4)
//!               with KL_i = Σ_t (log π_old(t) − log π_ref(t)) over the answer's tokens
//!   updates     `iterations` optimizer steps on the batch, each minimising the mean over
//!               all answer tokens of max(−A·ρ, −A·clip(ρ, 1 ± ε)) + β_tok·k3, ρ = π/π_old,
//!               k3 = e^(log π_ref − log π) − (log π_ref − log π) − 1 (GRPO's per-token KL,
//!               only when β > 0)
//! A group whose answers all scored alike has advantage 0 everywhere and teaches nothing:
//! the share of such groups is reported (`zeroStdShare`), so a stalled run shows.
//! Through the weighted cross-entropy backward a token's weight is −d loss/d log π.

use super::ppo::clipped_objective;
use super::stage::{stage_over_rollouts, BuildInput, Built, Phase, RestoreInput, RolloutRequest, Stage};
use super::step::{Gradients, Heads, Outputs, TokenBatch};
use super::{AlignConfig, Metrics, StageKind};
use crate::data::chat::{Conversation, Role};
use crate::data::format::ChatFormat;
use crate::data::instruct::{instruction_set, Split};
use crate::data::rule::Rule;
use crate::data::Files;
use crate::data::{make_batch, Batcher, BatcherState, Row};
use crate::error::{KilnError, Result};
use crate::sample::Candidate;
use crate::tokenizer::Tokenizer;
use crate::train::preference::{answer_row, answer_span};

/// The most prompts read from built-in questions or conversations.
const MAX_PROMPTS: usize = 1000;
/// Most answers to one prompt.
pub const MAX_GENERATIONS: usize = 16;
const PROMPTS_FILE: &str = "group-prompts.jsonl";

/// How a group's scores become each answer's advantage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// RLOO: the mean of the other answers' KL-penalised rewards.
    LeaveOneOut,
    /// GRPO: the group's mean, scaled by its standard deviation.
    GroupNormalised,
}

/// A prompt (ending with the user's turn) and the data's answer to it, when it has one.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Prompt {
    pub messages: Conversation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// The prompts a group stage learns from: the rankings' (no reference answer), else the
/// conversations' up to their last user turn (the assistant's next turn as the reference),
/// else the built-in training questions with their answers.
pub fn prompts_of(i: &mut BuildInput<'_>) -> Vec<Prompt> {
    match (i.rankings.take(), i.conversations.take()) {
        (Some(rankings), _) => rankings.into_iter().map(|r| Prompt { messages: r.prompt, reference: None }).collect(),
        (None, Some(convs)) => convs
            .into_iter()
            .filter_map(|c| {
                let u = c.iter().rposition(|m| m.role == Role::User)?;
                let reference = c.get(u + 1).filter(|m| m.role == Role::Assistant).map(|m| m.content.clone());
                Some(Prompt { messages: c[..=u].to_vec(), reference })
            })
            .take(MAX_PROMPTS)
            .collect(),
        (None, None) => instruction_set(i.lang, Split::Train, MAX_PROMPTS)
            .into_iter()
            .map(|c| Prompt { messages: c[..1].to_vec(), reference: c.get(1).map(|m| m.content.clone()) })
            .collect(),
    }
}

/// The options RLOO and GRPO take (their defaults differ, in each one's `DEF`).
pub const OPTIONS: &[&str] = &[
    "rule",
    "generations",
    "rolloutPrompts",
    "iterations",
    "klCoef",
    "clipRange",
    "missingEndPenalty",
    "temperature",
    "topK",
    "topP",
    "answerTokens",
];

/// Stage `kind` for a new run: its prompts read, its rule from the options.
pub fn build(mut i: BuildInput<'_>, kind: StageKind, baseline: Baseline) -> Result<Built> {
    let prompts = prompts_of(&mut i);
    let stage = GroupPolicy::new(kind, baseline, prompts, i.t, i.cfg.align.clone(), i.cfg.seed)?;
    Ok(Built::new(stage.in_format(i.format)))
}

/// Stage `kind` again from its checkpoint files.
pub fn restore(r: RestoreInput<'_>, kind: StageKind, baseline: Baseline) -> Result<Box<dyn Stage>> {
    let stage = GroupPolicy::restore(kind, baseline, r.files, r.t, r.cfg.align.clone(), r.position)?;
    Ok(Box::new(stage.in_format(r.format)))
}

/// One round of rollouts and what the updates need of it, per row.
struct Rollouts {
    batch: TokenBatch,
    rows: Vec<Row>,
    /// Per row: the rule's score (with the missing-end penalty).
    scores: Vec<f64>,
    /// Per row, per answer token: log π_old and log π_ref.
    old_logp: Vec<Vec<f64>>,
    ref_logp: Vec<Vec<f64>>,
    /// Per row: its advantage.
    advantages: Vec<f64>,
}

/// Running sums for the report.
#[derive(Default)]
struct Stats {
    answers: usize,
    score: f64,
    kl: f64,
    ended: usize,
    groups: usize,
    zero_std: usize,
    tokens: usize,
    clipped: usize,
    neg_logp: f64,
    policy_loss: f64,
}

pub struct GroupPolicy {
    kind: StageKind,
    baseline: Baseline,
    prompts: Vec<Prompt>,
    order: Batcher,
    pub align: AlignConfig,
    rule: Rule,
    t: usize,
    rollouts: Option<Rollouts>,
    /// Optimizer steps left on the current rollouts.
    iterations_left: u64,
    stats: Stats,
    /// (question, answer, score) of the latest rollouts, for the log, until shown.
    latest: Vec<(String, String, f64)>,
    pending: Vec<usize>,
    format: ChatFormat,
}

impl GroupPolicy {
    /// Stage `kind` on `prompts`, scored by the rule in `align.rule`.
    pub fn new(
        kind: StageKind,
        baseline: Baseline,
        prompts: Vec<Prompt>,
        t: usize,
        align: AlignConfig,
        seed: u64,
    ) -> Result<GroupPolicy> {
        let name = kind.name().to_uppercase();
        if prompts.is_empty() || prompts.iter().any(|p| p.messages.last().map(|m| m.role) != Some(Role::User)) {
            return Err(KilnError::Data(format!("{name} needs prompts that end with the user's turn")));
        }
        let g = align.generations;
        if !(2..=MAX_GENERATIONS).contains(&g) || align.rollout_prompts == 0 || align.iterations == 0 {
            return Err(KilnError::Config(format!(
                "{name} needs 2 to {MAX_GENERATIONS} generations per prompt (not {g}), and at least one prompt and one iteration per round"
            )));
        }
        let rule = Rule::parse(&align.rule)?;
        if rule.needs_reference() && prompts.iter().all(|p| p.reference.is_none()) {
            return Err(KilnError::Data(
                "the rule compares answers with the data's reference answers, but these prompts have none: give conversations with the assistant's answer (or a JSONL with a completion), or a rule without equalsReference".into(),
            ));
        }
        let order = Batcher::new(prompts.len(), seed);
        Ok(GroupPolicy {
            kind,
            baseline,
            prompts,
            order,
            align,
            rule,
            t,
            rollouts: None,
            iterations_left: 0,
            stats: Stats::default(),
            latest: Vec::new(),
            pending: Vec::new(),
            format: ChatFormat::kiln(),
        })
    }

    /// The same stage for a model of its own `format` (an imported model's template).
    pub fn in_format(self, format: &ChatFormat) -> GroupPolicy {
        GroupPolicy { format: format.clone(), ..self }
    }

    /// The stage from a checkpoint: its prompts in the saved order (the next step samples
    /// a new round, seeded by the step, so a run saved between rounds goes on bit for bit).
    pub fn restore(
        kind: StageKind,
        baseline: Baseline,
        files: &Files,
        t: usize,
        align: AlignConfig,
        position: BatcherState,
    ) -> Result<GroupPolicy> {
        let bad = |e: String| KilnError::Checkpoint(format!("{PROMPTS_FILE}: {e}"));
        let bytes = files.get(PROMPTS_FILE).ok_or_else(|| bad("missing".into()))?;
        let text = std::str::from_utf8(bytes).map_err(|e| bad(e.to_string()))?;
        let prompts = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str::<Prompt>)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        let mut stage = GroupPolicy::new(kind, baseline, prompts, t, align, position.seed)?;
        stage.order = Batcher::resume(stage.prompts.len(), position);
        Ok(stage)
    }

    /// Each row's advantage from the scores and KLs of its group (G rows a group).
    fn advantages(&self, scores: &[f64], kls: &[f64]) -> Vec<f64> {
        let g = self.align.generations;
        let mut out = Vec::with_capacity(scores.len());
        for (s, kl) in scores.chunks(g).zip(kls.chunks(g)) {
            match self.baseline {
                Baseline::LeaveOneOut => {
                    let r: Vec<f64> = s.iter().zip(kl).map(|(s, kl)| s - self.align.kl_coef * kl).collect();
                    let sum: f64 = r.iter().sum();
                    out.extend(r.iter().map(|ri| ri - (sum - ri) / (g - 1) as f64));
                }
                Baseline::GroupNormalised => out.extend(group_normalised(s)),
            }
        }
        out
    }
}

/// (s_i − mean) / (std + 1e-4), std with Bessel's correction (as torch's `std`).
pub fn group_normalised(scores: &[f64]) -> Vec<f64> {
    let n = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / n;
    let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    scores.iter().map(|s| (s - mean) / (std + 1e-4)).collect()
}

impl Stage for GroupPolicy {
    fn kind(&self) -> StageKind {
        self.kind
    }

    stage_over_rollouts!(iterations_left);

    fn data_files(&self) -> Files {
        let lines: String = self.prompts.iter().map(|p| serde_json::to_string(p).expect("JSON") + "\n").collect();
        Files::from([(PROMPTS_FILE.to_string(), lines.into_bytes())])
    }

    fn sample_prompt(&self, tokenizer: &Tokenizer) -> Result<(Vec<u32>, String)> {
        let p = &self.prompts[0].messages;
        Ok((
            self.format.chat_prompt(tokenizer, p, self.t)?,
            format!("{} → ", p.last().map_or("", |m| m.content.as_str())),
        ))
    }

    fn heads(&self) -> Option<Heads> {
        Some(Heads::LM)
    }

    /// The next round's prompts once the current one is used up, prompt i sampled with
    /// `seed ^ (i << 8)`.
    fn rollout_request(&mut self, tokenizer: &Tokenizer, b: usize, seed: u64) -> Result<Option<RolloutRequest>> {
        if self.iterations_left > 0 {
            return Ok(None);
        }
        let (a, format, prompts, t) = (&self.align, &self.format, &self.prompts, self.t);
        RolloutRequest::draw((&mut self.order, &mut self.pending), a, a.generations, (b, seed), |p| {
            format.chat_prompt(tokenizer, &prompts[p].messages, t)
        })
        .map(Some)
    }

    /// The rollouts as a batch of B rows, each answer scored by the rule as it is placed.
    fn rollout_batch(
        &mut self,
        tokenizer: &Tokenizer,
        prompts: &[Vec<u32>],
        answers: &[Vec<Candidate>],
        b: usize,
    ) -> Result<TokenBatch> {
        let (mut rows, mut scores) = (Vec::new(), Vec::new());
        self.latest.clear();
        for ((prompt, cands), &p) in prompts.iter().zip(answers).zip(&self.pending) {
            let reference = self.prompts[p].reference.as_deref();
            for cand in cands {
                rows.push(answer_row(prompt, &cand.ids, self.t, self.format.roles.pad));
                let text = tokenizer.decode(cand.content())?;
                let mut score = self.rule.score(&text, reference);
                if !cand.ended {
                    score += self.align.missing_end_penalty;
                }
                if self.latest.len() < 4 {
                    let question = self.prompts[p].messages.last().map_or(String::new(), |m| m.content.clone());
                    self.latest.push((question, text, score));
                }
                scores.push(score);
            }
        }
        let refs: Vec<&Row> = rows.iter().collect();
        let batch = make_batch(&refs, b, self.t);
        let (old_logp, ref_logp, advantages) = (Vec::new(), Vec::new(), Vec::new());
        self.rollouts = Some(Rollouts { batch: batch.clone(), rows, scores, old_logp, ref_logp, advantages });
        Ok(batch)
    }

    /// The reference's and the policy's log-probabilities of the rollouts (and the reward
    /// model's scores, when the session has one: a rule may ask it), then each answer's
    /// advantage.
    fn score_rollouts(&mut self, frozen: &[Outputs], policy: &Outputs, ended: &[bool]) -> Result<()> {
        let (reference, reward) = match frozen {
            [reference] => (reference, None),
            [reference, reward] => (reference, Some(reward)),
            _ => {
                return Err(KilnError::Config(format!("{} needs the reference model (Trainer::set_frozen)", self.kind)))
            }
        };
        let reward_weight = self.rule.reward_weight();
        if reward_weight != 0.0 && reward.is_none() {
            return Err(KilnError::Config("the rule asks the reward model, but there is none: train one first".into()));
        }
        let mut r = self.rollouts.take().expect("rollout_batch comes first");
        let t = r.batch.t;
        let mut kls = Vec::with_capacity(r.rows.len());
        for (k, row) in r.rows.iter().enumerate() {
            let (first, last, end_input) = answer_span(row);
            if let (Some(reward), true) = (reward, reward_weight != 0.0) {
                let part = reward_weight * reward.values[k * t + end_input] as f64;
                r.scores[k] += part;
                if let Some(shown) = self.latest.get_mut(k) {
                    shown.2 += part;
                }
            }
            let logp: Vec<f64> = (first..=last).map(|p| -policy.nll[k * t + p] as f64).collect();
            let ref_logp: Vec<f64> = (first..=last).map(|p| -reference.nll[k * t + p] as f64).collect();
            kls.push(logp.iter().zip(&ref_logp).map(|(l, r)| l - r).sum::<f64>());
            r.old_logp.push(logp);
            r.ref_logp.push(ref_logp);
        }
        r.advantages = self.advantages(&r.scores, &kls);
        let g = self.align.generations;
        self.stats.answers += r.rows.len();
        self.stats.score += r.scores.iter().sum::<f64>();
        self.stats.kl += kls.iter().sum::<f64>();
        self.stats.ended += ended.iter().filter(|&&e| e).count();
        self.stats.groups += r.scores.len() / g;
        self.stats.zero_std += r.scores.chunks(g).filter(|s| s.iter().all(|&x| x == s[0])).count();
        self.rollouts = Some(r);
        self.iterations_left = self.align.iterations;
        Ok(())
    }

    /// A few answers of the round just sampled, once: "question → answer (score)" lines.
    fn take_shown(&mut self, _tokenizer: &Tokenizer) -> Result<Option<String>> {
        if self.latest.is_empty() {
            return Ok(None);
        }
        let lines: Vec<String> = std::mem::take(&mut self.latest)
            .into_iter()
            .map(|(q, a, s)| format!("{} → {a} ({s:+.2})", q.lines().last().unwrap_or("")))
            .collect();
        Ok(Some(lines.join("\n")))
    }

    fn weigh(&mut self, batch: &TokenBatch, out: &Outputs, phase: Phase) -> Result<Gradients> {
        let r = self.rollouts.as_ref().expect("rollouts come first");
        let (t, clip, beta) = (batch.t, self.align.clip_range, self.token_kl_coef());
        let n = r.old_logp.iter().map(Vec::len).sum::<usize>().max(1) as f64;
        let mut grads = Gradients { weights: vec![0.0; batch.b * t], dvalues: Vec::new(), loss: 0.0 };
        for (k, row) in r.rows.iter().enumerate() {
            let (first, _, _) = answer_span(row);
            for (i, (&old, &reference)) in r.old_logp[k].iter().zip(&r.ref_logp[k]).enumerate() {
                let p = k * t + first + i;
                let logp = -out.nll[p] as f64;
                let (pg, d_pg, clipped) = clipped_objective(logp, old, r.advantages[k], clip);
                // k3 = e^x − x − 1 with x = log π_ref − log π: d k3/d log π = 1 − e^x
                let x = reference - logp;
                let (k3, d_k3) = (x.exp() - x - 1.0, 1.0 - x.exp());
                grads.loss += (pg + beta * k3) / n;
                grads.weights[p] = (-(d_pg + beta * d_k3) / n) as f32;
                if phase == Phase::Train {
                    self.stats.tokens += 1;
                    self.stats.clipped += clipped as usize;
                    self.stats.neg_logp -= logp;
                    self.stats.policy_loss += pg;
                }
            }
        }
        Ok(grads)
    }

    fn metrics(&mut self) -> Metrics {
        let s = std::mem::take(&mut self.stats);
        let per_answer = |x: f64| (s.answers > 0).then(|| x / s.answers as f64);
        let per_token = |x: f64| (s.tokens > 0).then(|| x / s.tokens as f64);
        Metrics {
            mean_reward: per_answer(s.score),
            kl: per_answer(s.kl),
            ended_share: per_answer(s.ended as f64),
            zero_std_share: (s.groups > 0).then(|| s.zero_std as f64 / s.groups as f64),
            clip_fraction: per_token(s.clipped as f64),
            entropy: per_token(s.neg_logp),
            policy_loss: per_token(s.policy_loss),
            ..Metrics::default()
        }
    }
}

impl GroupPolicy {
    /// β on GRPO's per-token KL; RLOO puts its β in the reward instead.
    fn token_kl_coef(&self) -> f64 {
        match self.baseline {
            Baseline::LeaveOneOut => 0.0,
            Baseline::GroupNormalised => self.align.kl_coef,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(baseline: Baseline, generations: usize, kl_coef: f64) -> GroupPolicy {
        let prompts = vec![Prompt {
            messages: vec![crate::data::chat::Message { role: Role::User, content: "q".into() }],
            reference: Some("a".into()),
        }];
        let align = AlignConfig { generations, kl_coef, ..AlignConfig::default() };
        GroupPolicy::new(StageKind::Rloo, baseline, prompts, 16, align, 1).unwrap()
    }

    #[test]
    fn rloo_subtracts_the_mean_of_the_others() {
        let s = stage(Baseline::LeaveOneOut, 3, 0.5);
        // r = s − 0.5·KL = (1, 0, 2) − (0, 0, 2) = (1, 0, 1)
        let a = s.advantages(&[1.0, 0.0, 2.0], &[0.0, 0.0, 2.0]);
        assert_eq!(a, vec![1.0 - 0.5, 0.0 - 1.0, 1.0 - 0.5]);
    }

    #[test]
    fn grpo_normalises_by_the_group() {
        let s = stage(Baseline::GroupNormalised, 4, 0.0);
        // mean 0.5, sample std sqrt(1/3)
        let a = s.advantages(&[1.0, 0.0, 1.0, 0.0, 2.0, 2.0, 2.0, 2.0], &[0.0; 8]);
        let z = 0.5 / ((1.0f64 / 3.0).sqrt() + 1e-4);
        for (got, want) in a.iter().zip([z, -z, z, -z, 0.0, 0.0, 0.0, 0.0]) {
            assert!((got - want).abs() < 1e-12, "{a:?}");
        }
    }
}
