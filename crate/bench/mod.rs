//! Benchmarks, native only (they need a clock and a blocking wait); the CLI prints JSON.
//! - matmul: the tiled WGSL kernel, the naive one-invocation-per-output kernel and the
//!   CPU twin, on the same shapes in one run (`kiln bench matmul`);
//! - training: tokens/s of the tiny, small and base presets on the GPU and CPU backends,
//!   with the device memory used beside the estimate (`kiln bench train`).

use serde::Serialize;

use crate::cpu::matmul::MatmulShape;

/// A named product to time.
#[derive(Clone, Debug, Serialize)]
pub struct BenchShape {
    pub name: String,
    pub form: &'static str,
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    #[serde(skip)]
    pub shape: MatmulShape,
}

fn named(name: &str, form: &'static str, shape: MatmulShape) -> BenchShape {
    BenchShape { name: name.to_string(), form, batch: shape.batch, m: shape.m, n: shape.n, k: shape.k, shape }
}

/// Square products 256³, 512³, 1024³, then every linear-layer product of one GPT block
/// with C = 384, T = 256, B = 8 (B·T = 2048 rows), as Kiln's model computes them with
/// weights stored (in, out) like GPT-2's Conv1D: forward Y = X·W (A·B), input gradient
/// dX = dY·Wᵀ (A·Bᵀ) and weight gradient dW = Xᵀ·dY (Aᵀ·B), for the QKV,
/// attention-output, MLP-up and MLP-down projections.
pub fn matmul_shapes(large: bool) -> Vec<BenchShape> {
    let mut shapes: Vec<BenchShape> =
        [256, 512, 1024].iter().map(|&s| named(&format!("square {s}"), "A·B", MatmulShape::nn(s, s, s))).collect();
    // a real GPU only approaches its peak on larger products (`kiln bench matmul --large`)
    if large {
        for s in [2048, 4096] {
            shapes.push(named(&format!("square {s}"), "A·B", MatmulShape::nn(s, s, s)));
        }
    }
    let (c, rows) = (384, 8 * 256);
    for (layer, inp, out) in [("qkv", c, 3 * c), ("attn_proj", c, c), ("mlp_fc", c, 4 * c), ("mlp_proj", 4 * c, c)] {
        shapes.push(named(&format!("{layer} forward"), "A·B", MatmulShape::nn(rows, out, inp)));
        shapes.push(named(&format!("{layer} d_input"), "A·Bᵀ", MatmulShape::nt(rows, inp, out)));
        shapes.push(named(&format!("{layer} d_weight"), "Aᵀ·B", MatmulShape::tn(inp, out, rows)));
    }
    shapes
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::*;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::time::Instant;

    use serde::Serialize;

    use super::{matmul_shapes, BenchShape};
    use crate::cpu;
    use crate::error::KilnError;
    use crate::gpu::{self, Gpu, GpuError};
    use crate::rng::Rng;
    use crate::selftest::max_rel_err;

    /// GFLOP/s of each implementation on one shape, and how the tiled kernel compares.
    #[derive(Debug, Serialize)]
    pub struct MatmulResult {
        #[serde(flatten)]
        pub shape: BenchShape,
        pub gflops_tiled: f64,
        pub gflops_naive: f64,
        pub gflops_cpu: f64,
        /// The tiled kernel's share of the adapter's fp32 peak, where the peak is known.
        pub tiled_share_of_peak: Option<f64>,
        pub tiled_over_naive: f64,
        pub tiled_over_cpu: f64,
        /// max |tiled − cpu| / max |cpu|: the benchmark also checks what it times.
        pub tiled_max_rel_err: f64,
    }

    #[derive(Debug, Serialize)]
    pub struct MatmulReport {
        pub benchmark: &'static str,
        pub adapter: String,
        pub cpu: String,
        pub cpu_threads: usize,
        pub cpu_twin: &'static str,
        /// The gemm micro-kernels this CPU runs ([`crate::cpu::matmul::gemm_kernel`]).
        pub cpu_kernel: &'static str,
        /// The adapter's fp32 peak (KILN_FP32_PEAK_GFLOPS, or a datasheet figure by name).
        pub fp32_peak_gflops: Option<f64>,
        pub results: Vec<MatmulResult>,
        pub geomean_tiled_over_naive: f64,
        pub geomean_tiled_over_cpu: f64,
    }

    /// Seconds a measurement should last at least, so timer and submit overheads vanish.
    const MIN_SECONDS: f64 = 0.3;

    fn cpu_model() -> String {
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string())
    }

    /// Seconds per product on the GPU: one warm-up (compiles the pipeline), then enough
    /// dispatches in one submit to last MIN_SECONDS.
    fn time_gpu(
        gpu: &Gpu,
        naive: bool,
        out: &gpu::Buffer,
        a: &gpu::Buffer,
        b: &gpu::Buffer,
        s: &BenchShape,
    ) -> Result<f64, GpuError> {
        let kernel = if naive { gpu::matmul::matmul_naive } else { gpu::matmul::matmul };
        let run = |reps: usize| -> Result<f64, GpuError> {
            let start = Instant::now();
            let mut batch = gpu.begin();
            for _ in 0..reps {
                kernel(&mut batch, out.view(), a.view(), b.view(), None, s.shape, false);
            }
            gpu.submit(batch);
            gpu.wait()?;
            Ok(start.elapsed().as_secs_f64())
        };
        let once = run(1)?;
        let reps = ((MIN_SECONDS / once).ceil() as usize).clamp(1, 50);
        Ok(run(reps)? / reps as f64)
    }

    /// Dense fp32 (non-tensor-core) peaks in GFLOP/s from vendors' datasheets, by a part
    /// of the adapter's name; KILN_FP32_PEAK_GFLOPS overrides. None: not known.
    fn fp32_peak_gflops(adapter: &str) -> Option<f64> {
        if let Some(v) = std::env::var("KILN_FP32_PEAK_GFLOPS").ok().and_then(|v| v.parse().ok()) {
            return Some(v);
        }
        const PEAKS: [(&str, f64); 8] = [
            ("H200", 66_900.0),
            ("H100 PCIe", 51_200.0),
            ("H100", 66_900.0),
            ("A100", 19_500.0),
            ("L4", 30_300.0),
            ("RTX 4090", 82_600.0),
            ("RTX 3090", 35_600.0),
            ("T4", 8_100.0),
        ];
        PEAKS.iter().find(|(name, _)| adapter.contains(name)).map(|&(_, peak)| peak)
    }

    fn time_cpu(out: &mut [f32], a: &[f32], b: &[f32], s: &BenchShape) -> f64 {
        let mut reps = 0;
        let start = Instant::now();
        while reps == 0 || start.elapsed().as_secs_f64() < MIN_SECONDS {
            cpu::matmul::matmul_gemm(out, a, b, None, s.shape, false);
            reps += 1;
        }
        start.elapsed().as_secs_f64() / reps as f64
    }

    /// Times every shape of [`matmul_shapes`] (or the first `limit`) three ways.
    pub fn bench_matmul(
        gpu: &Gpu,
        limit: Option<usize>,
        large: bool,
        progress: impl Fn(&str),
    ) -> Result<MatmulReport, GpuError> {
        let rng = &mut Rng::new(42);
        let peak = fp32_peak_gflops(&gpu.adapter_name());
        let mut results = Vec::new();
        for s in matmul_shapes(large).into_iter().take(limit.unwrap_or(usize::MAX)) {
            progress(&format!("{} ({} M={} N={} K={})", s.name, s.form, s.m, s.n, s.k));
            let a = rng.vec_f32(s.shape.a_len(), -1.0, 1.0);
            let b = rng.vec_f32(s.shape.b_len(), -1.0, 1.0);
            let (ga, gb, gout) = (gpu.upload(&a)?, gpu.upload(&b)?, gpu.zeros(s.shape.out_len())?);
            let tiled = time_gpu(gpu, false, &gout, &ga, &gb, &s)?;
            let tiled_out = pollster::block_on(gpu.read_f32(&gout))?;
            let naive = time_gpu(gpu, true, &gout, &ga, &gb, &s)?;
            let mut cpu_out = vec![0.0f32; s.shape.out_len()];
            let cpu = time_cpu(&mut cpu_out, &a, &b, &s);
            let reference: Vec<f64> = cpu_out.iter().map(|&x| x as f64).collect();
            let flops = s.shape.flops() / 1e9;
            results.push(MatmulResult {
                gflops_tiled: flops / tiled,
                tiled_share_of_peak: peak.map(|p| flops / tiled / p),
                gflops_naive: flops / naive,
                gflops_cpu: flops / cpu,
                tiled_over_naive: naive / tiled,
                tiled_over_cpu: cpu / tiled,
                tiled_max_rel_err: max_rel_err(&tiled_out, &reference),
                shape: s,
            });
        }
        let geomean = |f: &dyn Fn(&MatmulResult) -> f64| {
            (results.iter().map(|r| f(r).ln()).sum::<f64>() / results.len().max(1) as f64).exp()
        };
        Ok(MatmulReport {
            benchmark: "matmul",
            adapter: gpu.adapter_name(),
            cpu: cpu_model(),
            cpu_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_twin: "the CPU backend's product (crate/cpu/matmul.rs matmul_gemm: the gemm crate, all cores), f32",
            cpu_kernel: crate::cpu::matmul::gemm_kernel(),
            fp32_peak_gflops: peak,
            geomean_tiled_over_naive: geomean(&|r| r.tiled_over_naive),
            geomean_tiled_over_cpu: geomean(&|r| r.tiled_over_cpu),
            results,
        })
    }

    /// Training throughput of one preset on one backend.
    #[derive(Debug, Serialize)]
    pub struct TrainResult {
        pub preset: String,
        pub backend: String,
        pub params: usize,
        pub batch: usize,
        pub context: usize,
        pub vocab: usize,
        pub steps_timed: usize,
        /// Pretraining: B · T tokens per step (packed rows: all of them are counted).
        pub tokens_per_s: f64,
        /// SFT on the built-in instruction set, same model, batch and backend: B · T
        /// positions per step, prompts and padding included (the work a step does).
        pub sft_tokens_per_s: f64,
        pub sft_steps_timed: usize,
        /// The model's estimate of device memory for this run (params, grads, AdamW, activations).
        pub memory_estimate_bytes: u64,
        /// The most bytes of Kiln buffers alive at once (GPU only).
        pub memory_peak_bytes: Option<u64>,
        /// GPU only: kernel dispatches in one pretraining step, and the CPU milliseconds
        /// to record and submit it (the step's call, before waiting for the GPU).
        pub dispatches_per_step: Option<f64>,
        pub record_ms_per_step: Option<f64>,
        /// The same, with a new bind group, uniform buffer and compute pass for every
        /// dispatch (as before bind groups were reused): the recording cost saved.
        pub record_ms_per_step_without_reuse: Option<f64>,
    }

    #[derive(Debug, Serialize)]
    pub struct TrainReport {
        pub benchmark: &'static str,
        pub adapter: String,
        pub cpu: String,
        pub cpu_threads: usize,
        /// The gemm micro-kernels this CPU runs ([`crate::cpu::matmul::gemm_kernel`]).
        pub cpu_kernel: &'static str,
        pub corpus: String,
        pub results: Vec<TrainResult>,
    }

    /// Times optimizer steps of `run` until `min_seconds` have passed (at least one step,
    /// at most 50), each step synchronised by reading back the 2-element gradient norm.
    fn time_steps<B: crate::backend::Backend>(
        run: &mut crate::train::Trainer<B>,
        min_seconds: f64,
    ) -> Result<(usize, f64), KilnError> {
        let (steps, seconds, _) = time_steps_recording(run, min_seconds)?;
        Ok((steps, seconds))
    }

    /// [`time_steps`], with the seconds spent in the step calls themselves (recording and
    /// submitting, on the GPU backend) beside the total.
    fn time_steps_recording<B: crate::backend::Backend>(
        run: &mut crate::train::Trainer<B>,
        min_seconds: f64,
    ) -> Result<(usize, f64, f64), KilnError> {
        let start = Instant::now();
        let (mut steps, mut recording) = (0, 0.0);
        while steps == 0 || (start.elapsed().as_secs_f64() < min_seconds && steps < 50) {
            let call = Instant::now();
            pollster::block_on(run.train_one())?;
            recording += call.elapsed().as_secs_f64();
            pollster::block_on(run.be.read(&run.opt.norm))?;
            steps += 1;
        }
        Ok((steps, start.elapsed().as_secs_f64(), recording))
    }

    /// Tokens/s of the presets on the backends ("gpu" needs `gpu`, "cpu"), B = 8 rows of
    /// the preset's full context, on the default corpus with a 512-token BPE vocabulary.
    pub fn bench_train(
        gpu: Option<&Gpu>,
        presets: &[&str],
        backends: &[&str],
        progress: impl Fn(&str),
    ) -> Result<TrainReport, KilnError> {
        use crate::backend::{CpuBackend, GpuBackend};
        use crate::data::corpus::{default_corpus, Language, DEFAULT_SEED, DEFAULT_STORIES};
        use crate::model::GptConfig;
        use crate::tokenizer::{Tokenizer, TokenizerKind};
        use crate::train::sft::Sft;
        use crate::train::{TrainConfig, Trainer};

        let text = default_corpus(Language::English, DEFAULT_STORIES, DEFAULT_SEED);
        let docs = crate::data::documents(&text);
        let tokenizer_json = Tokenizer::train(&docs, TokenizerKind::Bpe, Some(512))?.to_json()?;
        let mut results = Vec::new();
        for &preset in presets {
            for backend in backends {
                if *backend == "gpu" && preset == "base" && gpu.is_some_and(Gpu::is_software) {
                    // one step takes many minutes there; the CPU backend's figure stands in
                    progress("skipping base on the gpu backend: a software adapter (lavapipe, SwiftShader)");
                    continue;
                }
                progress(&format!("timing {preset} on the {backend} backend"));
                let tokenizer = Tokenizer::from_json(&tokenizer_json)?;
                let model = GptConfig::preset(preset, tokenizer.vocab_size())?;
                let batch = 8;
                let cfg = TrainConfig {
                    steps: 1000,
                    batch_size: batch,
                    eval_every: u64::MAX,
                    sample_every: 0,
                    log_every: u64::MAX,
                    ..Default::default()
                };
                let sft_cfg = TrainConfig { ..cfg.clone() };
                let seed = cfg.seed;
                let sft_stage = |tok: &Tokenizer| Sft::builtin(tok, Language::English, model.block_size, seed);
                let min_seconds = if preset == "tiny" { 3.0 } else { 5.0 };
                // Pretraining, then SFT on the same model: (steps, seconds) each.
                let (steps, seconds, sft_steps, sft_seconds, peak, dispatches, record, unreused) = if *backend == "gpu"
                {
                    let gpu = gpu.ok_or_else(|| KilnError::Config("the gpu benchmark needs a GPU".into()))?;
                    gpu.reset_peak();
                    let mut run = Trainer::pretrain(GpuBackend::new(gpu.clone()), tokenizer, &text, model, cfg)?;
                    time_steps(&mut run, 0.0)?; // warm-up: compiles the pipelines
                    let before = gpu.dispatches();
                    let (steps, seconds, recording) = time_steps_recording(&mut run, min_seconds)?;
                    let dispatches = (gpu.dispatches() - before) as f64 / steps as f64;
                    let peak = gpu.memory().1;
                    gpu.set_reuse(false);
                    let (n, _, unreused) = time_steps_recording(&mut run, min_seconds / 2.0)?;
                    gpu.set_reuse(true);
                    let unreused = 1e3 * unreused / n as f64;
                    let stage = sft_stage(&run.tokenizer)?;
                    run.begin(Box::new(stage), sft_cfg)?;
                    let (sft_steps, sft_seconds) = time_steps(&mut run, min_seconds)?;
                    let record = 1e3 * recording / steps as f64;
                    (steps, seconds, sft_steps, sft_seconds, Some(peak), Some(dispatches), Some(record), Some(unreused))
                } else {
                    let mut run = Trainer::pretrain(CpuBackend::new(), tokenizer, &text, model, cfg)?;
                    let (steps, seconds) = time_steps(&mut run, min_seconds)?;
                    let stage = sft_stage(&run.tokenizer)?;
                    run.begin(Box::new(stage), sft_cfg)?;
                    let (sft_steps, sft_seconds) = time_steps(&mut run, min_seconds)?;
                    (steps, seconds, sft_steps, sft_seconds, None, None, None, None)
                };
                let tokens_per_s = (steps * batch * model.block_size) as f64 / seconds;
                progress(&format!("  {tokens_per_s:.0} tokens/s over {steps} steps (pretraining)"));
                results.push(TrainResult {
                    preset: preset.into(),
                    backend: backend.to_string(),
                    params: model.num_params(),
                    batch,
                    context: model.block_size,
                    vocab: model.vocab_size,
                    steps_timed: steps,
                    tokens_per_s,
                    sft_tokens_per_s: (sft_steps * batch * model.block_size) as f64 / sft_seconds,
                    sft_steps_timed: sft_steps,
                    memory_estimate_bytes: model.memory(batch, model.block_size).total(),
                    memory_peak_bytes: peak,
                    dispatches_per_step: dispatches,
                    record_ms_per_step: record,
                    record_ms_per_step_without_reuse: unreused,
                });
            }
        }
        Ok(TrainReport {
            benchmark: "train",
            adapter: gpu.map_or("none".into(), |g| g.adapter_name()),
            cpu: cpu_model(),
            cpu_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_kernel: crate::cpu::matmul::gemm_kernel(),
            corpus: format!("default English stories ({DEFAULT_STORIES}), BPE 512"),
            results,
        })
    }

    /// One backend's figures for the preference stages.
    #[derive(Debug, Serialize)]
    pub struct AlignResult {
        pub backend: String,
        pub answers_per_prompt: usize,
        /// Rollout tokens/s with the K answers decoded together, and one row at a time.
        pub rollout_tokens_per_s_batched: f64,
        pub rollout_tokens_per_s_one_row: f64,
        /// Seconds of one PPO update (one of `ppoEpochs` steps on a batch of rollouts,
        /// the first step's sampling and scoring not included) and one DPO update.
        pub ppo_update_s: f64,
        pub ppo_round_s: f64,
        pub dpo_update_s: f64,
    }

    #[derive(Debug, Serialize)]
    pub struct AlignReport {
        pub benchmark: &'static str,
        pub adapter: String,
        pub preset: String,
        pub results: Vec<AlignResult>,
    }

    /// The preference stages on the tiny preset (untrained: speed does not depend on
    /// the weights), on the GPU and the CPU backend: sampling K = 4 answers of 16 tokens
    /// to the built-in questions together and one row at a time, then PPO rounds and DPO
    /// updates with the stages' default batches.
    pub fn bench_align(gpu: &Gpu, progress: impl Fn(&str)) -> Result<AlignReport, KilnError> {
        use crate::backend::{CpuBackend, GpuBackend};
        let mut results = Vec::new();
        progress("timing the preference stages on the gpu backend");
        results.push(align_on(|| GpuBackend::new(gpu.clone()), "gpu")?);
        progress("timing the preference stages on the cpu backend");
        results.push(align_on(CpuBackend::new, "cpu")?);
        Ok(AlignReport { benchmark: "align", adapter: gpu.adapter_name(), preset: "tiny".into(), results })
    }

    fn align_on<B: crate::backend::Backend>(make: impl Fn() -> B, name: &str) -> Result<AlignResult, KilnError> {
        use crate::data::corpus::{default_corpus, Language, DEFAULT_SEED, DEFAULT_STORIES};
        use crate::data::instruct::{instruction_set, Split};
        use crate::data::preference::{Ranking, Verdict};
        use crate::model::{GptConfig, ScalarHeadKind};
        use crate::sample::{generate, SampleConfig};
        use crate::tokenizer::{Tokenizer, TokenizerKind};
        use crate::train::sft::chat_prompt;
        use crate::train::stages::begin_preference;
        use crate::train::{dpo::Dpo, ppo::Ppo, preference::PreferenceRows, StageKind, TrainConfig, Trainer};
        use pollster::block_on;

        let text = default_corpus(Language::English, DEFAULT_STORIES, DEFAULT_SEED);
        let tokenizer = Tokenizer::train(&crate::data::documents(&text), TokenizerKind::Bpe, Some(512))?;
        let config = GptConfig::preset("tiny", tokenizer.vocab_size())?;
        let questions = instruction_set(Language::English, Split::Train, 24);
        let mut run = Trainer::with_model(make(), tokenizer.clone(), config, None, 1)?;
        let k = 4;
        let sc = |seed| SampleConfig { max_tokens: 16, temperature: 1.0, top_k: 0, top_p: 1.0, seed };
        // batched: K answers per prompt together; then the same answers one row at a time
        let (mut batched_tokens, start) = (0, Instant::now());
        let mut rankings = Vec::new();
        for (i, q) in questions.iter().enumerate() {
            let cands = block_on(run.sample_answers(&q[..1], k, &sc(i as u64)))?;
            batched_tokens += cands.iter().map(|c| c.ids.len()).sum::<usize>();
            let answers: Vec<String> =
                cands.iter().map(|c| run.tokenizer.decode(c.content())).collect::<Result<_, _>>()?;
            // ranked by position: an untrained model's answers would tie under a rule
            let ranks = (1..=k as u32).collect();
            rankings.push(Ranking {
                prompt: q[..1].to_vec(),
                answers,
                ranks,
                verdict: Verdict::Ranked,
                annotator: None,
            });
        }
        let batched = batched_tokens as f64 / start.elapsed().as_secs_f64();
        let (mut single_tokens, start) = (0, Instant::now());
        for (i, q) in questions.iter().enumerate() {
            let ids = chat_prompt(&run.tokenizer, &q[..1], config.block_size)?;
            for r in 0..k {
                let (be, model, decoder) = run.generator()?;
                single_tokens +=
                    block_on(generate(be, model, decoder, &ids, &sc(i as u64 + r as u64), |_| true))?.len() + 1;
            }
        }
        let one_row = single_tokens as f64 / start.elapsed().as_secs_f64();

        let params = block_on(run.params())?;
        let mut rm = Trainer::with_model(make(), tokenizer.clone(), config, Some(&params), 1)?;
        block_on(rm.add_scalar_head(ScalarHeadKind::Reward, 2))?;
        let reward = block_on(rm.params())?;
        let mut policy = Trainer::with_model(make(), tokenizer.clone(), config, Some(&params), 1)?;
        let cfg = TrainConfig { steps: 1000, ..TrainConfig::for_stage(StageKind::Ppo) };
        let prompts = questions.iter().map(|q| q[..1].to_vec()).collect();
        let ppo = Box::new(Ppo::new(prompts, config.block_size, cfg.align.clone(), 1)?);
        block_on(begin_preference(&mut policy, ppo, cfg.clone(), &params, Some(&reward)))?;
        let epochs = cfg.align.ppo_epochs as usize;
        let (mut round, mut updates) = (Vec::new(), Vec::new());
        for i in 0..3 * epochs {
            let start = Instant::now();
            block_on(policy.train_one())?;
            block_on(policy.be.read(&policy.opt.norm))?;
            if i % epochs == 0 {
                round.push(start.elapsed().as_secs_f64())
            } else {
                updates.push(start.elapsed().as_secs_f64())
            }
        }
        let mut dpo = Trainer::with_model(make(), tokenizer.clone(), config, Some(&params), 1)?;
        let cfg = TrainConfig { steps: 1000, ..TrainConfig::for_stage(StageKind::Dpo) };
        let rows = PreferenceRows::split(&tokenizer, rankings, config.block_size, cfg.val_fraction, cfg.seed)?;
        dpo.begin(Box::new(Dpo::new(rows, cfg.align.dpo_beta, cfg.align.rpo_alpha)), cfg)?;
        block_on(dpo.train_one())?; // the first step also computes the reference log-probs
        let start = Instant::now();
        let n = 8;
        for _ in 0..n {
            block_on(dpo.train_one())?;
            block_on(dpo.be.read(&dpo.opt.norm))?;
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        Ok(AlignResult {
            backend: name.into(),
            answers_per_prompt: k,
            rollout_tokens_per_s_batched: batched,
            rollout_tokens_per_s_one_row: one_row,
            ppo_update_s: mean(&updates),
            ppo_round_s: mean(&round),
            dpo_update_s: start.elapsed().as_secs_f64() / n as f64,
        })
    }
}

