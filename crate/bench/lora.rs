//! LoRA on a model of SmolLM2-135M's shape (Kiln-initialised from its config: 30 blocks,
//! 576 wide, 9 query and 3 key/value heads, SwiGLU 1536, 49,152 tokens, tied, context
//! 512): the memory the estimate says and the memory a step takes on the CPU backend (the
//! process's peak resident memory over the step, less what it held before the model was
//! made) and, where the GPU takes the model's buffers, on the GPU backend (which keeps
//! LoRA's frozen weights in bf16, as they come), for LoRA and for full fine-tuning; and LoRA SFT's training tokens/s on the CPU backend
//! (tests/bench/torch_lora.py times PyTorch + PEFT on the same shapes, rank and batch;
//! tests/bench/lora.sh prints both side by side).

use std::time::Instant;

use serde::Serialize;

use crate::backend::{Backend, CpuBackend, GpuBackend};
use crate::cpu::adamw::AdamWConfig;
use crate::data::TokenBatch;
use crate::error::KilnError;
use crate::gpu::Gpu;
use crate::model::lora::{memory, LoraConfig, LoraTargets};
use crate::model::weights::estimate_in_16_bits;
use crate::model::{Activations, Gpt, GptConfig, ParamLayout};
use crate::rng::Rng;
use crate::train::{train_step, AdamW};

#[derive(Debug, Serialize)]
pub struct MemoryRow {
    pub training: &'static str,
    pub trainable_params: usize,
    pub estimate_mib: f64,
    /// On the GPU, where LoRA's frozen bf16 weights stay in 16 bits (`model::weights`).
    pub estimate_gpu_mib: f64,
    /// The CPU backend's: peak resident memory over one step less that before the model.
    pub measured_cpu_mib: Option<f64>,
    /// The GPU backend's peak of allocated buffers over one step, or why not measured.
    pub measured_gpu_mib: Result<f64, String>,
}

/// This process's resident memory now and its peak since the last reset (Linux), bytes.
fn rss() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|k| k * 1024)
    };
    Some((kb("VmRSS:")?, kb("VmHWM:")?))
}

/// Resets the peak resident memory to the current (Linux's clear_refs 5).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[derive(Debug, Serialize)]
pub struct LoraReport {
    pub benchmark: &'static str,
    pub model: String,
    pub params: usize,
    pub lora: LoraConfig,
    pub batch: usize,
    pub context: usize,
    pub memory: Vec<MemoryRow>,
    pub gpu_adapter: Option<String>,
    /// LoRA SFT on the CPU backend: tokens/s over `steps` steps after one warm-up step.
    pub cpu_lora_tokens_per_s: f64,
    pub steps: usize,
    /// Where one more LoRA step's time goes on the CPU backend, by op, largest first (each
    /// op timed on its own, so the total runs a little over a step).
    pub cpu_lora_profile: Vec<OpTime>,
}

#[derive(Debug, Serialize)]
pub struct OpTime {
    pub op: String,
    pub calls: u32,
    pub seconds: f64,
    pub share: f64,
}

fn mib(bytes: u64) -> f64 {
    (bytes as f64 / (1u64 << 20) as f64 * 10.0).round() / 10.0
}

/// A batch of random tokens, every position weighted (SFT's cost does not depend on which
/// positions count).
fn batch(cfg: &GptConfig, b: usize, t: usize) -> TokenBatch {
    let mut rng = Rng::new(7);
    let ids: Vec<u32> = (0..b * t + 1).map(|_| rng.below(cfg.vocab_size as u64) as u32).collect();
    TokenBatch {
        b,
        t,
        tokens: ids[..b * t].to_vec(),
        targets: ids[1..].to_vec(),
        weights: vec![1.0 / (b * t) as f32; b * t],
    }
}

/// The model on `be`, with adapters when `lora` is given (else every weight trains).
fn model<B: Backend>(
    be: &mut B,
    cfg: GptConfig,
    values: &[f32],
    lora: Option<&LoraConfig>,
) -> Result<Gpt<B>, KilnError> {
    let model = Gpt::from_layout(be, cfg, ParamLayout::new(&cfg), values, lora.is_none())?;
    match lora {
        Some(l) => model.with_lora(be, l.clone(), None, 1),
        None => Ok(model),
    }
}

