//! What a stage measures as it trains, each measure named once: the field here is its
//! name in JSON (camelCase), in the CLI's lines and for the page's charts; a measure a
//! stage does not report is absent.

use serde::{Deserialize, Serialize};

macro_rules! metrics {
    ($($(#[$doc:meta])* $field:ident,)*) => {
        /// A stage's measures since its last report.
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", default)]
        pub struct Metrics {
            $($(#[$doc])* #[serde(skip_serializing_if = "Option::is_none")] pub $field: Option<f64>,)*
        }
    };
}

metrics! {
    /// Share of the training pairs the model orders as the person did, a tie counting
    /// half (reward model, DPO); pairs of two identical answers are not counted.
    pair_accuracy,
    /// Mean margin on those pairs: r_chosen − r_rejected (DPO: its implicit reward's).
    reward_margin,
    /// DPO: mean log-probability of the chosen and of the rejected answers.
    logp_chosen,
    logp_rejected,
    /// The same on the held-out rankings, at each validation.
    val_pair_accuracy,
    val_reward_margin,
    /// PPO, per answer of the last rollouts: the reward model's score (RLOO, GRPO: the rule's), the KL to the
    /// fine-tuned model (nats), and the share that ended by themselves.
    mean_reward,
    kl,
    ended_share,
    /// RLOO and GRPO: the share of prompts whose answers all scored alike (they teach
    /// nothing; near 1, the run has stalled: TRL's frac_reward_zero_std).
    zero_std_share,
    /// PPO, per answer token of the last updates: the share clipped, −mean log π (an
    /// estimate of the policy's entropy), and the value and policy losses.
    clip_fraction,
    entropy,
    value_loss,
    policy_loss,
}

impl Metrics {
    /// (name, value) of each measure reported, by name.
    pub fn entries(&self) -> Vec<(String, f64)> {
        match serde_json::to_value(self).expect("JSON") {
            serde_json::Value::Object(m) => m.into_iter().filter_map(|(k, v)| v.as_f64().map(|x| (k, x))).collect(),
            _ => Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Metrics::default()
    }
}
