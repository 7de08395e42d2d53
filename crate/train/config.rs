//! How each stage trains: the options every stage shares ([`TrainConfig`]) and those of
//! the stages that learn from rankings ([`AlignConfig`]), each field with its default
//! (per stage, in its file's `DEF`) and its doc written once. The CLI's flags, the
//! JS API's options and `defaults()` all derive from these structs.

use serde::{Deserialize, Serialize};

use super::optimizer::Schedule;
use super::StageKind;
use crate::error::{KilnError, Result};
use crate::model::lora::{LoraConfig, LoraTargets};
use crate::sample::SampleConfig;

/// The largest learning rate a run accepts.
pub const MAX_LR: f64 = 1.0;

/// How a stage trains. Each stage has its own defaults ([`TrainConfig::for_stage`]); the
/// CLI, the wasm session and the page all start from them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TrainConfig {
    pub steps: u64,
    /// Rows per micro-batch (B).
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub grad_clip: f32,
    /// Validate every N steps (and at the end).
    pub eval_every: u64,
    /// At most this many validation batches.
    pub eval_batches: usize,
    /// Generate a sample every N steps (0: never).
    pub sample_every: u64,
    pub sample_tokens: usize,
    /// Read the training loss back every N steps (and at the first and last).
    pub log_every: u64,
    pub seed: u64,
    /// Share of the documents (or conversations, or ranked prompts) held out for validation.
    pub val_fraction: f64,
    /// LoRA's rank: 0 trains every weight; above 0 freezes them and trains low-rank
    /// adapters instead (PEFT's LoRA), which needs a fraction of the memory. A reward
    /// model's or PPO's head trains in full beside them.
    pub lora_rank: usize,
    /// LoRA's α: the adapters' product is scaled by α / rank (PEFT's lora_alpha).
    pub lora_alpha: f64,
    /// Which linear layers get adapters: "attention" (PEFT's default for the family:
    /// q_proj and v_proj, or GPT-2's c_attn), "all-linear", or module names separated by
    /// commas ("q_proj,k_proj,v_proj,o_proj").
    pub lora_targets: String,
    /// The preference stages' own options.
    #[serde(flatten)]
    pub align: AlignConfig,
}

/// The options of the stages that learn from rankings: TRL's defaults where TRL has one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AlignConfig {
    /// DPO's β: how strongly the policy is held to the reference (TRL: 0.1).
    pub dpo_beta: f64,
    /// Weight of the NLL of chosen answers added to DPO's loss (TRL's rpo_alpha; 0: plain
    /// DPO). On by default: it guards against likelihood displacement (module dpo).
    pub rpo_alpha: f64,
    /// The reward model's centring coefficient λ (TRL's center_rewards_coefficient; 0: off).
    pub reward_center: f64,
    /// PPO's KL penalty β per token (TRL: 0.05); RLOO's on each answer's reward (TRL:
    /// 0.05), GRPO's on its per-token KL estimate (TRL: 0).
    pub kl_coef: f64,
    /// PPO's (and GRPO's, RLOO's) clip range ε for the probability ratio (TRL: 0.2), and
    /// PPO's for the value.
    pub clip_range: f64,
    pub value_clip: f64,
    /// Discount γ (TRL: 1) and GAE's λ (TRL: 0.95).
    pub gamma: f64,
    pub lam: f64,
    /// Weight of the value loss (TRL: 0.1).
    pub vf_coef: f64,
    /// Optimizer steps on each batch of rollouts (TRL: 4).
    pub ppo_epochs: u64,
    /// Prompts per batch of rollouts, and answers sampled per prompt (2 to 6).
    pub rollout_prompts: usize,
    pub answers_per_prompt: usize,
    /// Added to the score of an answer that never ends (TRL's missing_eos_penalty).
    pub missing_end_penalty: f64,
    /// Sampling of rollouts and candidates: temperature, top-k (0: all), top-p (1: all),
    /// and the longest answer in tokens.
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub answer_tokens: usize,
    /// RLOO's and GRPO's reward: a rule as JSON, a list of checks with weights
    /// (`data::rule`: contains, notContains, endsWith, matches, maxWords,
    /// equalsReference, rewardModel).
    pub rule: String,
    /// Answers sampled per prompt in RLOO and GRPO, the group each is compared with (TRL's
    /// num_generations).
    pub generations: usize,
    /// Optimizer steps on each round of RLOO's or GRPO's rollouts (TRL's num_iterations).
    pub iterations: u64,
    /// KTO's β (TRL: 0.1).
    pub kto_beta: f64,
    /// KTO's weights on thumbs up and on thumbs down (0: balance the counts, so that
    /// λ_D·n_D = λ_U·n_U with the rarer kind at 1).
    pub desirable_weight: f64,
    pub undesirable_weight: f64,
}

