//! The Kiln command line: pretrain, resume, sample, and benchmarks.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kiln::backend::{Backend, BackendKind, CpuBackend, GpuBackend};
use kiln::checkpoint::{load_model, read_dir, resume, resume_files, write_dir};
use kiln::data::corpus::{default_corpus, Language, DEFAULT_SEED, DEFAULT_STORIES};
use kiln::data::{documents, text_from_bytes};
use kiln::gpu::Gpu;
use kiln::model::{forward, Activations, Gpt, GptConfig};
use kiln::sample::{generate, Decoder, SampleConfig};
use kiln::tokenizer::{Tokenizer, TokenizerKind};
use kiln::train::{PretrainConfig, Pretrainer, Progress};
use pollster::block_on;

const USAGE: &str = "Kiln: train tiny GPT-style language models on your GPU.

usage:
  kiln pretrain [options]        train a model (on the built-in stories unless --corpus)
      --corpus FILE              UTF-8 text; documents separated by blank lines
      --lang en|zh               language of the built-in corpus (default en)
      --preset tiny|small|base   model size (default tiny)
      --tokenizer bpe|char       (default bpe)   --vocab N   vocabulary size (default 512)
      --steps N  --batch N  --accum N  --lr X  --seed N
      --log-every N  --eval-every N  --sample-every N (0: no samples)
      --log-json                 print each logged step as a JSON line on stdout
      --backend gpu|cpu          (default gpu)
      --out DIR                  checkpoint folder (default kiln-run); saved at every
                                 validation and at the end, loadable by transformers
  kiln resume DIR [--steps N]    continue a run exactly where its checkpoint stopped
  kiln sample --ckpt DIR [--prompt TEXT] [--tokens N] [--temperature X] [--top-k N]
              [--top-p X] [--seed N] [--backend gpu|cpu]
  kiln logits --ckpt DIR --text TEXT   token ids and logits as JSON (for checks)
  kiln corpus [--lang en|zh] [--stories N] [--seed N]   print the built-in stories
  kiln info                      the GPU adapter and its limits
  kiln bench matmul [--quick]    matmul GFLOP/s as JSON (tiled WGSL, naive WGSL, CPU)
  kiln bench train [--quick]     training tokens/s as JSON (tiny, small, base; GPU and CPU)
  kiln bench profile [--preset P]  GPU time per kernel over 3 training steps, as JSON";

