//! Learning as the person ranks, in the session: each submitted ranking joins the online
//! DPO loop ([`crate::train::online`]); when an update is due it runs on the current model,
//! held near the fine-tuned one (the session's reference), so the next prompt's answers
//! come from the updated model; under LoRA (`cfg.lora_rank`) the updates train adapters.
//! What each update began from is kept, so the last updates can be undone exactly; the rankings and updates travel in the session's snapshot
//! (online.json), so a reload goes on with the loop.

use serde::{Deserialize, Serialize};

use super::Session;
use crate::backend::CpuBackend;
use crate::data::chat::Message;
use crate::data::preference::Ranking;
use crate::data::Files;
use crate::error::{KilnError, Result};
use crate::model::{ParamLayout, ScalarHeadKind};
use crate::sample::SampleConfig;
use crate::train::online::{order_spread, OnlineDpo, Update};
use crate::train::{StageKind, TrainConfig, Trainer};
use crate::with_run;

/// The snapshot file of the loop.
pub const ONLINE_FILE: &str = "online.json";
/// How many updates can be undone, one after another (each keeps a copy of the model).
pub const UNDO_DEPTH: usize = 4;

/// The loop as the session holds it.
#[derive(Default)]
pub struct Online {
    pub dpo: OnlineDpo,
    /// What the model trained held as each of the last updates began (its weights, or its
    /// adapters under LoRA: fresh ones at the first update), oldest first.
    undo: Vec<Vec<f32>>,
}

/// The loop as saved: the rankings, the schedule and the updates so far.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Saved {
    rankings: Vec<Ranking>,
    every: usize,
    steps: u64,
    updates: Vec<Update>,
}

impl Online {
    pub fn files(&self) -> Files {
        let d = &self.dpo;
        let saved = Saved { rankings: d.rankings.clone(), every: d.every, steps: d.steps, updates: d.updates.clone() };
        Files::from([(ONLINE_FILE.to_string(), serde_json::to_vec(&saved).expect("JSON"))])
    }

    pub fn restore(bytes: &[u8]) -> Result<Online> {
        let s: Saved =
            serde_json::from_slice(bytes).map_err(|e| KilnError::Checkpoint(format!("{ONLINE_FILE}: {e}")))?;
        let mut dpo = OnlineDpo::new(s.every, s.steps);
        (dpo.rankings, dpo.updates) = (s.rankings, s.updates);
        Ok(Online { dpo, undo: Vec::new() })
    }

    /// How many updates can be undone now.
    pub fn undoable(&self) -> usize {
        self.undo.len()
    }
}

impl Session {
    /// Adds the person's `ranking` to the loop (begun with an update every `every`
    /// rankings of `steps` DPO steps, `cfg` DPO's options); when an update is due, runs it
    /// and returns it. It trains the current model (a policy PPO trained goes on without its
    /// value head), held near the session's reference, the fine-tuned model: before any
    /// preference stage, the current model becomes it. A failed update leaves the model as
    /// it was; the ranking is kept.
    pub async fn rank_online(
        &mut self,
        ranking: Ranking,
        (every, steps): (usize, u64),
        cfg: &TrainConfig,
    ) -> Result<Option<Update>> {
        let run = self.run()?;
        if run.stage_kind().is_some_and(|k| k.def().head == Some(ScalarHeadKind::Reward)) {
            return Err(KilnError::Config(
                "the current model is a reward model: learning as you rank trains the fine-tuned model; import or fine-tune it again first".into(),
            ));
        }
        let (config, stage) = (run.config(), run.stage_kind());
        let online = self.online.get_or_insert_with(|| Online { dpo: OnlineDpo::new(every, steps), undo: Vec::new() });
        if !online.dpo.add(ranking) {
            return Ok(None);
        }
        // after a preference stage the reference is the session's; before one, the current
        // model is the fine-tuned one and becomes it. The loop's own model (a DPO run) goes
        // on as it is, its adapters too; any other starts a run of its GPT-2 tensors.
        let aligned = stage.is_some_and(|k| k.def().from_reference) && self.reference.is_some();
        let on = aligned && stage == Some(StageKind::Dpo);
        let params = with_run!(self.run_mut()?, r => r.params().await)?;
        let params = &params[..config.num_params()];
        let reference = match (&self.reference, aligned) {
            (Some(reference), true) => reference.clone(),
            _ => params.to_vec(),
        };
        let mut policy = match on {
            true => self.run.take().expect("checked"),
            false => {
                let extras = with_run!(self.run()?, r => r.extras());
                self.new_run(config, ParamLayout::new(&config), Some(params), cfg.seed, extras)?
            }
        };
        let tokenizer = self.tokenizer()?.clone();
        let online = self.online.as_mut().expect("just made");
        let result = async {
            let mut frozen = Trainer::with_model(CpuBackend::new(), tokenizer, config, Some(&reference), 0)?;
            with_run!(&mut policy, r => online.dpo.update(r, &mut frozen, cfg).await)
        }
        .await;
        match result {
            Ok(Some(update)) => {
                online.undo.push(online.dpo.take_before().expect("an update keeps what it began from"));
                if online.undo.len() > UNDO_DEPTH {
                    online.undo.remove(0);
                }
                self.reference = Some(reference);
                self.run = Some(policy);
                self.generation = None;
                Ok(Some(update))
            }
            // no usable ranking yet, or a failure: the model as it was
            other => {
                if on {
                    if let Some(before) = online.dpo.take_before() {
                        with_run!(&mut policy, r => r.put_trained(&before))?;
                    }
                    self.run = Some(policy);
                }
                other.map(|_| None)
            }
        }
    }

    /// How sure the current model is of the order of its answers to each of `prompts`
    /// (`k` answers sampled as `cfg` says): [`order_spread`], smallest first to be asked.
    pub async fn order_spreads(&mut self, prompts: &[Vec<Message>], k: usize, cfg: &SampleConfig) -> Result<Vec<f64>> {
        let mut spreads = Vec::with_capacity(prompts.len());
        for (i, prompt) in prompts.iter().enumerate() {
            let sample = SampleConfig { seed: cfg.seed.wrapping_add(i as u64), ..cfg.clone() };
            let answers: Vec<_> =
                self.sample_candidates(prompt, k, &sample).await?.into_iter().map(|(_, c)| c).collect();
            spreads.push(order_spread(&answers));
        }
        Ok(spreads)
    }

    /// Puts back the model as it was before the last update (bit for bit) and forgets
    /// that update; the rankings stay. False when there is nothing to undo.
    pub fn undo_online(&mut self) -> Result<bool> {
        let Some(values) = self.online.as_ref().and_then(|o| o.undo.last().cloned()) else { return Ok(false) };
        with_run!(self.run_mut()?, r => r.put_trained(&values))?;
        let online = self.online.as_mut().expect("checked");
        online.undo.pop();
        online.dpo.updates.pop();
        self.generation = None;
        Ok(true)
    }
}