/// Where a training step's time goes, per kernel entry point (GPU) or op (CPU, when `gpu`
/// is None), native only (`kiln bench profile [--backend cpu]`). On the GPU every dispatch
/// runs and is waited for on its own, so the total is slower than a real step, but the
/// shares show which kernels matter.
#[cfg(not(target_arch = "wasm32"))]
pub fn profile_step(
    gpu: Option<&crate::gpu::Gpu>,
    preset: &str,
    steps: usize,
) -> Result<Vec<(String, u32, f64)>, crate::error::KilnError> {
    use crate::backend::GpuBackend;
    let Some(gpu) = gpu else { return pollster::block_on(profile_cpu_step(preset, steps)) };
    let mut run = profiled_run(GpuBackend::new(gpu.clone()), preset)?;
    pollster::block_on(run.train_one())?; // compile pipelines first
    gpu.set_profiling(true);
    for _ in 0..steps {
        pollster::block_on(run.train_one())?;
    }
    Ok(by_time(gpu.set_profiling(false)))
}

/// The CPU backend's share of [`profile_step`], natively and in the browser (where one
/// worker takes the whole step): (op, calls, seconds) over `steps` steps, slowest first.
pub async fn profile_cpu_step(preset: &str, steps: usize) -> Result<Vec<(String, u32, f64)>, crate::error::KilnError> {
    let mut run = profiled_run(crate::backend::CpuBackend::new(), preset)?;
    run.train_one().await?;
    run.be.set_profiling(true);
    for _ in 0..steps {
        run.train_one().await?;
    }
    Ok(by_time(run.be.set_profiling(false)))
}

