//! PEFT adapter folders, as Python's `peft` writes and reads them: `adapter_config.json`
//! (LoRA's rank, α, target modules and the base model's name) and
//! `adapter_model.safetensors` (each adapted module's `lora_A.weight` (r, in) and
//! `lora_B.weight` (out, r) under "base_model.model." and the module's path).
//! `PeftModel.from_pretrained(base, folder)` loads what [`adapter_files`] writes; Kiln
//! reads such a folder onto its base with [`read_adapter`]. A stranger's file: its config
//! is bounded and every setting Kiln does not train the same way is refused by name.

use safetensors::SafeTensors;
use serde_json::{json, Value};

use crate::data::{base_name, Files};
use crate::error::KilnError;
use crate::error::Result;
use crate::model::lora::{LoraConfig, LoraLayout, LoraTargets};
use crate::model::{GptConfig, ParamLayout, ScalarHeadKind};
use crate::tensors::{f32_bytes, read_f32, safetensors_of};

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// What PEFT puts before a module's path in the saved names.
const PREFIX: &str = "base_model.model.";
const MAX_CONFIG: usize = 1 << 20;
/// Adapter weights stay small; past this they are not LoRA factors of a trained model.
const MAX_ADAPTER_WEIGHT: f32 = 1e4;

fn bad(m: impl std::fmt::Display) -> KilnError {
    KilnError::Checkpoint(m.to_string())
}

/// The largest adapter_model.safetensors Kiln reads: rank 256 on every linear layer of a
/// model of a few billion parameters stays well within it.
const MAX_WEIGHTS_FILE: usize = 1 << 30;

/// An adapter folder from its files as (name, bytes), the names possibly under folders (a
/// browser's folder input): its two files, size-checked; the rest left out.
pub fn from_named(files: Vec<(String, Vec<u8>)>) -> Result<Files> {
    let mut out = Files::new();
    for (name, bytes) in files {
        let name = base_name(&name);
        let cap = match name {
            ADAPTER_CONFIG => MAX_CONFIG,
            ADAPTER_WEIGHTS => MAX_WEIGHTS_FILE,
            _ => continue,
        };
        if bytes.len() > cap {
            return Err(bad(format!("{name} is {} bytes, past the {cap} Kiln reads for it", bytes.len())));
        }
        if out.insert(name.to_string(), bytes).is_some() {
            return Err(bad(format!("{name} is there twice; an adapter folder has one of each")));
        }
    }
    for name in [ADAPTER_CONFIG, ADAPTER_WEIGHTS] {
        if !out.contains_key(name) {
            return Err(bad(format!(
                "{name} is missing: an adapter folder holds {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}"
            )));
        }
    }
    Ok(out)
}

/// Whether the files are a PEFT adapter folder (rather than a model folder).
pub fn is_adapter(files: &Files) -> bool {
    files.contains_key(ADAPTER_CONFIG)
}

/// An adapter read onto its base: its layout, its fused values and the base it names.
pub struct Adapter {
    pub layout: LoraLayout,
    pub values: Vec<f32>,
    pub base_model: String,
}

/// What adapter_config.json says: LoRA's settings, the base model it names, and the
/// modules it trains in full (`modules_to_save`: a scalar head, or none).
pub struct AdapterConfig {
    pub lora: LoraConfig,
    pub base_model: String,
    pub modules_to_save: Vec<String>,
}

