//! PPO against the reward model (the InstructGPT recipe, with TRL's defaults). The
//! policy is the fine-tuned model with a value head; a frozen copy of the fine-tuned model
//! is the reference, and the frozen reward model scores answers. One round:
//!   rollouts   P prompts × K answers sampled together on the device (KV cache), then one
//!              forward each of the reference, the reward model and the policy over them
//!   rewards    per answer token t: r_t = −β·(log π_old(t) − log π_ref(t)), plus at the
//!              last token the reward model's score (and a penalty if the answer never ended)
//!   GAE        δ_t = r_t + γ·V_{t+1} − V_t,  A_t = δ_t + γλ·A_{t+1},  returns R_t = A_t + V_t;
//!              advantages whitened over the batch
//!   updates    `ppo_epochs` optimizer steps on the batch, each minimising, per answer token,
//!              max(−A·ρ, −A·clip(ρ, 1 ± ε)) with ρ = π/π_old, plus vf_coef · ½·max((V − R)²,
//!              (V_old + clip(V − V_old, ± ε_v) − R)²)
//! The policy term reaches the model through the weighted cross-entropy backward: a token's
//! weight is −d loss/d log π = A·ρ/N where the unclipped term is the larger, else 0.

use super::stage::{stage_over_rollouts, BuildInput, Built, Frozen, Input, Phase, RolloutRequest, Stage, StageDef};
use super::step::{Gradients, Heads, Outputs, TokenBatch};
use super::{AlignConfig, Metrics, StageKind, TrainConfig};
use crate::data::chat::{Conversation, Role};
use crate::data::format::ChatFormat;
use crate::data::instruct::{instruction_set, Split};
use crate::data::jsonl::to_jsonl;
use crate::data::Files;
use crate::data::{make_batch, Batcher, BatcherState, Row};
use crate::error::{KilnError, Result};
use crate::model::ScalarHeadKind;
use crate::sample::Candidate;
use crate::tokenizer::Tokenizer;
use crate::train::preference::{answer_row, answer_span};

pub const DEF: StageDef = StageDef {
    name: "ppo",
    input: Input::Prompts,
    // PPO's gradient is noisy and AdamW turns noise into full-size steps: on the tiny
    // preset (tests/chat_learning.rs) 3e-4 and 5e-5 cost 44 and 11 points of task
    // accuracy, 2e-5 three. A batch holds four prompts of four answers.
    defaults: || TrainConfig { steps: 200, lr: 2e-5, min_lr: 2e-5, batch_size: 16, ..TrainConfig::preference() },
    options: &[
        "klCoef",
        "clipRange",
        "valueClip",
        "gamma",
        "lam",
        "vfCoef",
        "ppoEpochs",
        "rolloutPrompts",
        "answersPerPrompt",
        "missingEndPenalty",
        "temperature",
        "topK",
        "topP",
        "answerTokens",
    ],
    head: Some(ScalarHeadKind::Value),
    frozen: &[Frozen::Reference, Frozen::Reward],
    from_reference: true,
    build,
    restore: |r| Ok(Box::new(Ppo::restore(r.files, r.t, r.cfg.align.clone(), r.position)?.in_format(r.format))),
};

/// The most prompts PPO reads from built-in questions or conversations.
const MAX_PROMPTS: usize = 1000;

/// PPO's prompts: the rankings', else conversations' up to their last user turn, else
/// the built-in training questions in `i.lang`.
fn build(i: BuildInput<'_>) -> Result<Built> {
    let prompts = match (i.rankings, i.conversations) {
        (Some(rankings), _) => rankings.into_iter().map(|r| r.prompt).collect(),
        (None, Some(convs)) => convs
            .into_iter()
            .filter_map(|c| c.iter().rposition(|m| m.role == Role::User).map(|u| c[..=u].to_vec()))
            .take(MAX_PROMPTS)
            .collect(),
        (None, None) => {
            instruction_set(i.lang, Split::Train, MAX_PROMPTS).into_iter().map(|c| c[..1].to_vec()).collect()
        }
    };
    Ok(Built::new(Ppo::new(prompts, i.t, i.cfg.align.clone(), i.cfg.seed)?.in_format(i.format)))
}

