//! Learning as the person ranks, in the session: each submitted ranking joins the online
//! DPO loop ([`crate::train::online`]); when an update is due it runs on the current model,
//! held near the fine-tuned one (the session's reference), so the next prompt's answers
//! come from the updated model; under LoRA (`cfg.lora_rank`) the updates train adapters.
//! What each update began from is kept, so the last updates can be undone exactly; the rankings and updates travel in the session's snapshot
//! (online.json), so a reload goes on with the loop.

use serde::{Deserialize, Serialize};

use super::Session;
use crate::backend::CpuBackend;
use crate::data::preference::Ranking;
use crate::data::Files;
use crate::error::{KilnError, Result};
use crate::model::ParamLayout;
use crate::train::online::{OnlineDpo, Update};
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
    /// and returns it. The first update starts from the fine-tuned model (the current one,
    /// unless a preference stage has run: then the session's reference), which stays the
    /// reference throughout. A failed update leaves the model as it was; the ranking is
    /// kept.
    pub async fn rank_online(
        &mut self,
        ranking: Ranking,
        (every, steps): (usize, u64),
        cfg: &TrainConfig,
    ) -> Result<Option<Update>> {
        let run = self.run()?;
        if run.stage_kind().is_some_and(|k| k.def().head.is_some()) {
            return Err(KilnError::Config(
                "the current model is a reward model: learning as you rank trains the fine-tuned model; import or fine-tune it again first".into(),
            ));
        }
        let (config, stage) = (run.config(), run.stage_kind());
        let online = self.online.get_or_insert_with(|| Online { dpo: OnlineDpo::new(every, steps), undo: Vec::new() });
        if !online.dpo.add(ranking) {
            return Ok(None);
        }
        // the loop goes on from the last update's model, held near the session's reference;
        // its first update starts from the fine-tuned model, which becomes the reference
        let on = stage == Some(StageKind::Dpo) && self.reference.is_some();
        let params = with_run!(self.run_mut()?, r => r.params().await)?;
        let reference = match (&self.reference, on) {
            (Some(reference), true) => reference.clone(),
            _ => params[..config.num_params()].to_vec(),
        };
        let mut policy = match on {
            true => self.run.take().expect("checked"),
            false => {
                let extras = with_run!(self.run()?, r => r.extras());
                self.new_run(config, ParamLayout::new(&config), Some(&params), cfg.seed, extras)?
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