/// adapter_config.json's LoRA settings, each one Kiln cannot honour refused by name.
pub fn read_adapter_config(bytes: &[u8]) -> Result<AdapterConfig> {
    if bytes.len() > MAX_CONFIG {
        return Err(bad(format!(
            "{ADAPTER_CONFIG} is {} bytes, past the {MAX_CONFIG} an adapter's needs",
            bytes.len()
        )));
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("{ADAPTER_CONFIG} is not JSON: {e}")))?;
    let field = |k: &str| v.get(k).filter(|x| !x.is_null());
    match field("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        other => {
            return Err(bad(format!("{ADAPTER_CONFIG}: peft_type {other:?}; Kiln reads LoRA adapters (\"LORA\")")))
        }
    }
    let r = field("r").and_then(Value::as_u64).ok_or_else(|| bad(format!("{ADAPTER_CONFIG} has no rank \"r\"")))?;
    let alpha = match field("lora_alpha") {
        None => 8.0, // PEFT's default
        Some(a) => a.as_f64().ok_or_else(|| bad(format!("{ADAPTER_CONFIG}: lora_alpha {a} is not a number")))?,
    };
    // settings that change what the adapter computes, which Kiln's LoRA does not do
    let refuse_true = ["use_rslora", "use_dora", "lora_bias", "use_qalora", "use_bdlora"];
    for k in refuse_true {
        if field(k).is_some_and(|x| x != &Value::Bool(false)) {
            return Err(bad(format!("{ADAPTER_CONFIG}: {k} is set; Kiln reads plain LoRA adapters")));
        }
    }
    if field("bias").is_some_and(|b| b != "none") {
        return Err(bad(format!("{ADAPTER_CONFIG}: bias {}; Kiln's adapters train no biases (\"none\")", v["bias"])));
    }
    let empty = |x: &Value| x.as_object().is_some_and(|o| o.is_empty()) || x.as_array().is_some_and(|a| a.is_empty());
    for k in [
        "rank_pattern",
        "alpha_pattern",
        "layers_to_transform",
        "target_parameters",
        "layer_replication",
        "trainable_token_indices",
    ] {
        if field(k).is_some_and(|x| !empty(x)) {
            return Err(bad(format!("{ADAPTER_CONFIG}: {k} is set; Kiln reads adapters of one rank on whole modules")));
        }
    }
    let targets = match field("target_modules") {
        None => LoraTargets::Attention,
        Some(Value::String(s)) if s == "all-linear" => LoraTargets::AllLinear,
        Some(Value::String(s)) => {
            return Err(bad(format!(
                "{ADAPTER_CONFIG}: target_modules {s:?} is a regular expression; Kiln reads a list of modules or \"all-linear\""
            )))
        }
        Some(Value::Array(list)) => LoraTargets::Modules(
            list.iter()
                .map(|m| m.as_str().map(str::to_string).filter(|s| s.len() <= 256))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| bad(format!("{ADAPTER_CONFIG}: target_modules holds something other than names")))?,
        ),
        Some(other) => return Err(bad(format!("{ADAPTER_CONFIG}: target_modules {other} is not a list of names"))),
    };
    // a scalar head trained in full is the one module Kiln trains beside the adapters
    let modules_to_save: Vec<String> = match field("modules_to_save") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|m| m.as_str().filter(|s| HEADS.contains(s)).map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                bad(format!(
                    "{ADAPTER_CONFIG}: modules_to_save {} names a module Kiln does not train in full (it trains a scalar head: {HEADS:?})",
                    v["modules_to_save"]
                ))
            })?,
        Some(other) => return Err(bad(format!("{ADAPTER_CONFIG}: modules_to_save {other} is not a list of names"))),
    };
    let lora = LoraConfig { r: r as usize, alpha, targets };
    lora.validate().map_err(|e| bad(format!("{ADAPTER_CONFIG}: {e}")))?;
    let base_model = field("base_model_name_or_path").and_then(Value::as_str).unwrap_or("").chars().take(512).collect();
    Ok(AdapterConfig { lora, base_model, modules_to_save })
}

/// The scalar heads' module names (the reward model's "score", PPO's "v_head").
const HEADS: [&str; 2] = ["score", "v_head"];