/// One batch of rollouts and what the updates need of it, per row.
struct Rollouts {
    batch: TokenBatch,
    rows: Vec<Row>,
    /// Per row, per answer token: log π_old, V_old, advantage, return.
    old_logp: Vec<Vec<f64>>,
    old_values: Vec<Vec<f64>>,
    advantages: Vec<Vec<f64>>,
    returns: Vec<Vec<f64>>,
}

/// Running sums for the report.
#[derive(Default)]
struct PpoStats {
    answers: usize,
    score: f64,
    kl: f64,
    ended: usize,
    tokens: usize,
    clipped: usize,
    neg_logp: f64,
    value_loss: f64,
    policy_loss: f64,
}

pub struct Ppo {
    prompts: Vec<Conversation>,
    order: Batcher,
    pub align: AlignConfig,
    t: usize,
    rollouts: Option<Rollouts>,
    /// Optimizer steps left on the current rollouts.
    epochs_left: u64,
    stats: PpoStats,
    /// (question, answer ids, score) of the latest rollouts, for the log, until shown.
    pub latest: Vec<(String, Vec<u32>, f64)>,
    pending: Vec<usize>,
    /// The model's template and tokens: prompts, padding, and the stops shown answers lose.
    format: ChatFormat,
}

/// Advantages and returns of one answer by GAE: rewards r_t and values V_t per token.
pub fn gae(rewards: &[f64], values: &[f64], gamma: f64, lam: f64) -> (Vec<f64>, Vec<f64>) {
    let n = rewards.len();
    let mut advantages = vec![0.0; n];
    let mut next = (0.0, 0.0); // (A_{t+1}, V_{t+1}); nothing follows the last token
    for t in (0..n).rev() {
        let delta = rewards[t] + gamma * next.1 - values[t];
        advantages[t] = delta + gamma * lam * next.0;
        next = (advantages[t], values[t]);
    }
    let returns = advantages.iter().zip(values).map(|(a, v)| a + v).collect();
    (advantages, returns)
}

/// The clipped PPO objective of one token and its derivative with respect to log π:
/// (loss, d loss/d log π, clipped).
pub fn clipped_objective(logp: f64, old_logp: f64, advantage: f64, clip: f64) -> (f64, f64, bool) {
    let ratio = (logp - old_logp).exp();
    let unclipped = -advantage * ratio;
    let clipped = -advantage * ratio.clamp(1.0 - clip, 1.0 + clip);
    if clipped > unclipped {
        (clipped, 0.0, true)
    } else {
        (unclipped, -advantage * ratio, false)
    }
}

/// The clipped value loss ½·max((V − R)², (V_old + clip(V − V_old) − R)²) and d/dV.
pub fn clipped_value_loss(value: f64, old_value: f64, ret: f64, clip: f64) -> (f64, f64) {
    let clipped = old_value + (value - old_value).clamp(-clip, clip);
    let (a, b) = ((value - ret).powi(2), (clipped - ret).powi(2));
    if a >= b {
        (0.5 * a, value - ret)
    } else {
        let inside = (value - old_value).abs() < clip;
        (0.5 * b, if inside { clipped - ret } else { 0.0 })
    }
}