fn by_time(totals: Option<crate::gpu::KernelTimes>) -> Vec<(String, u32, f64)> {
    let mut rows: Vec<(String, u32, f64)> =
        totals.unwrap_or_default().into_iter().map(|(k, (n, s))| (k.to_string(), n, s)).collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    rows
}

/// A pretraining run of `preset` (batch 8) on 1,000 default stories, for profiling.
fn profiled_run<B: crate::backend::Backend>(
    be: B,
    preset: &str,
) -> Result<crate::train::Trainer<B>, crate::error::KilnError> {
    use crate::data::corpus::{default_corpus, Language, DEFAULT_SEED};
    use crate::model::GptConfig;
    use crate::tokenizer::{Tokenizer, TokenizerKind};
    use crate::train::{TrainConfig, Trainer};
    let text = default_corpus(Language::English, 1000, DEFAULT_SEED);
    let tokenizer = Tokenizer::train(&crate::data::documents(&text), TokenizerKind::Bpe, Some(512))?;
    let model = GptConfig::preset(preset, tokenizer.vocab_size())?;
    let cfg =
        TrainConfig { steps: 1000, eval_every: u64::MAX, sample_every: 0, log_every: u64::MAX, ..Default::default() };
    Trainer::pretrain(be, tokenizer, &text, model, cfg)
}

#[cfg(not(target_arch = "wasm32"))]
pub mod lora;
