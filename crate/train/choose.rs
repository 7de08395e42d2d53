//! `auto`: of the backends at hand, the one that trains *this* model faster, timed on it.
//! A software WebGPU adapter (SwiftShader, lavapipe) is often 40× slower than the CPU
//! backend; a real GPU is faster on all but the smallest models. Timing a few steps of
//! the chosen model on each settles it, and the reason given carries both figures.

use serde::Serialize;

use super::{TrainConfig, Trainer};
use crate::backend::{Backend, BackendKind, CpuBackend, GpuBackend};
use crate::clock::now_s;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::model::GptConfig;
use crate::tokenizer::{Tokenizer, SPECIAL_TOKENS};

/// Rows of the full context in each timed step: a tiny batch keeps a software adapter's
/// probe short, and both backends are timed on the same one.
const PROBE_ROWS: usize = 1;
/// Time each backend this long (after one warm-up step), at most 3 steps.
const PROBE_SECONDS: f64 = 0.2;
/// Tokens of the text the probe trains on: enough for a few rows at any context.
const PROBE_TOKENS: usize = 1 << 15;

/// Which backend `auto` chose, both measurements and why, for the person to read.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendChoice {
    pub kind: BackendKind,
    pub gpu_tokens_per_s: Option<f64>,
    pub cpu_tokens_per_s: f64,
    pub reason: String,
}

/// Text for the probe: every ordinary token of the vocabulary in turn, decoded. Speed
/// does not depend on what is read, so no corpus is needed, and any tokenizer reads it.
fn probe_text(tok: &Tokenizer) -> Result<String> {
    let first = SPECIAL_TOKENS.len() as u32;
    let ordinary = (tok.vocab_size() as u32).saturating_sub(first).max(1);
    let ids: Vec<u32> = (0..PROBE_TOKENS as u32).map(|i| first + i % ordinary).collect();
    tok.decode(&ids)
}

/// Training tokens/s of `config` on `be`: a warm-up step (buffers, bind groups), then
/// steps of PROBE_ROWS rows, each waited for, until PROBE_SECONDS have passed. A warm-up
/// step that itself takes PROBE_SECONDS or more is the measurement: on so slow a backend
/// (a software adapter) its setup is a small part of it, and another step would double
/// the wait. (Pipelines are compiled before: [`warm_up`].)
pub async fn probe<B: Backend>(be: B, tok: &Tokenizer, config: GptConfig) -> Result<f64> {
    let text = probe_text(tok)?;
    let cfg = TrainConfig {
        steps: 1000,
        batch_size: PROBE_ROWS,
        eval_every: u64::MAX,
        sample_every: 0,
        log_every: u64::MAX,
        ..Default::default()
    };
    let mut run = Trainer::pretrain(be, tok.clone(), &text, config, cfg)?;
    let tokens_per_step = (PROBE_ROWS * config.block_size) as f64;
    let first = now_s();
    run.train_one().await?;
    run.be.read(&run.opt.norm).await?;
    if now_s() - first >= PROBE_SECONDS {
        return Ok(tokens_per_step / (now_s() - first));
    }
    let (start, mut steps) = (now_s(), 0);
    while steps == 0 || (now_s() - start < PROBE_SECONDS && steps < 3) {
        run.train_one().await?;
        run.be.read(&run.opt.norm).await?;
        steps += 1;
    }
    Ok(steps as f64 * tokens_per_step / (now_s() - start).max(1e-6))
}

/// Compiles every training kernel's pipeline on `gpu` with one step of a toy model, so
/// that the first real model's probe times training, not the compiler (on SwiftShader
/// compiling takes about 2.3 of the 3.7 s the first tiny model's choice took). The
/// pipelines stay in `gpu`'s cache, which every clone shares.
pub async fn warm_up(gpu: &Gpu) -> Result<()> {
    use super::{train_step, AdamW};
    use crate::cpu::adamw::AdamWConfig;
    use crate::data::TokenBatch;
    use crate::model::{Activations, Gpt};
    let mut be = GpuBackend::new(gpu.clone());
    let config = GptConfig::gpt2(16, 8, 1, 2, 8);
    let (b, t) = (2, config.block_size);
    let ids: Vec<u32> = (0..b * t).map(|i| (i % 16) as u32).collect();
    let batch = TokenBatch { b, t, tokens: ids.clone(), targets: ids, weights: vec![1.0 / (b * t) as f32; b * t] };
    let model = Gpt::new(&mut be, config, 0)?;
    let acts = Activations::new(&mut be, &config, b, t)?;
    let mut opt = AdamW::new(&mut be, &model)?;
    train_step(&mut be, &model, &acts, &mut opt, &[batch], AdamWConfig::default(), 1.0, true).await?;
    Ok(())
}

/// Times `config` on the CPU backend and, when there is one, on `gpu` (`software`: an
/// adapter that renders on the CPU, named so in the reason), and picks the faster.
pub async fn choose(gpu: Option<(&Gpu, bool)>, tok: &Tokenizer, config: GptConfig) -> Result<BackendChoice> {
    let cpu = probe(CpuBackend::new(), tok, config).await?;
    let Some((gpu, software)) = gpu else {
        return Ok(BackendChoice {
            kind: BackendKind::Cpu,
            gpu_tokens_per_s: None,
            cpu_tokens_per_s: cpu,
            reason: "no WebGPU adapter is available here".into(),
        });
    };
    warm_up(gpu).await?; // at once when the pipelines are compiled already
    let on_gpu = probe(GpuBackend::new(gpu.clone()), tok, config).await?;
    let what = if software { "software WebGPU" } else { "the GPU" };
    let kind = if on_gpu > cpu { BackendKind::Gpu } else { BackendKind::Cpu };
    let reason = format!(
        "timed on this model: {what} trains {} tokens/s, the CPU {}; {} is {:.1}× faster",
        thousands(on_gpu),
        thousands(cpu),
        if kind == BackendKind::Gpu { what } else { "the CPU" },
        on_gpu.max(cpu) / on_gpu.min(cpu).max(1e-9),
    );
    Ok(BackendChoice { kind, gpu_tokens_per_s: Some(on_gpu), cpu_tokens_per_s: cpu, reason })
}

/// 12345.6 → "12,346".
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}
