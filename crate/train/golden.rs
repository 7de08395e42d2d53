//! Golden parity with transformers as a check any backend runs — natively (`tests/golden.rs`)
//! and in the browser (`goldenCheck` in the wasm, `tests/browser/golden.test.mjs`): a
//! fixture folder's model, batch and what PyTorch computed for it in float64 (logits, the
//! per-position losses, every gradient, the losses of AdamW steps), against Kiln's f32.
//! Errors are relative to the largest magnitude of the reference tensor.

use std::collections::HashMap;

use safetensors::{Dtype, SafeTensors};
use serde::Serialize;

use super::{train_step, AdamW, TokenBatch};
use crate::backend::Backend;
use crate::cpu::adamw::AdamWConfig;
use crate::data::Files;
use crate::error::{KilnError, Result};
use crate::model::hf_config::config_from_hf;
use crate::model::{backward, forward, Activations, Gpt, GptConfig, ParamLayout};

/// Named float64 tensors (shape, values).
pub type Tensors = HashMap<String, (Vec<usize>, Vec<f64>)>;

/// What a fixture holds.
pub struct GoldenFixture {
    pub config: GptConfig,
    pub params: Vec<f32>,
    pub batch: TokenBatch,
    pub expected: Tensors,
    pub adamw: AdamWConfig,
    pub max_norm: f32,
    pub steps: usize,
    /// LoRA adapters on the model (a PEFT folder): what trains, and whose gradients the
    /// expected file holds.
    pub adapter: Option<crate::peft::Adapter>,
}

/// How far Kiln is from the reference.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GoldenReport {
    pub logits: f64,
    pub losses: f64,
    pub loss: f64,
    pub gradient_tensors: usize,
    pub worst_gradient: f64,
    pub worst_gradient_tensor: String,
    pub steps: f64,
    pub step_losses: Vec<f32>,
    pub reference_step_losses: Vec<f64>,
}

/// The tolerances: logits and losses 1e-5, every gradient tensor and the steps' losses 1e-4.
impl GoldenReport {
    pub fn passed(&self) -> bool {
        self.logits <= 1e-5
            && self.losses <= 1e-5
            && self.loss <= 1e-5
            && self.worst_gradient <= 1e-4
            && self.steps <= 1e-4
    }
}

/// fixture.json's "optimizer": AdamW's settings, the clipping norm and the steps.
fn optimizer(json: &serde_json::Value) -> Result<(AdamWConfig, f32, usize)> {
    let o = &json["optimizer"];
    let f = |k: &str| o[k].as_f64().ok_or_else(|| bad(format!("fixture.json: optimizer.{k}")));
    let adamw = AdamWConfig {
        lr: f("lr")?,
        beta1: f("beta1")?,
        beta2: f("beta2")?,
        eps: f("eps")?,
        weight_decay: f("weight_decay")?,
    };
    Ok((adamw, f("max_norm")? as f32, f("steps")? as usize))
}

fn bad(m: impl Into<String>) -> KilnError {
    KilnError::Data(m.into())
}

/// A safetensors file's tensors widened to f64 (f64, f32 and i32 ones).
pub fn read_tensors(bytes: &[u8], file: &str) -> Result<Tensors> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("{file}: {e}")))?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view.data();
            let values: Vec<f64> = match view.dtype() {
                Dtype::F64 => data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
                Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
                Dtype::I32 => data.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
                other => return Err(bad(format!("{file}: {name} is {other:?}"))),
            };
            Ok((name, (view.shape().to_vec(), values)))
        })
        .collect()
}

impl GoldenFixture {
    /// A Hugging Face folder (config.json, model.safetensors) with the fixture's
    /// fixture.json, batch.safetensors and expected.safetensors.
    /// With a PEFT adapter's files among them (and the adapter fixture's fixture.json and
    /// expected.safetensors in place of the base's), the adapter's fixture on that base.
    pub fn from_files(files: &Files) -> Result<GoldenFixture> {
        let get = |name: &str| files.get(name).map(Vec::as_slice).ok_or_else(|| bad(format!("{name} is missing")));
        let config = config_from_hf(get("config.json")?)?;
        let json: serde_json::Value =
            serde_json::from_slice(get("fixture.json")?).map_err(|e| bad(format!("fixture.json: {e}")))?;
        let fixture = Self::new(config, &read_tensors(get("model.safetensors")?, "model.safetensors")?, &json, files)?;
        match crate::peft::is_adapter(files) {
            true => fixture.with_adapter(files),
            false => Ok(fixture),
        }
    }