impl Default for AlignConfig {
    fn default() -> Self {
        AlignConfig {
            dpo_beta: 0.1,
            rpo_alpha: 1.0,
            reward_center: 0.01,
            kl_coef: 0.05,
            clip_range: 0.2,
            value_clip: 0.2,
            gamma: 1.0,
            lam: 0.95,
            vf_coef: 0.1,
            ppo_epochs: 4,
            rollout_prompts: 4,
            answers_per_prompt: 4,
            missing_end_penalty: -1.0,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            answer_tokens: 16,
            rule: r#"[{"check":"equalsReference"}]"#.into(),
            generations: 4,
            iterations: 1,
            kto_beta: 0.1,
            desirable_weight: 0.0,
            undesirable_weight: 0.0,
        }
    }
}

impl AlignConfig {
    /// How rollouts and candidate answers are sampled, with `seed`.
    pub fn sample_config(&self, seed: u64) -> SampleConfig {
        SampleConfig {
            max_tokens: self.answer_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig::shared()
    }
}

impl TrainConfig {
    /// The defaults of `stage` (its [`crate::train::StageDef`]'s).
    pub fn for_stage(stage: StageKind) -> TrainConfig {
        stage.defaults()
    }

    /// The defaults the stages start from, pretraining's: nanoGPT-like for tiny models.
    pub fn shared() -> TrainConfig {
        TrainConfig {
            steps: 500,
            batch_size: 8,
            grad_accum: 1,
            lr: 3e-3,
            min_lr: 3e-4,
            warmup_steps: 20,
            beta1: 0.9,
            beta2: 0.99,
            weight_decay: 0.1,
            grad_clip: 1.0,
            eval_every: 50,
            eval_batches: 8,
            sample_every: 100,
            sample_tokens: 64,
            log_every: 10,
            seed: 1337,
            val_fraction: 0.1,
            lora_rank: 0,
            lora_alpha: 16.0,
            lora_targets: "attention".into(),
            align: AlignConfig::default(),
        }
    }

    /// The defaults the preference stages start from. They see a few hundred ranked
    /// prompts at most: whole prompts per batch (12 rows hold two of six answers), short
    /// runs, frequent reports.
    pub fn preference() -> TrainConfig {
        TrainConfig {
            batch_size: 12,
            warmup_steps: 5,
            eval_every: 10,
            eval_batches: 16,
            sample_every: 0,
            sample_tokens: 16,
            log_every: 1,
            ..TrainConfig::shared()
        }
    }