fn whiten(values: &mut [Vec<f64>]) {
    let all: Vec<f64> = values.iter().flatten().copied().collect();
    let n = all.len().max(1) as f64;
    let mean = all.iter().sum::<f64>() / n;
    let std = (all.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    values.iter_mut().flatten().for_each(|x| *x = (*x - mean) / (std + 1e-8));
}

impl Ppo {
    /// PPO on `prompts` (conversations ending with the user's turn).
    pub fn new(prompts: Vec<Conversation>, t: usize, align: AlignConfig, seed: u64) -> Result<Ppo> {
        if prompts.is_empty() || prompts.iter().any(|p| p.last().map(|m| m.role) != Some(Role::User)) {
            return Err(KilnError::Data("PPO needs prompts that end with the user's turn".into()));
        }
        if !(2..=6).contains(&align.answers_per_prompt) || align.rollout_prompts == 0 || align.ppo_epochs == 0 {
            return Err(KilnError::Config(
                "PPO needs 2 to 6 answers per prompt, and at least one prompt and one epoch per round".into(),
            ));
        }
        let order = Batcher::new(prompts.len(), seed);
        Ok(Ppo {
            prompts,
            order,
            align,
            t,
            rollouts: None,
            epochs_left: 0,
            stats: PpoStats::default(),
            latest: Vec::new(),
            pending: Vec::new(),
            format: ChatFormat::kiln(),
        })
    }

    /// The same stage for a model of its own `format` (an imported model's template).
    pub fn in_format(self, format: &ChatFormat) -> Ppo {
        Ppo { format: format.clone(), ..self }
    }

    /// PPO from a checkpoint: its prompts (ppo-prompts.jsonl) in the saved order. The next
    /// step samples a new round; saved between rounds (`at_save_point`), the run goes on
    /// bit for bit (rollouts are seeded by the step); saved mid-round, that round's
    /// remaining updates are skipped. The trainer still needs the reference and reward
    /// models (`Trainer::set_frozen`).
    pub fn restore(files: &Files, t: usize, align: AlignConfig, position: BatcherState) -> Result<Ppo> {
        let bytes = files
            .get("ppo-prompts.jsonl")
            .ok_or_else(|| KilnError::Checkpoint("ppo-prompts.jsonl is missing".into()))?;
        // written by data_files: {"messages": [...]} a line, each ending with the user's turn
        #[derive(serde::Deserialize)]
        struct Line {
            messages: Conversation,
        }
        let bad = |e: String| KilnError::Checkpoint(format!("ppo-prompts.jsonl: {e}"));
        let text = std::str::from_utf8(bytes).map_err(|e| bad(e.to_string()))?;
        let prompts = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<Line>(l).map(|l| l.messages))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        let mut ppo = Ppo::new(prompts, t, align, position.seed)?;
        ppo.order = Batcher::resume(ppo.prompts.len(), position);
        Ok(ppo)
    }
}

impl Stage for Ppo {
    fn kind(&self) -> StageKind {
        StageKind::Ppo
    }

    stage_over_rollouts!(epochs_left);

    fn data_files(&self) -> Files {
        Files::from([("ppo-prompts.jsonl".to_string(), to_jsonl(&self.prompts).into_bytes())])
    }

    fn sample_prompt(&self, tokenizer: &Tokenizer) -> Result<(Vec<u32>, String)> {
        let p = &self.prompts[0];
        Ok((
            self.format.chat_prompt(tokenizer, p, self.t)?,
            format!("{} → ", p.last().map_or("", |m| m.content.as_str())),
        ))
    }

    fn heads(&self) -> Option<Heads> {
        Some(Heads::POLICY_AND_VALUE)
    }

    /// The prompts of the next round, when the current one is used up (their ids end
    /// with `<|assistant|>`), each prompt i sampled with `seed ^ (i << 8)`.
    fn rollout_request(&mut self, tokenizer: &Tokenizer, b: usize, seed: u64) -> Result<Option<RolloutRequest>> {
        if self.epochs_left > 0 {
            return Ok(None);
        }
        let (a, format, prompts, t) = (&self.align, &self.format, &self.prompts, self.t);
        RolloutRequest::draw(
            (&mut self.order, &mut self.pending),
            a,
            a.answers_per_prompt,
            (b, seed),
            |p| format.chat_prompt(tokenizer, &prompts[p], t),
        )
        .map(Some)
    }

    /// The rollouts as a batch of B rows: prompt + answer (+ its stop token) + padding.
    fn rollout_batch(
        &mut self,
        _tokenizer: &Tokenizer,
        prompts: &[Vec<u32>],
        answers: &[Vec<Candidate>],
        b: usize,
    ) -> Result<TokenBatch> {
        let mut rows = Vec::new();
        for (prompt, cands) in prompts.iter().zip(answers) {
            rows.extend(cands.iter().map(|cand| answer_row(prompt, &cand.ids, self.t, self.format.roles.pad)));
        }
        let refs: Vec<&Row> = rows.iter().collect();
        let batch = make_batch(&refs, b, self.t);
        self.rollouts = Some(Rollouts {
            batch: batch.clone(),
            rows,
            old_logp: Vec::new(),
            old_values: Vec::new(),
            advantages: Vec::new(),
            returns: Vec::new(),
        });
        Ok(batch)
    }