    /// The fixture of `config` with its initial weights, its settings (fixture.json's
    /// "batch" and "optimizer"), and the batch and expected files.
    pub fn new(config: GptConfig, initial: &Tensors, json: &serde_json::Value, files: &Files) -> Result<GoldenFixture> {
        let layout = ParamLayout::new(&config);
        if layout.tensors.len() != initial.len() {
            return Err(bad(format!("{} tensors for a layout of {}", initial.len(), layout.tensors.len())));
        }
        let mut params = vec![0.0f32; layout.total];
        for t in &layout.tensors {
            let (shape, values) = initial.get(&t.name).ok_or_else(|| bad(format!("the fixture lacks {}", t.name)))?;
            if shape != &t.shape {
                return Err(bad(format!("{} has shape {shape:?}, the layout {:?}", t.name, t.shape)));
            }
            params[t.offset..t.offset + t.len()].iter_mut().zip(values).for_each(|(p, v)| *p = *v as f32);
        }
        let get = |name: &str| files.get(name).map(Vec::as_slice).ok_or_else(|| bad(format!("{name} is missing")));
        let b = read_tensors(get("batch.safetensors")?, "batch.safetensors")?;
        let u = |v: &serde_json::Value| v.as_u64().map(|x| x as usize).ok_or_else(|| bad("fixture.json: a size"));
        let ids = |name: &str| b.get(name).map(|t| t.1.iter().map(|&x| x as u32).collect::<Vec<u32>>());
        let (tokens, targets) = ids("tokens").zip(ids("targets")).ok_or_else(|| bad("batch.safetensors"))?;
        let weights = b.get("weights").ok_or_else(|| bad("batch.safetensors lacks weights"))?;
        let batch = TokenBatch {
            b: u(&json["batch"]["b"])?,
            t: u(&json["batch"]["t"])?,
            tokens,
            targets,
            weights: weights.1.iter().map(|&x| x as f32).collect(),
        };
        let (adamw, max_norm, steps) = optimizer(json)?;
        Ok(GoldenFixture {
            config,
            params,
            batch,
            expected: read_tensors(get("expected.safetensors")?, "expected.safetensors")?,
            adamw,
            max_norm,
            steps,
            adapter: None,
        })
    }

    /// A PEFT adapter fixture (adapter_config.json, adapter_model.safetensors,
    /// fixture.json, expected.safetensors) on this fixture's model and batch: its expected
    /// values and optimizer replace the base's.
    pub fn with_adapter(self, files: &Files) -> Result<GoldenFixture> {
        let adapter = crate::peft::read_adapter(files, &self.config, &ParamLayout::new(&self.config))?;
        let get = |name: &str| files.get(name).map(Vec::as_slice).ok_or_else(|| bad(format!("{name} is missing")));
        let json: serde_json::Value =
            serde_json::from_slice(get("fixture.json")?).map_err(|e| bad(format!("fixture.json: {e}")))?;
        let (adamw, max_norm, steps) = optimizer(&json)?;
        Ok(GoldenFixture {
            expected: read_tensors(get("expected.safetensors")?, "expected.safetensors")?,
            adamw,
            max_norm,
            steps,
            adapter: Some(adapter),
            ..self
        })
    }

    /// The fixture's model on `be` (with its adapters, if it has any).
    fn model<B: Backend>(&self, be: &mut B) -> Result<Gpt<B>> {
        let model = Gpt::from_params(be, self.config, &self.params)?;
        match &self.adapter {
            Some(a) => model.with_lora(be, a.layout.config.clone(), Some(&a.values), 0),
            None => Ok(model),
        }
    }

    fn expected(&self, name: &str) -> Result<&[f64]> {
        self.expected.get(name).map(|t| t.1.as_slice()).ok_or_else(|| bad(format!("expected.safetensors lacks {name}")))
    }
}

/// Kiln's forward pass, gradients and AdamW steps on `be` against the fixture's.
pub async fn golden_check<B: Backend>(be: &mut B, fx: &GoldenFixture) -> Result<GoldenReport> {
    let rel = crate::selftest::max_rel_err;
    let (b, t) = (fx.batch.b, fx.batch.t);
    let model = fx.model(be)?;
    let acts = Activations::for_model(be, &model, b, t)?;
    be.write_u32(&acts.tokens, 0, &fx.batch.tokens);
    be.write_u32(&acts.targets, 0, &fx.batch.targets);
    be.write(&acts.weights, 0, &fx.batch.weights);
    forward(be, &model, &acts);
    let logits = be.read(&acts.logits).await?;
    let losses = be.read(&acts.losses).await?;
    let loss: f64 = losses.iter().map(|&x| x as f64).sum();
    let want_loss = fx.expected("loss")?[0];

    be.clear(model.grads());
    backward(be, &model, &acts, &fx.batch.tokens)?;
    let grads = be.read(model.grads()).await?;
    // (name in the expected file, Kiln's gradient): the model's tensors, or PEFT's
    let named: Vec<(String, Vec<f32>)> = match &model.lora {
        Some(lora) => lora
            .layout
            .peft_tensors(&grads)
            .into_iter()
            .map(|(name, _, g)| (format!("base_model.model.{name}"), g))
            .collect(),
        None => model
            .layout
            .tensors
            .iter()
            .map(|t| (t.name.clone(), grads[t.offset..t.offset + t.len()].to_vec()))
            .collect(),
    };
    let mut worst = (0.0f64, String::new());
    for (name, got) in &named {
        let err = rel(got, fx.expected(&format!("grad.{name}"))?);
        if err >= worst.0 {
            worst = (err, name.clone());
        }
    }

    // the steps, with clipping, through the trainer's step
    let model = fx.model(be)?;
    let mut opt = AdamW::new(be, &model)?;
    let mut step_losses = Vec::new();
    for _ in 0..fx.steps {
        let batch = std::slice::from_ref(&fx.batch);
        let loss = train_step(be, &model, &acts, &mut opt, batch, fx.adamw, fx.max_norm, true).await?;
        step_losses.push(loss.ok_or_else(|| bad("a step gave no loss"))?);
    }
    let reference_step_losses = fx.expected("step_losses")?.to_vec();
    Ok(GoldenReport {
        logits: rel(&logits, fx.expected("logits")?),
        losses: rel(&losses, fx.expected("losses")?),
        loss: (loss - want_loss).abs() / want_loss.abs(),
        gradient_tensors: named.len(),
        worst_gradient: worst.0,
        worst_gradient_tensor: worst.1,
        steps: rel(&step_losses, &reference_step_losses),
        step_losses,
        reference_step_losses,
    })
}