    /// The stage's defaults with `options` on top (camelCase fields, as the JS API and
    /// the CLI give them; null for none). A learning rate given without `minLr` decays to
    /// a tenth of itself. Unknown fields are refused by name.
    pub fn from_options(stage: StageKind, options: &serde_json::Value) -> Result<TrainConfig> {
        let mut merged = serde_json::to_value(TrainConfig::for_stage(stage)).expect("JSON");
        let mut given = match options {
            serde_json::Value::Null => serde_json::Map::new(),
            serde_json::Value::Object(o) => o.clone(),
            _ => return Err(KilnError::Config("training options must be an object".into())),
        };
        // null (undefined in JS) leaves an option at its default
        given.retain(|_, value| !value.is_null());
        for (key, value) in &given {
            let Some(default) = merged.get(key) else {
                return Err(KilnError::Config(format!("unknown training option {key:?}")));
            };
            check_kind(key, default, value)?;
            merged[key] = value.clone();
        }
        if let (Some(lr), false) = (given.get("lr").and_then(|x| x.as_f64()), given.contains_key("minLr")) {
            merged["minLr"] = (lr / 10.0).into();
        }
        let cfg: TrainConfig =
            serde_json::from_value(merged).map_err(|e| KilnError::Config(format!("training options: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(KilnError::Config(m.to_string()));
        for (name, value) in
            [("steps", self.steps), ("batchSize", self.batch_size as u64), ("gradAccum", self.grad_accum as u64)]
        {
            if value == 0 {
                return Err(KilnError::Config(format!("{name} must be at least 1, not 0")));
            }
        }
        if self.batch_size > 4096 || self.grad_accum > 4096 || self.steps > 100_000_000 {
            return bad("the batch size and gradient accumulation must be at most 4096, the steps at most 10⁸");
        }
        // AdamW's step moves each weight by about lr: past 1 a run only diverges
        if !(self.lr > 0.0 && self.lr <= MAX_LR) {
            return Err(KilnError::Config(format!("lr must be above 0 and at most {MAX_LR}, not {}", self.lr)));
        }
        if !(0.0..=self.lr).contains(&self.min_lr) {
            return Err(KilnError::Config(format!("minLr must be 0 to lr ({}), not {}", self.lr, self.min_lr)));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("AdamW's betas must lie in [0, 1)");
        }
        if !(0.0..0.5).contains(&self.val_fraction) {
            return bad("the validation fraction must lie in [0, 0.5)");
        }
        let k = self.align.answers_per_prompt;
        if !(2..=crate::data::preference::MAX_ANSWERS).contains(&k) {
            let most = crate::data::preference::MAX_ANSWERS;
            return Err(KilnError::Config(format!("answersPerPrompt must be 2 to {most}, not {k}")));
        }
        self.lora()?;
        crate::data::rule::Rule::parse(&self.align.rule)?;
        Ok(())
    }

    /// The adapters this run trains, None for full fine-tuning.
    pub fn lora(&self) -> Result<Option<LoraConfig>> {
        if self.lora_rank == 0 {
            return Ok(None);
        }
        let targets = match self.lora_targets.trim() {
            "attention" => LoraTargets::Attention,
            "all-linear" => LoraTargets::AllLinear,
            list => {
                let names: Vec<String> = list.split(',').map(|n| n.trim().to_string()).collect();
                let ok = |n: &String| {
                    !n.is_empty()
                        && n.len() <= 128
                        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                };
                if names.len() > 64 || !names.iter().all(ok) {
                    return Err(KilnError::Config(format!(
                        "loraTargets must be \"attention\", \"all-linear\" or module names separated by commas (\"q_proj,v_proj\"), not {:?}",
                        self.lora_targets
                    )));
                }
                LoraTargets::Modules(names)
            }
        };
        let cfg = LoraConfig { r: self.lora_rank, alpha: self.lora_alpha, targets };
        cfg.validate()?;
        Ok(Some(cfg))
    }

    pub fn schedule(&self) -> Schedule {
        Schedule { lr: self.lr, min_lr: self.min_lr, warmup_steps: self.warmup_steps, decay_steps: self.steps }
    }
}

/// Refuses an option whose value is not of its field's kind, naming the option and the
/// value as given (a negative or fractional count, text, null), before serde would say
/// "expected u64".
fn check_kind(key: &str, default: &serde_json::Value, value: &serde_json::Value) -> Result<()> {
    let shown = value.to_string();
    if default.is_u64() && !value.is_u64() {
        return Err(KilnError::Config(format!("{key} must be a whole number, not {shown}")));
    }
    if default.is_number() && !value.as_f64().is_some_and(f64::is_finite) {
        return Err(KilnError::Config(format!("{key} must be a number, not {shown}")));
    }
    Ok(())
}