/// The adapter in `files` for a base of `cfg` and `layout`: every module the config
/// targets must have its two tensors, of their shapes, and the file nothing else.
pub fn read_adapter(files: &Files, cfg: &GptConfig, layout: &ParamLayout) -> Result<Adapter> {
    let config_bytes = files.get(ADAPTER_CONFIG).ok_or_else(|| bad(format!("{ADAPTER_CONFIG} is missing")))?;
    let AdapterConfig { lora: config, base_model, modules_to_save } = read_adapter_config(config_bytes)?;
    let head: Vec<String> = layout.scalar_head.iter().map(|h| h.kind.prefix().to_string()).collect();
    if modules_to_save != head {
        return Err(bad(format!(
            "{ADAPTER_CONFIG}: modules_to_save {modules_to_save:?}, but the model's head is {head:?}: the adapter was trained on another kind of model"
        )));
    }
    let lora = LoraLayout::new(cfg, layout, config).map_err(|e| bad(format!("{ADAPTER_CONFIG}: {e}")))?;
    let bytes = files.get(ADAPTER_WEIGHTS).ok_or_else(|| bad(format!("{ADAPTER_WEIGHTS} is missing")))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("{ADAPTER_WEIGHTS} is corrupt: {e}")))?;
    let mut used = 0;
    let values = lora.from_peft(|name, shape| {
        used += 1;
        // PEFT saves without the adapter's name; an older one may keep ".default"
        let names = match name.rsplit_once(".lora_") {
            Some((module, weight)) => vec![
                format!("{PREFIX}{name}"),
                format!("{PREFIX}{module}.lora_{}", weight.replace(".weight", ".default.weight")),
            ],
            None => vec![format!("{PREFIX}{name}")],
        };
        read_f32(&st, &names, shape, ADAPTER_WEIGHTS, MAX_ADAPTER_WEIGHT)
    })?;
    if st.len() != used {
        let wanted: Vec<String> = lora.peft_tensors(&values).into_iter().map(|t| format!("{PREFIX}{}", t.0)).collect();
        let extra: Vec<&str> = st.names().into_iter().filter(|n| !wanted.iter().any(|w| w == *n)).take(3).collect();
        return Err(bad(format!(
            "{ADAPTER_WEIGHTS} holds {} tensors, the config's targets {used} (for example {extra:?} is not one of them)",
            st.len()
        )));
    }
    Ok(Adapter { layout: lora, values, base_model })
}

/// A PEFT adapter folder for these adapters on `base_model` (a Hub id or a folder).
pub fn adapter_files(lora: &LoraLayout, values: &[f32], base_model: &str, arch: &str) -> Result<Files> {
    let tensors = lora.peft_tensors(values);
    let head = lora.head.map(|h| h.kind);
    let modules: Vec<String> = {
        let mut m: Vec<String> =
            tensors.iter().filter_map(|t| t.0.strip_suffix(".lora_A.weight").map(str::to_string)).collect();
        m.sort();
        m
    };
    let config = json!({
        "peft_type": "LORA",
        // a reward model's score head makes it a sequence classifier
        "task_type": if head == Some(ScalarHeadKind::Reward) { "SEQ_CLS" } else { "CAUSAL_LM" },
        "base_model_name_or_path": base_model,
        "r": lora.config.r,
        "lora_alpha": lora.config.alpha,
        "lora_dropout": 0.0,
        "target_modules": modules,
        "bias": "none",
        // GPT-2's Conv1D stores weights in × out
        "fan_in_fan_out": arch == "GPT2LMHeadModel",
        "use_rslora": false,
        "use_dora": false,
        "modules_to_save": head.map(|k| vec![k.prefix()]),
        "init_lora_weights": true,
        "inference_mode": true,
        "auto_mapping": {"base_model_class": arch, "parent_library": "transformers.models"},
    });
    let weights = safetensors_of(
        tensors.into_iter().map(|(name, shape, v)| (format!("{PREFIX}{name}"), shape, f32_bytes(&v))).collect(),
    )?;
    let mut files = Files::new();
    files.insert(ADAPTER_CONFIG.into(), serde_json::to_vec_pretty(&config).map_err(bad)?);
    files.insert(ADAPTER_WEIGHTS.into(), weights);
    Ok(files)
}