/// `steps` timed training steps (after one warm-up) on `be`: tokens/s.
fn time_steps<B: Backend>(be: &mut B, model: &Gpt<B>, batch: &TokenBatch, steps: usize) -> Result<f64, KilnError> {
    let acts = Activations::for_model(be, model, batch.b, batch.t)?;
    let mut opt = AdamW::new(be, model)?;
    let one = std::slice::from_ref(batch);
    pollster::block_on(train_step(be, model, &acts, &mut opt, one, AdamWConfig::default(), 1.0, true))?;
    let start = Instant::now();
    for _ in 0..steps {
        pollster::block_on(train_step(be, model, &acts, &mut opt, one, AdamWConfig::default(), 1.0, true))?;
    }
    Ok((steps * batch.b * batch.t) as f64 / start.elapsed().as_secs_f64())
}

/// The report; `gpu` measures the memory of one step of each kind on it.
pub fn bench_lora(gpu: Option<&Gpu>, b: usize, steps: usize, progress: impl Fn(&str)) -> Result<LoraReport, KilnError> {
    let t = 512;
    let cfg = GptConfig::smollm2_135m(t);
    let lora = LoraConfig { r: 8, alpha: 16.0, targets: LoraTargets::Attention };
    // in bf16, as SmolLM2 ships: the GPU keeps the frozen weights so under LoRA
    let values: Vec<f32> =
        ParamLayout::new(&cfg).init(&cfg, 1).into_iter().map(|x| half::bf16::from_f32(x).to_f32()).collect();
    let batch = batch(&cfg, b, t);
    // PEFT's count: each module's A (r, in) and B (out, r); the fused storage holds zeros besides
    let lora_layout = crate::model::lora::LoraLayout::new(&cfg, &ParamLayout::new(&cfg), lora.clone())?;
    let lora_params: usize = lora_layout.peft_tensors(&vec![0.0; lora_layout.total]).iter().map(|t| t.2.len()).sum();
    let mut rows = Vec::new();
    for (training, with) in [("lora", Some(&lora)), ("full", None)] {
        let estimate = match with {
            Some(l) => memory(&cfg, l, b, t)?,
            None => cfg.memory(b, t),
        };
        progress(&format!("one {training} step on the cpu backend, for its memory"));
        reset_peak();
        let before = rss();
        {
            let mut be = CpuBackend::new();
            let m = model(&mut be, cfg, &values, with)?;
            time_steps(&mut be, &m, &batch, 0)?;
        }
        let measured_cpu_mib = before.zip(rss()).map(|((now, _), (_, peak))| mib(peak.saturating_sub(now)));
        let measured_gpu_mib = match gpu {
            Some(gpu) => {
                progress(&format!("one {training} step on the gpu backend, for its memory"));
                let mut be = GpuBackend::new(gpu.clone());
                model(&mut be, cfg, &values, with)
                    .and_then(|m| time_steps(&mut be, &m, &batch, 0))
                    .map_err(|e| e.to_string())
                    .and_then(|_| be.memory_peak_bytes().map(mib).ok_or_else(|| "not tracked".to_string()))
            }
            None => Err("no GPU asked for".into()),
        };
        let trainable_params = if with.is_some() { lora_params } else { cfg.num_params() };
        let estimate_mib = mib(estimate.total());
        let estimate_gpu_mib = match with {
            Some(_) => mib(estimate_in_16_bits(estimate, &cfg).total()),
            None => estimate_mib,
        };
        rows.push(MemoryRow {
            training,
            trainable_params,
            estimate_mib,
            estimate_gpu_mib,
            measured_cpu_mib,
            measured_gpu_mib,
        });
    }
    progress(&format!("{steps} LoRA SFT steps on the cpu backend"));
    let mut be = CpuBackend::new();
    let m = model(&mut be, cfg, &values, Some(&lora))?;
    let cpu_lora_tokens_per_s = time_steps(&mut be, &m, &batch, steps)?;
    be.set_profiling(true);
    time_steps(&mut be, &m, &batch, 0)?;
    let times = be.set_profiling(false).unwrap_or_default();
    let total: f64 = times.values().map(|t| t.1).sum();
    let mut cpu_lora_profile: Vec<OpTime> = times
        .into_iter()
        .map(|(op, (calls, seconds))| OpTime { op: op.to_string(), calls, seconds, share: seconds / total })
        .collect();
    cpu_lora_profile.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    Ok(LoraReport {
        benchmark: "lora",
        model: format!("SmolLM2-135M's shape: {cfg}"),
        params: cfg.num_params(),
        lora,
        batch: b,
        context: t,
        memory: rows,
        gpu_adapter: gpu.map(Gpu::adapter_name),
        cpu_lora_tokens_per_s,
        steps,
        cpu_lora_profile,
    })
}