    /// Scores the rollouts from the three forward passes over the rollout batch: the
    /// frozen reference's nll and the reward model's value (in that order), the policy's
    /// nll and value; `ended` says which answers stopped by themselves.
    fn score_rollouts(&mut self, frozen: &[Outputs], policy: &Outputs, ended: &[bool]) -> Result<()> {
        let [reference, reward] = frozen else {
            return Err(KilnError::Config("PPO needs the reference and reward models (Trainer::set_frozen)".into()));
        };
        let a = self.align.clone();
        let r = self.rollouts.as_mut().expect("rollout_batch comes first");
        let t = r.batch.t;
        self.latest.clear();
        for (k, row) in r.rows.iter().enumerate() {
            let (first, last, end_input) = answer_span(row);
            let positions = first..=last;
            let logp: Vec<f64> = positions.clone().map(|p| -policy.nll[k * t + p] as f64).collect();
            let ref_logp: Vec<f64> = positions.clone().map(|p| -reference.nll[k * t + p] as f64).collect();
            let values: Vec<f64> = positions.map(|p| policy.values[k * t + p] as f64).collect();
            let mut score = reward.values[k * t + end_input] as f64;
            if !ended[k] {
                score += a.missing_end_penalty;
            }
            let mut rewards: Vec<f64> = logp.iter().zip(&ref_logp).map(|(l, r)| -a.kl_coef * (l - r)).collect();
            *rewards.last_mut().expect("an answer token") += score;
            let (adv, ret) = gae(&rewards, &values, a.gamma, a.lam);
            self.stats.answers += 1;
            self.stats.score += score;
            self.stats.kl += logp.iter().zip(&ref_logp).map(|(l, r)| l - r).sum::<f64>();
            self.stats.ended += ended[k] as usize;
            if self.latest.len() < 4 {
                let prompt = &self.prompts[self.pending[k / a.answers_per_prompt]];
                let answer = row.ids[first + 1..=last + 1].to_vec();
                self.latest.push((prompt.last().map_or(String::new(), |m| m.content.clone()), answer, score));
            }
            r.old_logp.push(logp);
            r.old_values.push(values);
            r.advantages.push(adv);
            r.returns.push(ret);
        }
        whiten(&mut r.advantages);
        self.epochs_left = a.ppo_epochs;
        Ok(())
    }

    /// A few answers of the round just sampled, once: "question → answer (score)" lines.
    fn take_shown(&mut self, tokenizer: &Tokenizer) -> Result<Option<String>> {
        if self.latest.is_empty() {
            return Ok(None);
        }
        let mut lines = Vec::new();
        for (q, ids, score) in std::mem::take(&mut self.latest) {
            let question = q.lines().last().unwrap_or("");
            let answer: Vec<u32> = ids.iter().copied().filter(|&id| !self.format.is_stop(id)).collect();
            lines.push(format!("{question} → {} ({score:+.2})", tokenizer.decode(&answer)?));
        }
        Ok(Some(lines.join("\n")))
    }

    fn weigh(&mut self, batch: &TokenBatch, out: &Outputs, phase: Phase) -> Result<Gradients> {
        let r = self.rollouts.as_ref().expect("rollouts come first");
        let t = batch.t;
        let n: usize = r.old_logp.iter().map(Vec::len).sum();
        let mut grads = Gradients { weights: vec![0.0; batch.b * t], dvalues: vec![0.0; batch.b * t], loss: 0.0 };
        for (k, row) in r.rows.iter().enumerate() {
            let (first, _, _) = answer_span(row);
            for (i, &old) in r.old_logp[k].iter().enumerate() {
                let p = k * t + first + i;
                let logp = -out.nll[p] as f64;
                let (pg, d_logp, clipped) = clipped_objective(logp, old, r.advantages[k][i], self.align.clip_range);
                let (vf, d_value) = clipped_value_loss(
                    out.values[p] as f64,
                    r.old_values[k][i],
                    r.returns[k][i],
                    self.align.value_clip,
                );
                grads.loss += (pg + self.align.vf_coef * vf) / n as f64;
                grads.weights[p] = (-d_logp / n as f64) as f32;
                grads.dvalues[p] = (self.align.vf_coef * d_value / n as f64) as f32;
                if phase == Phase::Train {
                    self.stats.tokens += 1;
                    self.stats.clipped += clipped as usize;
                    self.stats.neg_logp -= logp;
                    self.stats.value_loss += vf;
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
            clip_fraction: per_token(s.clipped as f64),
            // −mean log π of the sampled tokens: an estimate of the policy's entropy
            entropy: per_token(s.neg_logp),
            value_loss: per_token(s.value_loss),
            policy_loss: per_token(s.policy_loss),
            ..Metrics::default()
        }
    }
}