type CliResult = Result<(), String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("pretrain") => options(&args[1..]).and_then(|o| pretrain(&o)),
        Some("resume") => match args.get(1) {
            Some(dir) if !dir.starts_with("--") => options(&args[2..]).and_then(|o| resume_cmd(Path::new(dir), &o)),
            _ => Err("resume needs the checkpoint folder: kiln resume DIR".into()),
        },
        Some("sample") => options(&args[1..]).and_then(|o| sample(&o)),
        Some("logits") => options(&args[1..]).and_then(|o| logits(&o)),
        Some("info") => info(),
        Some("corpus") => options(&args[1..]).and_then(|o| corpus(&o)),
        Some("bench") => match args.get(1).map(String::as_str) {
            Some("matmul") => options(&args[2..]).and_then(|o| bench_matmul(o.contains_key("quick"))),
            Some("train") => options(&args[2..]).and_then(|o| bench_train(o.contains_key("quick"))),
            Some("profile") => {
                options(&args[2..]).and_then(|o| bench_profile(o.get("preset").map_or("tiny", String::as_str)))
            }
            _ => Err("bench what? kiln bench matmul | kiln bench train".into()),
        },
        Some("help" | "--help" | "-h") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` pairs (and bare `--flag`s, stored as "").
fn options(args: &[String]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut i = 0;
    while i < args.len() {
        let key = args[i].strip_prefix("--").ok_or_else(|| format!("unexpected argument {:?}", args[i]))?;
        let value = match args.get(i + 1) {
            Some(v) if !v.starts_with("--") => {
                i += 1;
                v.clone()
            }
            _ => String::new(),
        };
        out.insert(key.to_string(), value);
        i += 1;
    }
    Ok(out)
}

fn get<T: std::str::FromStr>(o: &HashMap<String, String>, key: &str, default: T) -> Result<T, String> {
    match o.get(key) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| format!("--{key} {v:?} is not a valid value")),
    }
}

fn backend_kind(o: &HashMap<String, String>) -> Result<BackendKind, String> {
    match o.get("backend").map(String::as_str) {
        None | Some("gpu") => Ok(BackendKind::Gpu),
        Some("cpu") => Ok(BackendKind::Cpu),
        Some(other) => Err(format!("--backend {other:?}: choose gpu or cpu")),
    }
}

fn open_gpu() -> Result<Gpu, String> {
    block_on(Gpu::new()).map_err(|e| e.to_string())
}

fn pretrain(o: &HashMap<String, String>) -> CliResult {
    let text = match o.get("corpus") {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
            text_from_bytes(&bytes).map_err(|e| format!("{path}: {e}"))?
        }
        None => {
            let language = match o.get("lang").map(String::as_str) {
                None | Some("en") => Language::English,
                Some("zh") => Language::Chinese,
                Some(other) => return Err(format!("--lang {other:?}: choose en or zh")),
            };
            default_corpus(language, DEFAULT_STORIES, DEFAULT_SEED)
        }
    };
    let kind = match o.get("tokenizer").map(String::as_str) {
        None | Some("bpe") => TokenizerKind::Bpe,
        Some("char") => TokenizerKind::Char,
        Some(other) => return Err(format!("--tokenizer {other:?}: choose bpe or char")),
    };
    let vocab =
        if kind == TokenizerKind::Char && !o.contains_key("vocab") { None } else { Some(get(o, "vocab", 512usize)?) };
    let defaults = PretrainConfig::default();
    let cfg = PretrainConfig {
        steps: get(o, "steps", defaults.steps)?,
        batch_size: get(o, "batch", defaults.batch_size)?,
        grad_accum: get(o, "accum", defaults.grad_accum)?,
        lr: get(o, "lr", defaults.lr)?,
        min_lr: get(o, "lr", defaults.lr)? / 10.0,
        seed: get(o, "seed", defaults.seed)?,
        log_every: get(o, "log-every", defaults.log_every)?,
        eval_every: get(o, "eval-every", defaults.eval_every)?,
        sample_every: get(o, "sample-every", defaults.sample_every)?,
        ..defaults
    };
    let out = PathBuf::from(o.get("out").cloned().unwrap_or_else(|| "kiln-run".into()));
    eprintln!("training a {kind:?} tokenizer on {} characters …", text.chars().count());
    let tokenizer = Tokenizer::train(&documents(&text), kind, vocab).map_err(|e| e.to_string())?;
    let preset = o.get("preset").map_or("tiny", String::as_str);
    let model = GptConfig::preset(preset, tokenizer.vocab_size()).map_err(|e| e.to_string())?;
    eprintln!(
        "model {preset}: {} layers, {} heads, {} wide, context {}, vocabulary {}: {:.2}M parameters; needs {}",
        model.n_layer,
        model.n_head,
        model.n_embd,
        model.block_size,
        model.vocab_size,
        model.num_params() as f64 / 1e6,
        model.memory(cfg.batch_size, model.block_size)
    );
    match backend_kind(o)? {
        BackendKind::Gpu => {
            let run = Pretrainer::new(GpuBackend::new(open_gpu()?), tokenizer, &text, model, cfg)
                .map_err(|e| e.to_string())?;
            train_loop(run, &text, &out, o.contains_key("log-json"))
        }
        BackendKind::Cpu => {
            let run = Pretrainer::new(CpuBackend::new(), tokenizer, &text, model, cfg).map_err(|e| e.to_string())?;
            train_loop(run, &text, &out, o.contains_key("log-json"))
        }
    }
}

fn resume_cmd(dir: &Path, o: &HashMap<String, String>) -> CliResult {
    let files = read_dir(dir).map_err(|e| e.to_string())?;
    match backend_kind(o)? {
        BackendKind::Gpu => {
            let (mut run, corpus) = resume(GpuBackend::new(open_gpu()?), &files).map_err(|e| e.to_string())?;
            run.cfg.steps = get(o, "steps", run.cfg.steps)?;
            train_loop(run, &corpus, dir, o.contains_key("log-json"))
        }
        BackendKind::Cpu => {
            let (mut run, corpus) = resume(CpuBackend::new(), &files).map_err(|e| e.to_string())?;
            run.cfg.steps = get(o, "steps", run.cfg.steps)?;
            train_loop(run, &corpus, dir, o.contains_key("log-json"))
        }
    }
}

fn fmt_time(s: f64) -> String {
    let s = s.max(0.0) as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

fn progress_line(p: &Progress, last_loss: Option<f32>) -> String {
    let width = 24;
    let filled = (width as u64 * p.step / p.steps.max(1)) as usize;
    format!(
        "[{}{}] step {}/{} loss {} lr {:.1e} {:.0} tok/s ETA {}",
        "#".repeat(filled),
        ".".repeat(width - filled),
        p.step,
        p.steps,
        last_loss.map_or("-".into(), |l| format!("{l:.4}")),
        p.lr,
        p.tokens_per_s,
        fmt_time(p.eta_s)
    )
}

fn train_loop<B: Backend>(mut run: Pretrainer<B>, corpus: &str, out: &Path, json: bool) -> CliResult {
    let tty = std::io::stderr().is_terminal();
    eprintln!(
        "backend {}; {} training rows, {} validation rows",
        run.be.describe(),
        run.data.train.len(),
        run.data.val.len()
    );
    let mut last_loss = None;
    while !run.done() {
        let p = block_on(run.train_one()).map_err(|e| e.to_string())?;
        last_loss = p.loss.or(last_loss);
        if json && (p.loss.is_some() || p.val_loss.is_some()) {
            println!("{}", serde_json::json!({"step": p.step, "loss": p.loss, "valLoss": p.val_loss}));
        }
        if tty {
            eprint!("\r{}", progress_line(&p, last_loss));
        } else if p.loss.is_some() {
            eprintln!("{}", progress_line(&p, last_loss));
        }
        if let Some(val) = p.val_loss {
            let files = block_on(resume_files(&mut run, corpus)).map_err(|e| e.to_string())?;
            write_dir(out, &files).map_err(|e| e.to_string())?;
            eprintln!(
                "{}step {}: validation loss {val:.4}; saved {}",
                if tty { "\n" } else { "" },
                p.step,
                out.display()
            );
        }
        if let Some(sample) = p.sample {
            eprintln!("sample: {sample}");
        }
    }
    eprintln!("done: {} steps; the model is in {} (kiln sample --ckpt {})", run.step, out.display(), out.display());
    Ok(())
}

fn load<B: Backend>(be: &mut B, dir: &str) -> Result<(Gpt<B>, Tokenizer), String> {
    let files = read_dir(Path::new(dir)).map_err(|e| e.to_string())?;
    let loaded = load_model(&files).map_err(|e| e.to_string())?;
    let model = Gpt::from_params(be, loaded.config, &loaded.params).map_err(|e| e.to_string())?;
    Ok((model, loaded.tokenizer))
}

fn sample(o: &HashMap<String, String>) -> CliResult {
    let dir = o.get("ckpt").ok_or("sample needs --ckpt DIR")?;
    let cfg = SampleConfig {
        max_tokens: get(o, "tokens", 100usize)?,
        temperature: get(o, "temperature", 0.8f32)?,
        top_k: get(o, "top-k", 40usize)?,
        top_p: get(o, "top-p", 1.0f32)?,
        seed: get(o, "seed", 0u64)?,
    };
    let prompt = o.get("prompt").cloned().unwrap_or_default();
    match backend_kind(o)? {
        BackendKind::Gpu => sample_with(&mut GpuBackend::new(open_gpu()?), dir, &prompt, &cfg),
        BackendKind::Cpu => sample_with(&mut CpuBackend::new(), dir, &prompt, &cfg),
    }
}

fn sample_with<B: Backend>(be: &mut B, dir: &str, prompt: &str, cfg: &SampleConfig) -> CliResult {
    let (model, tokenizer) = load(be, dir)?;
    let decoder = Decoder::new(be, &model).map_err(|e| e.to_string())?;
    let mut ids = vec![kiln::tokenizer::BOS];
    ids.extend(tokenizer.encode(prompt).map_err(|e| e.to_string())?);
    print!("{prompt}");
    let mut shown = String::new();
    let mut out = Vec::new();
    block_on(generate(be, &model, &decoder, &ids, cfg, |id| {
        // print as text arrives (a token may end inside a character: print whole text only)
        out.push(id);
        if let Ok(text) = tokenizer.decode(&out) {
            if text.len() > shown.len() && text.starts_with(&shown) && !text.ends_with('\u{FFFD}') {
                print!("{}", &text[shown.len()..]);
                let _ = std::io::stdout().flush();
                shown = text;
            }
        }
        true
    }))
    .map_err(|e| e.to_string())?;
    let text = tokenizer.decode(&out).map_err(|e| e.to_string())?;
    println!("{}", text.get(shown.len()..).unwrap_or(""));
    Ok(())
}

fn logits(o: &HashMap<String, String>) -> CliResult {
    let dir = o.get("ckpt").ok_or("logits needs --ckpt DIR")?;
    let text = o.get("text").ok_or("logits needs --text TEXT")?;
    let be = &mut GpuBackend::new(open_gpu()?);
    let (model, tokenizer) = load(be, dir)?;
    let mut ids = vec![kiln::tokenizer::BOS];
    ids.extend(tokenizer.encode(text).map_err(|e| e.to_string())?);
    ids.truncate(model.config.block_size);
    let acts = Activations::new(be, &model.config, 1, ids.len()).map_err(|e| e.to_string())?;
    be.write_u32(&acts.tokens, 0, &ids);
    be.write_u32(&acts.targets, 0, &ids);
    be.write(&acts.weights, 0, &vec![0.0; ids.len()]);
    forward(be, &model, &acts);
    let logits = block_on(be.read(&acts.logits)).map_err(|e| e.to_string())?;
    let json = serde_json::json!({ "ids": ids, "vocab_size": model.config.vocab_size, "logits": logits });
    println!("{json}");
    Ok(())
}

fn corpus(o: &HashMap<String, String>) -> CliResult {
    let language = match o.get("lang").map(String::as_str) {
        None | Some("en") => Language::English,
        Some("zh") => Language::Chinese,
        Some(other) => return Err(format!("--lang {other:?}: choose en or zh")),
    };
    println!("{}", default_corpus(language, get(o, "stories", DEFAULT_STORIES)?, get(o, "seed", DEFAULT_SEED)?));
    Ok(())
}

fn info() -> CliResult {
    let gpu = open_gpu()?;
    let l = gpu.limits();
    println!("adapter: {}", gpu.adapter_name());
    println!("max storage buffer binding: {} MiB", l.max_storage_buffer_binding_size >> 20);
    println!("max buffer size: {} MiB", l.max_buffer_size >> 20);
    println!("storage buffers per shader stage: {}", l.max_storage_buffers_per_shader_stage);
    println!("workgroup storage: {} bytes", l.max_compute_workgroup_storage_size);
    println!("invocations per workgroup: {}", l.max_compute_invocations_per_workgroup);
    Ok(())
}

fn bench_matmul(quick: bool) -> CliResult {
    let gpu = open_gpu()?;
    let report =
        kiln::bench::bench_matmul(&gpu, quick.then_some(3), |s| eprintln!("timing {s}")).map_err(|e| e.to_string())?;
    println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    Ok(())
}

fn bench_profile(preset: &str) -> CliResult {
    let gpu = open_gpu()?;
    let rows = kiln::bench::profile_step(&gpu, preset, 3).map_err(|e| e.to_string())?;
    let total: f64 = rows.iter().map(|r| r.2).sum();
    let json: Vec<_> = rows
        .iter()
        .map(|(k, n, s)| serde_json::json!({"kernel": k, "dispatches": n, "seconds": s, "share": s / total}))
        .collect();
    println!("{}", serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?);
    Ok(())
}

fn bench_train(quick: bool) -> CliResult {
    let gpu = open_gpu()?;
    let report = kiln::bench::bench_train(&gpu, quick, |s| eprintln!("{s}")).map_err(|e| e.to_string())?;
    println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    Ok(())
}
