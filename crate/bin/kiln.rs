//! The Kiln command line: pretrain, fine-tune, resume, chat, sample, and benchmarks.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kiln::backend::{Backend, BackendChoice, BackendKind, CpuBackend, GpuBackend};
use kiln::checkpoint::{is_checkpoint_file, load_model, read_dir, write_dir};
use kiln::data::agreement::{agreement, combine, Agreement, Combine};
use kiln::data::chat::{render, render_prompt, Conversation, Message, Role};
use kiln::data::corpus::{default_corpus, Language, DEFAULT_SEED, DEFAULT_STORIES};
use kiln::data::instruct::{answer_matches, has_style, instruction_set, scripted_ranks, Split};
use kiln::data::jsonl::{read_conversations, MAX_JSONL_BYTES};
use kiln::data::preference::{rankings_jsonl, read_rankings, Ranking, Verdict, MAX_ANNOTATOR_CHARS};
use kiln::data::Files;
use kiln::data::{documents, text_from_bytes};
use kiln::error::KilnError;
use kiln::gpu::Gpu;
use kiln::inspect;
use kiln::model::GptConfig;
use kiln::model::ScalarHeadKind;
use kiln::sample::{generate, SampleConfig};
use kiln::session::{Session, StageInput};
use kiln::tokenizer::{Tokenizer, TokenizerKind};
use kiln::train::sft::answer_report;
use kiln::train::stage::{Frozen, Input};
use kiln::train::{Progress, StageKind, TrainConfig, Trainer};
use kiln::with_run;
use pollster::block_on;

const USAGE: &str = "Kiln: train tiny GPT-style language models on your GPU.

usage:
  kiln pretrain [options]        train a model (on the built-in stories unless --corpus)
      --corpus FILE              UTF-8 text; documents separated by blank lines
      --lang en|zh               language of the built-in corpus (default en)
      --preset tiny|small|base   model size (default tiny)
      --tokenizer bpe|char       (default bpe)   --vocab N   vocabulary size (default 512)
      --out DIR                  checkpoint folder (default kiln-run); saved at every
                                 validation and at the end, loadable by transformers;
                                 must be new, empty, or a Kiln checkpoint
  kiln sft --ckpt DIR [--data FILE.jsonl] [--lang en|zh] --out DIR   supervised
                                 fine-tuning on conversations (TRL's prompt/completion or
                                 messages JSONL; the built-in story questions by default)
      --eval N                   held-out questions answered before and after, exact
                                 match (default 100 on the built-in set, 0 with --data)
  kiln candidates --ckpt DIR --out FILE.jsonl [--prompts FILE.jsonl | --lang en|zh]
              [--n N] [--k K] [--rank script]   K answers (2–6, default 4) sampled together
                                 for each of N prompts (the built-in training questions by
                                 default), written as rankings to fill in (rank 1 best;
                                 unranked lines are skipped); --rank script ranks the
                                 built-in questions' answers by a rule (correct and
                                 exclaimed first), standing in for a person
  kiln agreement FILES… [--json] [--combine union|majority|NAME --out FILE.jsonl]
                                 several people's rankings, a file each (or named by the
                                 lines' \"annotator\"): counts, pairwise agreement, Kendall's
                                 τ-b, Krippendorff's α (ordinal), the prompts they disagree
                                 on; --combine writes the rankings to train on: everyone's,
                                 the majority's (mean rank), or one person's
  kiln reward --ckpt SFT_DIR --rankings FILE.jsonl --out DIR   a reward model from the
                                 rankings (or TRL prompt/chosen/rejected pairs)
  kiln dpo --ckpt SFT_DIR --rankings FILE.jsonl --out DIR   align with DPO on the pairs
  kiln ppo --ckpt SFT_DIR --reward RM_DIR --out DIR [--rankings FILE | --prompts FILE]
                                 align with PPO against the reward model (prompts from the
                                 rankings, a JSONL file, or the built-in questions)
  kiln rloo|grpo --ckpt SFT_DIR --rule FILE.json --out DIR [--prompts FILE | --rankings FILE]
                                 align with RLOO or GRPO on a rule, no reward model and no
                                 ranking: the rule is a JSON list of checks with weights,
                                 [{\"check\":\"endsWith\",\"text\":\"!\"},{\"check\":\"equalsReference\"}]
                                 (contains, notContains, endsWith, matches (a regular
                                 expression), maxWords, equalsReference: the prompts' own
                                 answers, from --prompts or the built-in questions)
      --eval N                   (dpo, ppo, rloo, grpo) held-out built-in questions measured
                                 before and after: exact match and the scripted rule's rate
  training options (every stage): every field of the stage's training
  configuration, as --kebab-case (kiln help STAGE lists them with their defaults), e.g.
      --steps N  --batch-size N (--batch)  --grad-accum N (--accum)  --lr X  --seed N
      --log-every N  --eval-every N  --sample-every N (0: no samples)
      --dpo-beta X (--beta)  --rpo-alpha X  --reward-center X  --kl-coef X  --clip-range X
      --log-json                 print each logged step as a JSON line on stdout
      --backend auto|gpu|cpu     (default auto: both timed on the model, the faster
                                 one used; every command that runs a model takes it)
  an unknown or misspelt option is refused, naming the closest one
  kiln config STAGE [options]    the training configuration those options give, as JSON
  kiln resume DIR [--steps N]    continue a run, in its stage, exactly where it stopped
  kiln chat --ckpt DIR [--system TEXT] [--temperature X]   chat on stdin (/reset starts over)
  kiln sample --ckpt DIR [--prompt TEXT] [--tokens N] [--temperature X] [--top-k N]
              [--top-p X] [--seed N] [--backend auto|gpu|cpu]
  kiln logits --ckpt DIR --text TEXT [--top-k 10] [--temperature 1]
                                       ids, logits and the next token's probabilities as JSON
  kiln chat-ids --ckpt DIR --json MESSAGES [--generation-prompt]   the chat template's
                                 ids and supervised flags as JSON (for checks)
  kiln pairs --rankings FILE.jsonl --out PAIRS.jsonl   rankings as TRL's preference pairs
                                 ({prompt, chosen, rejected}, conversational) for `trl dpo`
                                 and `trl reward`
  kiln score --ckpt RM_DIR --data FILE.jsonl   a reward model's score of each pair's
                                 chosen and rejected answer (rankings or TRL pairs), a JSON
                                 line each: {chosen_ids, chosen, rejected_ids, rejected}
  kiln export --ckpt DIR --gguf FILE.gguf [--type f32|f16|q8_0]   the model (adapters
                                 merged) as one GGUF file for llama.cpp and Ollama: its
                                 tokenizer and chat template inside (default type f16)
  kiln corpus [--lang en|zh] [--stories N] [--seed N]   print the built-in stories
  kiln info                      the GPU adapter and its limits
  kiln bench matmul [--quick] [--large]   matmul GFLOP/s as JSON (tiled WGSL, naive
                                 WGSL, the CPU backend's gemm; --large adds 2048³, 4096³)
  kiln bench train [--quick] [--presets a,b] [--backend gpu|cpu]   training tokens/s as
                                 JSON (pretraining and SFT; GPU and CPU)
  kiln bench align                rollout tokens/s (K answers together vs one row at a
                                 time) and the time of a PPO and a DPO update, as JSON
  kiln bench lora [--batch 4] [--steps 3] [--no-gpu]   LoRA on SmolLM2-135M's shape
                                 (context 512): memory estimated and measured (GPU
                                 backend), LoRA and full; LoRA SFT tokens/s on the CPU
  kiln bench profile [--preset P] [--backend gpu|cpu]   time per kernel (GPU) or op (CPU)
                                 over 3 training steps, as JSON";

type CliResult = Result<(), KilnError>;
type Options = HashMap<String, String>;

/// Mesa's Vulkan loader looks for a Wayland display at startup and prints "error:
/// XDG_RUNTIME_DIR is invalid or not set" twice when the variable is missing (a server, a
/// container, a CI job): harmless, and alarming. Point it at the temporary folder, where no
/// display is found, quietly.
fn quiet_vulkan_loader() {
    let usable =
        std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).is_absolute() && Path::new(&d).is_dir());
    if !usable {
        // SAFETY: called first thing in main, before any other thread exists to read the
        // environment concurrently.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
}

/// Runs the command `args` names.
fn run(args: &[String]) -> CliResult {
    let rest = args.get(1..).unwrap_or_default();
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        match args.first().map(|s| StageKind::parse(s)) {
            Some(Ok(stage)) => println!("{}", stage_help(stage)),
            _ => println!("{USAGE}"),
        }
        return Ok(());
    }
    match args.first().map(String::as_str) {
        Some(name) if StageKind::parse(name).is_ok() => {
            let stage = StageKind::parse(name)?;
            let o = options(name, rest, &stage_flags(stage), Some(stage))?;
            match stage.def().input {
                Input::Corpus => pretrain(&o),
                _ => fine_tune(&o, stage),
            }
        }
        Some("resume") => match args.get(1) {
            Some(dir) if !dir.starts_with("--") => {
                options("resume", &args[2..], &["steps", "log-json", "backend"], None)
                    .and_then(|o| resume_cmd(Path::new(dir), &o))
            }
            _ => Err(usage("resume needs the checkpoint folder: kiln resume DIR")),
        },
        Some("config") => match args.get(1).map(|s| StageKind::parse(s)) {
            Some(Ok(stage)) => {
                options("config", &args[2..], &[], Some(stage)).and_then(|o| print_json(&train_config(&o, stage)?))
            }
            _ => Err(usage(&format!("config of which stage? kiln config {} [options]", stage_names().join("|")))),
        },
        Some("candidates") => {
            const FLAGS: &[&str] = &[
                "ckpt",
                "out",
                "prompts",
                "lang",
                "n",
                "k",
                "rank",
                "backend",
                "online",
                "save",
                "every",
                "update-steps",
            ];
            options("candidates", rest, &[FLAGS, SAMPLING].concat(), None).and_then(|o| candidates(&o))
        }
        Some("agreement") => agreement_cmd(rest),
        Some("chat") => {
            options("chat", rest, &[&["ckpt", "system", "backend"], SAMPLING].concat(), None).and_then(|o| chat(&o))
        }
        Some("chat-ids") => {
            options("chat-ids", rest, &["json", "ckpt", "generation-prompt"], None).and_then(|o| chat_ids(&o))
        }
        Some("sample") => {
            options("sample", rest, &[&["ckpt", "prompt", "backend"], SAMPLING].concat(), None).and_then(|o| sample(&o))
        }
        Some("logits") => {
            options("logits", rest, &["ckpt", "text", "top-k", "temperature", "backend"], None).and_then(|o| logits(&o))
        }
        Some("pairs") => options("pairs", rest, &["rankings", "out"], None).and_then(|o| pairs(&o)),
        Some("score") => options("score", rest, &["ckpt", "data", "backend"], None).and_then(|o| score(&o)),
        Some("export") => options("export", rest, &["ckpt", "gguf", "type"], None).and_then(|o| export(&o)),
        Some("info") => options("info", rest, &[], None).and_then(|_| info()),
        Some("corpus") => options("corpus", rest, &["lang", "stories", "seed"], None).and_then(|o| corpus(&o)),
        Some("bench") => {
            let rest = args.get(2..).unwrap_or_default();
            match args.get(1).map(String::as_str) {
                Some("matmul") => options("bench matmul", rest, &["quick", "large"], None)
                    .and_then(|o| bench_matmul(o.contains_key("quick"), o.contains_key("large"))),
                Some("train") => {
                    options("bench train", rest, &["quick", "presets", "backend"], None).and_then(|o| bench_train(&o))
                }
                Some("align") => options("bench align", rest, &[], None).and_then(|_| bench_align()),
                Some("lora") => {
                    options("bench lora", rest, &["batch", "steps", "no-gpu"], None).and_then(|o| bench_lora(&o))
                }
                Some("profile") => {
                    options("bench profile", rest, &["preset", "backend"], None).and_then(|o| bench_profile(&o))
                }
                _ => Err(usage("bench what? kiln bench matmul | train | align | lora | profile")),
            }
        }
        Some("help" | "--help" | "-h") | None => {
            match args.get(1).map(|s| StageKind::parse(s)) {
                Some(Ok(stage)) => println!("{}", stage_help(stage)),
                _ => println!("{USAGE}"),
            }
            Ok(())
        }
        Some(other) => Err(usage(&format!("unknown command {other:?}\n\n{USAGE}"))),
    }
}

fn main() -> ExitCode {
    quiet_vulkan_loader();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = run(&args);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A mistake in the command line.
fn usage(m: &str) -> KilnError {
    KilnError::Config(m.to_string())
}

/// An I/O error with the path it concerns.
fn io_error(path: &Path) -> impl Fn(std::io::Error) -> KilnError + '_ {
    move |e| KilnError::Io(format!("{}: {e}", path.display()))
}

/// A text or JSONL file's bytes, refused by its size before it is read.
fn read_text_file(path: &str, cap: u64, what: &str) -> Result<Vec<u8>, KilnError> {
    let meta = std::fs::metadata(path).map_err(io_error(Path::new(path)))?;
    kiln::data::check_file_size(meta.len(), cap, what).map_err(|e| e.at(path))?;
    std::fs::read(path).map_err(io_error(Path::new(path)))
}

/// The flags that take no value.
const SWITCHES: &[&str] = &["log-json", "quick", "large", "generation-prompt", "online"];

/// The sampling flags of the commands that generate (SampleConfig's fields).
const SAMPLING: &[&str] = &["tokens", "temperature", "top-k", "top-p", "seed"];

/// The stages' names, as commands.
fn stage_names() -> Vec<&'static str> {
    StageKind::ALL.iter().map(|k| k.name()).collect()
}

/// The flags a training command takes besides its training options: those of the input
/// its definition asks for, and `--reward` when it reads a reward model.
fn stage_flags(stage: StageKind) -> Vec<&'static str> {
    let mut flags = match stage.def().input {
        Input::Corpus => vec!["corpus", "preset", "tokenizer", "vocab"],
        Input::Conversations => vec!["ckpt", "data", "eval"],
        Input::Rankings => vec!["ckpt", "rankings", "eval"],
        Input::Feedback => vec!["ckpt", "data", "eval"],
        Input::Prompts => vec!["ckpt", "rankings", "prompts", "eval"],
    };
    if stage.def().frozen.iter().any(|f| matches!(f, Frozen::Reward | Frozen::RewardIfAny)) {
        flags.push("reward");
    }
    flags.extend(["lang", "out", "log-json", "backend"]);
    flags
}

/// Short names kept for training options: the CLI's older flags, and TRL's `beta` for DPO.
const ALIASES: &[(&str, &str)] = &[("batch", "batchSize"), ("accum", "gradAccum"), ("beta", "dpoBeta")];

/// A training option's flag: `batchSize` → `batch-size`.
fn kebab(camel: &str) -> String {
    camel
        .chars()
        .flat_map(|c| if c.is_ascii_uppercase() { vec!['-', c.to_ascii_lowercase()] } else { vec![c] })
        .collect()
}

/// The training options `stage` takes, as (flag, TrainConfig key, default): every field of
/// the stage's TrainConfig but the preference options of other stages, so the flags follow
/// the one definition in `train::trainer`.
fn training_flags(stage: StageKind) -> Vec<(String, String, serde_json::Value)> {
    let defaults = TrainConfig::for_stage(stage);
    let align_keys = match serde_json::to_value(&defaults.align).expect("JSON") {
        serde_json::Value::Object(m) => m.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let own = stage.options();
    let mut flags: Vec<_> = match serde_json::to_value(&defaults).expect("JSON") {
        serde_json::Value::Object(m) => m
            .into_iter()
            .filter(|(key, _)| !align_keys.contains(key) || own.contains(&key.as_str()))
            .map(|(key, value)| (kebab(&key), key, value))
            .collect(),
        _ => Vec::new(),
    };
    for (alias, key) in ALIASES {
        if let Some(value) = flags.iter().find(|(_, k, _)| k == key).map(|(_, _, v)| v.clone()) {
            flags.push((alias.to_string(), key.to_string(), value));
        }
    }
    flags
}

/// `kiln help STAGE`: the stage's training options with their defaults.
fn stage_help(stage: StageKind) -> String {
    let mut lines = vec![format!(
        "kiln {stage}: flags {}; and its training options (defaults for {stage}):",
        stage_flags(stage).iter().map(|f| format!("--{f}")).collect::<Vec<_>>().join(" ")
    )];
    for (flag, key, value) in training_flags(stage) {
        let alias = if kebab(&key) == flag { String::new() } else { format!(" (= --{})", kebab(&key)) };
        lines.push(format!("  --{flag:<22} {value}{alias}"));
    }
    lines.join("\n")
}

/// Edit distance, for naming the flag a misspelt one meant.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// `--name value` pairs (and bare `--flag`s, stored as "") of command `command`, which
/// takes `flags` and, for a training stage, that stage's training options. Any other flag
/// is refused by name, with the closest known one: a misspelt option must not train with
/// its default as if it had been said.
fn options(command: &str, args: &[String], flags: &[&str], stage: Option<StageKind>) -> Result<Options, KilnError> {
    let mut known: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    if let Some(stage) = stage {
        known.extend(training_flags(stage).into_iter().map(|(flag, _, _)| flag));
    }
    let mut out = HashMap::new();
    let mut i = 0;
    while i < args.len() {
        let key = args[i].strip_prefix("--").ok_or_else(|| usage(&format!("unexpected argument {:?}", args[i])))?;
        if !known.iter().any(|k| k == key) {
            let closest = known.iter().min_by_key(|k| distance(k, key)).filter(|k| distance(k, key) <= 3);
            let hint = match (closest, stage) {
                // TRL's β is DPO's; PPO's KL weight is its own option
                _ if key == "beta" => "; --beta is DPO's β (kiln dpo --beta); PPO's KL weight is --kl-coef".into(),
                (Some(k), _) => format!("; did you mean --{k}?"),
                (None, Some(stage)) => format!("; kiln help {stage} lists them"),
                (None, None) => String::new(),
            };
            return Err(usage(&format!("kiln {command} has no option --{key}{hint}")));
        }
        let value = match args.get(i + 1) {
            Some(v) if !v.starts_with("--") => {
                i += 1;
                v.clone()
            }
            // a switch stands alone; any other flag without its value would read as ""
            _ if SWITCHES.contains(&key) => String::new(),
            _ => return Err(usage(&format!("--{key} needs a value"))),
        };
        out.insert(key.to_string(), value);
        i += 1;
    }
    Ok(out)
}

fn get<T: std::str::FromStr>(o: &Options, key: &str, default: T) -> Result<T, KilnError> {
    match o.get(key) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| usage(&format!("--{key} {v:?} is not a valid value"))),
    }
}

/// `--backend` of the benchmarks, which time one backend each (default gpu).
fn backend_kind(o: &Options) -> Result<BackendKind, KilnError> {
    match o.get("backend").map(|b| b.parse()).transpose()?.unwrap_or(BackendChoice::Gpu) {
        BackendChoice::Gpu => Ok(BackendKind::Gpu),
        BackendChoice::Cpu => Ok(BackendKind::Cpu),
        BackendChoice::Auto => Err(usage("--backend auto: a benchmark times one backend; choose gpu or cpu")),
    }
}

fn language(o: &Options) -> Result<Language, KilnError> {
    match o.get("lang") {
        None => Ok(Language::English),
        Some(name) => name.parse().map_err(|_| usage(&format!("--lang {name:?}: choose en or zh"))),
    }
}

/// `$body` with `$be` bound to the backend the options ask for.
/// `$spec` is the model's (tokenizer, config), which `auto` times on each backend.
macro_rules! with_backend {
    ($o:expr, $spec:expr, $be:ident => $body:expr) => {
        match choose_backend($o, || $spec)? {
            (BackendKind::Gpu, Some(gpu)) => {
                let $be = GpuBackend::new(gpu);
                $body
            }
            _ => {
                let $be = CpuBackend::new();
                $body
            }
        }
    };
}

/// `--backend gpu|cpu`, or `auto` (the default): the faster of the two for this model,
/// timed on it (a second or two), with both figures printed.
fn choose_backend(
    o: &Options,
    spec: impl FnOnce() -> Result<(Tokenizer, GptConfig), KilnError>,
) -> Result<(BackendKind, Option<Gpu>), KilnError> {
    match o.get("backend").map(|b| b.parse()).transpose()?.unwrap_or_default() {
        BackendChoice::Gpu => Ok((BackendKind::Gpu, Some(block_on(Gpu::new())?))),
        BackendChoice::Cpu => Ok((BackendKind::Cpu, None)),
        BackendChoice::Auto => {
            let gpu = match block_on(Gpu::new()) {
                Ok(gpu) => Some(gpu),
                Err(e) => {
                    eprintln!("backend auto: no GPU ({e})");
                    None
                }
            };
            let (tokenizer, config) = spec()?;
            let adapter = gpu.as_ref().map(|g| (g, g.is_software()));
            let choice = block_on(kiln::train::choose::choose(adapter, &tokenizer, config))?;
            if let Some((g, _)) = adapter {
                eprintln!("backend auto: WebGPU adapter {}", g.adapter_name());
            }
            let kind = if choice.kind == BackendKind::Gpu { "gpu" } else { "cpu" };
            eprintln!("backend auto: {kind} — {}", choice.reason);
            Ok((choice.kind, gpu))
        }
    }
}

/// The tokenizer and configuration of the model `--ckpt` names (for `auto`).
fn ckpt_spec(o: &Options) -> Result<(Tokenizer, GptConfig), KilnError> {
    let dir = o.get("ckpt").ok_or_else(|| usage("this command needs --ckpt DIR"))?;
    let loaded = load_model(&read_dir(Path::new(dir))?)?;
    Ok((loaded.tokenizer, loaded.config))
}

/// The training options given on the command line, over the stage's defaults (checked
/// there, as the page's are).
fn train_config(o: &Options, stage: StageKind) -> Result<TrainConfig, KilnError> {
    let mut given = serde_json::Map::new();
    let mut said: HashMap<String, String> = HashMap::new();
    for (flag, key, default) in training_flags(stage) {
        if let Some(v) = o.get(&flag) {
            if let Some(other) = said.insert(key.clone(), flag.clone()) {
                return Err(usage(&format!("--{other} and --{flag} are the same option: give one")));
            }
            // an option whose default is text takes the flag's text as it is; a rule that
            // is not JSON names its file
            let value: serde_json::Value = match default.is_string() {
                true if key == "rule" && !v.trim_start().starts_with(['[', '{']) => {
                    let bytes = read_text_file(v, kiln::data::rule::MAX_RULE_BYTES as u64, "the rule")?;
                    String::from_utf8(bytes).map_err(|_| usage(&format!("{v} is not UTF-8 text")))?.into()
                }
                true => v.as_str().into(),
                false => serde_json::from_str(v)
                    .ok()
                    .filter(serde_json::Value::is_number)
                    .ok_or_else(|| usage(&format!("--{flag} {v:?} is not a number")))?,
            };
            given.insert(key, value);
        }
    }
    TrainConfig::from_options(stage, &given.into())
}

/// Refuses an output folder that holds anything but a Kiln checkpoint: writing replaces
/// the folder, and a folder of the user's must never be deleted.
fn check_out(dir: &Path) -> CliResult {
    if !dir.exists() {
        return Ok(());
    }
    if !dir.is_dir() {
        return Err(usage(&format!("--out {} is a file, not a folder", dir.display())));
    }
    let names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io_error(dir))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(io_error(dir))?;
    let foreign = names.iter().find(|n| !is_checkpoint_file(n));
    match foreign {
        None if names.is_empty() || names.iter().any(|n| n == "model.safetensors") => Ok(()),
        _ => Err(usage(&format!(
            "--out {} already holds files that are not a Kiln checkpoint ({}); Kiln replaces its output folder, so choose a new or empty one",
            dir.display(),
            foreign.map_or("no model.safetensors", String::as_str)
        ))),
    }
}

fn pretrain(o: &Options) -> CliResult {
    let text = match o.get("corpus") {
        Some(path) => {
            let bytes = read_text_file(path, kiln::data::MAX_TEXT_BYTES, "training text")?;
            text_from_bytes(&bytes).map_err(|e| e.at(path))?
        }
        None => default_corpus(language(o)?, DEFAULT_STORIES, DEFAULT_SEED),
    };
    let kind = match o.get("tokenizer").map(String::as_str) {
        None | Some("bpe") => TokenizerKind::Bpe,
        Some("char") => TokenizerKind::Char,
        Some(other) => return Err(usage(&format!("--tokenizer {other:?}: choose bpe or char"))),
    };
    let vocab =
        if kind == TokenizerKind::Char && !o.contains_key("vocab") { None } else { Some(get(o, "vocab", 512usize)?) };
    let cfg = train_config(o, StageKind::Pretrain)?;
    let out = PathBuf::from(o.get("out").cloned().unwrap_or_else(|| "kiln-run".into()));
    check_out(&out)?;
    eprintln!("training a {kind:?} tokenizer on {} characters …", text.chars().count());
    let tokenizer = Tokenizer::train(&documents(&text), kind, vocab)?;
    let preset = o.get("preset").map_or("tiny", String::as_str);
    let model = GptConfig::preset(preset, tokenizer.vocab_size())?;
    eprintln!(
        "model {preset}: {model}: {:.2}M parameters; needs {}",
        model.num_params() as f64 / 1e6,
        model.memory(cfg.batch_size, model.block_size)
    );
    let (backend, gpu) = choose_backend(o, || Ok((tokenizer.clone(), model)))?;
    let mut session = Session::new(gpu, backend);
    session.tokenizer = Some(tokenizer);
    session.set_corpus(text);
    session.create_model(model, cfg)?;
    train_loop(&mut session, &out, o.contains_key("log-json"))
}

/// A session around the model folder `files` (read from `dir`), no stage begun.
fn open(gpu: Option<Gpu>, backend: BackendKind, files: &Files, dir: &str) -> Result<Session, KilnError> {
    let mut session = Session::new(gpu, backend);
    for note in session.import(files, None)? {
        eprintln!("{dir}: {note}");
    }
    Ok(session)
}

fn resume_cmd(dir: &Path, o: &Options) -> CliResult {
    let files = read_dir(dir)?;
    let (backend, gpu) = choose_backend(o, || load_model(&files).map(|m| (m.tokenizer, m.config)))?;
    let mut session = Session::new(gpu, backend);
    if let Some(note) = session.restore(&files)?.note {
        eprintln!("{}: {note}", dir.display());
    }
    with_run!(session.run_mut()?, r => r.cfg.steps = get(o, "steps", r.cfg.steps)?);
    train_loop(&mut session, dir, o.contains_key("log-json"))
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

/// Trains the session's run to its last step, writing the session's snapshot (the resume
/// checkpoint and the models a preference stage keeps) to `out` at each save point (a
/// validation, or PPO's end of a round) and at the end.
fn train_loop(session: &mut Session, out: &Path, json: bool) -> CliResult {
    let tty = std::io::stderr().is_terminal();
    let (stage, (train_rows, val_rows), backend) =
        with_run!(session.run()?, r => (r.stage()?.kind(), r.stage()?.rows(), r.be.describe()));
    eprintln!("{stage} on backend {backend}; {train_rows} training rows, {val_rows} validation rows");
    let save = |session: &mut Session| -> CliResult {
        let files = block_on(session.snapshot())?.ok_or_else(|| usage("no stage to save"))?;
        write_dir(out, &files)
    };
    let mut last_loss = None;
    let mut saved = false;
    while !with_run!(session.run()?, r => r.done()) {
        let p = with_run!(session.run_mut()?, r => block_on(r.train_one()))?;
        last_loss = p.loss.or(last_loss);
        if json && (p.loss.is_some() || p.val_loss.is_some()) {
            println!("{}", serde_json::json!({"stage": stage, "step": p.step, "loss": p.loss, "valLoss": p.val_loss}));
        }
        if tty {
            eprint!("\r{}", progress_line(&p, last_loss));
        } else if p.loss.is_some() {
            eprintln!("{}", progress_line(&p, last_loss));
        }
        if p.save_point {
            save(session)?;
            let val = p.val_loss.map_or(String::new(), |v| format!("validation loss {v:.4}; "));
            eprintln!("{}step {}: {val}saved {}", if tty { "\n" } else { "" }, p.step, out.display());
        }
        if let Some(sample) = p.sample {
            eprintln!("sample: {sample}");
        }
        if !p.metrics.is_empty() && (p.val_loss.is_some() || !tty) {
            let m: Vec<String> = p.metrics.entries().iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
            eprintln!("  {}", m.join(", "));
        }
        if json && !p.metrics.is_empty() {
            println!("{}", serde_json::json!({"stage": stage, "step": p.step, "metrics": p.metrics}));
        }
        saved = p.save_point;
    }
    if !saved {
        save(session)?;
    }
    let step = with_run!(session.run()?, r => r.step);
    eprintln!("done: {step} steps of {stage}; the model is in {}", out.display());
    Ok(())
}

/// A model folder (a Kiln checkpoint, or a GPT-2 folder) on `be`, ready to generate.
fn load<B: Backend>(be: B, o: &Options) -> Result<Trainer<B>, KilnError> {
    let dir = o.get("ckpt").ok_or_else(|| usage("this command needs --ckpt DIR"))?;
    let loaded = load_model(&read_dir(Path::new(dir))?)?;
    for note in &loaded.notes {
        eprintln!("{dir}: {note}");
    }
    let extras = loaded.extras();
    let mut run = Trainer::with_layout(be, loaded.tokenizer, loaded.config, loaded.layout, Some(&loaded.params), 0)?;
    run.set_extras(extras);
    Ok(run)
}

/// Prompts (each ending with the user's turn) from `--prompts` (conversations JSONL:
/// each up to its last user turn), or the built-in training questions.
fn prompts(o: &Options, n: usize) -> Result<(Vec<Conversation>, Vec<String>), KilnError> {
    match o.get("prompts") {
        Some(path) => {
            let bytes = read_text_file(path, MAX_JSONL_BYTES, "instruction data")?;
            let loaded = read_conversations(&bytes).map_err(|e| e.at(path))?;
            for skipped in &loaded.skipped {
                eprintln!("{path}: skipped {skipped}");
            }
            let prompts: Vec<Conversation> = loaded
                .items
                .into_iter()
                .filter_map(|c| c.iter().rposition(|m| m.role == Role::User).map(|u| c[..=u].to_vec()))
                .take(n)
                .collect();
            Ok((prompts, Vec::new()))
        }
        None => {
            let set = instruction_set(language(o)?, Split::Train, n);
            let expected = set.iter().map(|c| c[1].content.clone()).collect();
            Ok((set.into_iter().map(|c| c[..1].to_vec()).collect(), expected))
        }
    }
}

/// `kiln candidates`: K answers per prompt, as rankings to fill in (or ranked by script).
fn candidates(o: &Options) -> CliResult {
    let out = PathBuf::from(o.get("out").ok_or_else(|| usage("candidates needs --out FILE.jsonl"))?);
    let align = TrainConfig::for_stage(StageKind::Ppo).align;
    let k = get(o, "k", align.answers_per_prompt)?;
    if !(2..=kiln::data::preference::MAX_ANSWERS).contains(&k) {
        return Err(usage(&format!("--k {k}: rank 2 to {} answers a prompt", kiln::data::preference::MAX_ANSWERS)));
    }
    let scripted = match o.get("rank").map(String::as_str) {
        None => false,
        Some("script") if !o.contains_key("prompts") => true,
        Some("script") => return Err(usage("--rank script knows the answers of the built-in questions only")),
        Some(other) => return Err(usage(&format!("--rank {other:?}: only \"script\""))),
    };
    let defaults = SampleConfig {
        max_tokens: align.answer_tokens,
        temperature: align.temperature,
        top_k: align.top_k,
        top_p: align.top_p,
        seed: 0,
    };
    let cfg = sample_config(o, defaults)?;
    let (prompts, expected) = prompts(o, get(o, "n", 100usize)?)?;
    if o.contains_key("online") {
        return candidates_online(o, &out, k, cfg, (prompts, expected), scripted);
    }
    with_backend!(o, ckpt_spec(o), be => {
        let mut run = load(be, o)?;
        let mut rankings = Vec::with_capacity(prompts.len());
        for (i, prompt) in prompts.iter().enumerate() {
            let sc = SampleConfig { seed: cfg.seed + (i * k) as u64, ..cfg.clone() };
            let cands = block_on(run.sample_answers(prompt, k, &sc))?;
            let answers: Vec<String> = cands.iter().map(|c| run.tokenizer.decode(c.content())).collect::<Result<_, _>>()?;
            let (ranks, verdict) = if scripted {
                (scripted_ranks(&expected[i], &answers), Verdict::Ranked)
            } else {
                ((1..=k as u32).collect(), Verdict::Skipped)
            };
            rankings.push(Ranking { prompt: prompt.clone(), answers, ranks, verdict, annotator: None });
        }
        std::fs::write(&out, rankings_jsonl(&rankings)).map_err(io_error(&out))?;
        let pairs: usize = rankings.iter().map(|r| r.pairs().len()).sum();
        eprintln!("{} prompts × {k} answers written to {} ({pairs} pairs{})", rankings.len(), out.display(),
            if scripted { ", ranked by the script" } else { "; rank them, then set \"verdict\" to \"ranked\"" });
        Ok(())
    })
}

/// `kiln candidates --online`: each prompt's answers sampled from the model as it is,
/// ranked (by the script, or by the person on stdin), and every `--every` rankings a few
/// DPO steps (online DPO, the reference the model given); the rankings are written as
/// they come, the updated model to `--save DIR` at the end.
fn candidates_online(
    o: &Options,
    out: &Path,
    k: usize,
    sample: SampleConfig,
    (prompts, expected): (Vec<Conversation>, Vec<String>),
    scripted: bool,
) -> CliResult {
    let save = PathBuf::from(
        o.get("save").ok_or_else(|| usage("candidates --online needs --save DIR for the model it trains"))?,
    );
    check_out(&save)?;
    let every = get(o, "every", kiln::train::online::DEFAULT_EVERY)?;
    let steps = get(o, "update-steps", kiln::train::online::DEFAULT_STEPS)?;
    let cfg = TrainConfig::for_stage(StageKind::Dpo);
    let mut online = kiln::train::online::OnlineDpo::new(every, steps);
    let mut lines = std::io::stdin().lines();
    with_backend!(o, ckpt_spec(o), be => {
        let mut policy = load(be, o)?;
        let (tokenizer, config, params) = (policy.tokenizer.clone(), policy.model.config, block_on(policy.params())?);
        let mut reference = Trainer::with_model(CpuBackend::new(), tokenizer, config, Some(&params), 0)?;
        for (i, prompt) in prompts.iter().enumerate() {
            let sc = SampleConfig { seed: sample.seed + (i * k) as u64, ..sample.clone() };
            let cands = block_on(policy.sample_answers(prompt, k, &sc))?;
            let answers: Vec<String> = cands.iter().map(|c| policy.tokenizer.decode(c.content())).collect::<Result<_, _>>()?;
            let (ranks, verdict) = if scripted {
                (scripted_ranks(&expected[i], &answers), Verdict::Ranked)
            } else {
                eprintln!("\n{}", prompt.last().map_or("", |m| m.content.as_str()));
                for (j, a) in answers.iter().enumerate() {
                    eprintln!("  {}. {a}", j + 1);
                }
                match ask_ranks(&mut lines, k)? {
                    Some(answer) => answer,
                    None => break,
                }
            };
            let ranking = Ranking { prompt: prompt.clone(), answers, ranks, verdict, annotator: None };
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(out).map_err(io_error(out))?;
            std::io::Write::write_all(&mut file, rankings_jsonl(std::slice::from_ref(&ranking)).as_bytes())
                .map_err(io_error(out))?;
            if online.add(ranking) {
                if let Some(u) = block_on(online.update(&mut policy, &mut reference, &cfg))? {
                    let agreement = u.val_pair_accuracy.map_or("-".into(), |a| format!("{:.0}%", 100.0 * a));
                    eprintln!(
                        "update {} after {} rankings: {steps} DPO steps on {}, loss {:.3}, agreement with the {} held back {agreement}",
                        online.updates.len(), u.rankings, u.trained_on, u.loss.unwrap_or(f32::NAN), u.held_back
                    );
                }
            }
        }
        eprintln!("{} rankings written to {}, {} updates", online.rankings.len(), out.display(), online.updates.len());
        if online.updates.is_empty() {
            return Err(usage("no update was made: rank more prompts (an update needs rankings that prefer one answer to another)"));
        }
        write_dir(&save, &block_on(kiln::train::resume::resume_files(&mut policy))?)?;
        eprintln!("the updated model is in {}", save.display());
        Ok(())
    })
}

/// The person's ranks of `k` answers, typed on one line ("2 1 3": the first answer
/// second best …), "s" to skip, "x" when all are bad; None at the end of input.
fn ask_ranks(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    k: usize,
) -> Result<Option<(Vec<u32>, Verdict)>, KilnError> {
    loop {
        eprint!("ranks (1 best, one per answer, ties allowed; s skip, x all bad): ");
        let Some(line) = lines.next() else { return Ok(None) };
        let line = line.map_err(|e| KilnError::Io(e.to_string()))?;
        match line.trim() {
            "s" => return Ok(Some(((1..=k as u32).collect(), Verdict::Skipped))),
            "x" => return Ok(Some((vec![1; k], Verdict::AllBad))),
            text => {
                let ranks: Vec<u32> = text.split_whitespace().filter_map(|r| r.parse().ok()).collect();
                if ranks.len() == k && ranks.iter().all(|&r| (1..=k as u32).contains(&r)) {
                    return Ok(Some((ranks, Verdict::Ranked)));
                }
                eprintln!("give {k} ranks from 1 to {k}, separated by spaces");
            }
        }
    }
}

/// The rankings `--rankings` names (bad lines reported and skipped).
fn read_rankings_file(o: &Options) -> Result<Vec<Ranking>, KilnError> {
    let path = o.get("rankings").ok_or_else(|| usage("this command needs --rankings FILE.jsonl"))?;
    let bytes = read_text_file(path, MAX_JSONL_BYTES, "rankings")?;
    let read = read_rankings(&bytes).map_err(|e| e.at(path))?;
    for skipped in &read.skipped {
        eprintln!("{path}: skipped {skipped}");
    }
    let pairs: usize = read.items.iter().map(|r| r.pairs().len()).sum();
    eprintln!("{path}: {} rankings, {pairs} pairs ({} lines skipped)", read.items.len(), read.skipped.len());
    Ok(read.items)
}

/// Held-out built-in questions answered greedily (exact match) and sampled K times each
/// (the scripted rule's rate: correct and exclaimed).
fn align_report<B: Backend>(run: &mut Trainer<B>, held_out: &[Conversation], name: &str) -> CliResult {
    if held_out.is_empty() {
        return Ok(());
    }
    let report = block_on(answer_report(run, held_out, 24))?;
    let (mut rule, mut total) = (0, 0);
    for (i, conv) in held_out.iter().enumerate() {
        let sc = SampleConfig { max_tokens: 16, temperature: 1.0, top_k: 0, top_p: 1.0, seed: 7_000 + 4 * i as u64 };
        for c in block_on(run.sample_answers(&conv[..1], 4, &sc))? {
            let text = run.tokenizer.decode(c.content())?;
            rule += (c.ended && answer_matches(&conv[1].content, &text) && has_style(&text)) as usize;
            total += 1;
        }
    }
    eprintln!(
        "held-out questions {name}: {}/{} exact ({:.0}%); correct and exclaimed in {rule}/{total} sampled answers ({:.0}%)",
        report.exact,
        report.questions,
        100.0 * report.accuracy(),
        100.0 * rule as f64 / total.max(1) as f64
    );
    Ok(())
}

/// The conversations a file names (bad lines reported and skipped); `what` they are for.
fn read_conversations_file(path: &str, what: &str) -> Result<Vec<Conversation>, KilnError> {
    let bytes = read_text_file(path, MAX_JSONL_BYTES, what)?;
    let loaded = read_conversations(&bytes).map_err(|e| e.at(path))?;
    for skipped in &loaded.skipped {
        eprintln!("{path}: skipped {skipped}");
    }
    eprintln!("{path}: {} conversations ({} lines skipped)", loaded.items.len(), loaded.skipped.len());
    Ok(loaded.items)
}

/// The input a stage's definition asks for, read from the files its flags name: `--data`
/// (conversations), `--rankings`, or `--prompts` (conversations, up to their last user
/// turn); none given: the built-in data in `--lang`.
fn stage_input(o: &Options, kind: StageKind) -> Result<StageInput, KilnError> {
    let mut input = StageInput::builtin(language(o)?);
    match kind.def().input {
        Input::Corpus => {}
        Input::Conversations => {
            input.conversations = o.get("data").map(|p| read_conversations_file(p, "instruction data")).transpose()?
        }
        Input::Rankings => input.rankings = Some(read_rankings_file(o)?),
        Input::Feedback => {
            let path =
                o.get("data").ok_or_else(|| usage(&format!("{kind} needs --data FILE.jsonl (thumbs, or rankings)")))?;
            let bytes = read_text_file(path, kiln::data::jsonl::MAX_JSONL_BYTES, "feedback")?;
            let read = kiln::data::thumbs::read_feedback(&bytes).map_err(|e| e.at(path))?;
            for skipped in &read.skipped {
                eprintln!("{path}: skipped {skipped}");
            }
            input.thumbs = Some(read.items)
        }
        Input::Prompts if o.contains_key("rankings") => input.rankings = Some(read_rankings_file(o)?),
        Input::Prompts => {
            input.conversations =
                o.get("prompts").map(|p| read_conversations_file(p, "instruction data")).transpose()?
        }
    }
    Ok(input)
}

/// The reward model `--reward` names, for a stage that reads one (RLOO and GRPO: when
/// their rule asks it).
fn reward_model(o: &Options, kind: StageKind) -> Result<Option<Vec<f32>>, KilnError> {
    let frozen = kind.def().frozen;
    let dir = match o.get("reward") {
        Some(dir) if frozen.iter().any(|f| matches!(f, Frozen::Reward | Frozen::RewardIfAny)) => dir,
        _ if frozen.contains(&Frozen::Reward) => {
            return Err(usage(&format!("{kind} needs --reward DIR (a model from kiln reward)")))
        }
        _ => return Ok(None),
    };
    let rm = load_model(&read_dir(Path::new(dir))?)?;
    if rm.layout.scalar_head.map(|h| h.kind) != Some(ScalarHeadKind::Reward) {
        return Err(usage(&format!("{dir} is not a reward model (it has no score head)")));
    }
    Ok(Some(rm.params))
}

/// `kiln sft`, `kiln reward`, `kiln dpo`, `kiln ppo`: a stage that starts from a model
/// folder, built by the session from the input its definition asks for, with held-out
/// questions answered before and after.
fn fine_tune(o: &Options, kind: StageKind) -> CliResult {
    let def = kind.def();
    let what = if def.from_reference { "the fine-tuned model" } else { "a Kiln checkpoint or a GPT-2 folder" };
    let dir = o.get("ckpt").ok_or_else(|| usage(&format!("{kind} needs --ckpt DIR ({what})")))?;
    let out = PathBuf::from(o.get("out").ok_or_else(|| usage(&format!("{kind} needs --out DIR")))?);
    check_out(&out)?;
    let cfg = train_config(o, kind)?;
    let files = read_dir(Path::new(dir))?;
    let loaded = load_model(&files)?;
    let input = stage_input(o, kind)?;
    let reward = reward_model(o, kind)?;
    let (backend, gpu) = choose_backend(o, || Ok((loaded.tokenizer.clone(), loaded.config)))?;
    let mut session = open(gpu, backend, &files, dir)?;
    session.reward = reward;
    let conversations = def.input == Input::Conversations;
    // the person's own conversations to fine-tune on (not PPO's prompts)
    let given = conversations && input.conversations.is_some();
    let built = session.build(kind, input, &cfg)?;
    for note in &built.notes {
        eprintln!("{note}");
    }
    // exact-match answers are what the built-in questions measure: on the person's own
    // conversations, or for a reward model, ask for them
    let questions = get(o, "eval", if given || def.head == Some(ScalarHeadKind::Reward) { 0 } else { 100usize })?;
    let held_out: Vec<Conversation> = if conversations {
        built.stage.held_out().iter().take(questions).cloned().collect()
    } else {
        instruction_set(language(o)?, Split::HeldOut, questions)
    };
    let before = match conversations {
        true => Some(with_run!(session.run_mut()?, r => block_on(answer_report(r, &held_out, 32)))?),
        false => with_run!(session.run_mut()?, r => align_report(r, &held_out, "before")).map(|_| None)?,
    };
    block_on(session.begin_stage(built.stage, cfg))?;
    train_loop(&mut session, &out, o.contains_key("log-json"))?;
    let Some(before) = before else {
        return with_run!(session.run_mut()?, r => align_report(r, &held_out, "after"));
    };
    if held_out.is_empty() {
        return Ok(());
    }
    let after = with_run!(session.run_mut()?, r => block_on(answer_report(r, &held_out, 32)))?;
    for (name, r) in [("before", &before), ("after", &after)] {
        eprintln!(
            "held-out answers {name} fine-tuning: {}/{} exact ({:.0}%), {:.0}% ended with <|end|>",
            r.exact,
            r.questions,
            100.0 * r.accuracy(),
            100.0 * r.ended_share()
        );
    }
    for (q, expected, got) in &after.examples {
        eprintln!("  {:?} → {got:?} (expected {expected:?})", q.lines().last().unwrap_or(""));
    }
    Ok(())
}

/// Sampling options over `d` (SampleConfig's defaults, or its chat defaults).
fn sample_config(o: &Options, d: SampleConfig) -> Result<SampleConfig, KilnError> {
    Ok(SampleConfig {
        max_tokens: get(o, "tokens", d.max_tokens)?,
        temperature: get(o, "temperature", d.temperature)?,
        top_k: get(o, "top-k", d.top_k)?,
        top_p: get(o, "top-p", d.top_p)?,
        seed: get(o, "seed", d.seed)?,
    })
}

/// Generates after `ids`, printing text as it arrives (a byte-level token can end inside
/// a character: only whole text is printed). Returns the text.
fn stream<B: Backend>(run: &mut Trainer<B>, ids: &[u32], cfg: &SampleConfig) -> Result<String, KilnError> {
    let tokenizer = run.tokenizer.clone();
    let (be, model, decoder) = run.generator()?;
    let mut shown = String::new();
    let mut out = Vec::new();
    block_on(generate(be, model, decoder, ids, cfg, |id| {
        out.push(id);
        if let Ok(text) = tokenizer.decode(&out) {
            if text.len() > shown.len() && text.starts_with(&shown) && !text.ends_with('\u{FFFD}') {
                print!("{}", &text[shown.len()..]);
                let _ = std::io::stdout().flush();
                shown = text;
            }
        }
        true
    }))?;
    let text = tokenizer.decode(&out)?;
    println!("{}", text.get(shown.len()..).unwrap_or(""));
    Ok(text)
}

fn sample(o: &Options) -> CliResult {
    let cfg = sample_config(o, SampleConfig::default())?;
    let prompt = o.get("prompt").cloned().unwrap_or_default();
    with_backend!(o, ckpt_spec(o), be => {
        let mut run = load(be, o)?;
        let ids = run.prompt_ids(&prompt)?;
        print!("{prompt}");
        stream(&mut run, &ids, &cfg).map(|_| ())
    })
}

/// Rankings as TRL's conversational preference pairs.
fn pairs(o: &Options) -> CliResult {
    let (Some(path), Some(out)) = (o.get("rankings"), o.get("out")) else {
        return Err(usage("pairs needs --rankings FILE.jsonl --out PAIRS.jsonl"));
    };
    let bytes = std::fs::read(path).map_err(|e| KilnError::Io(format!("{path}: {e}")))?;
    let read = read_rankings(&bytes)?;
    let text = kiln::data::preference::pairs_jsonl(&read.items);
    std::fs::write(out, &text).map_err(|e| KilnError::Io(format!("{out}: {e}")))?;
    eprintln!(
        "{} pairs from {} rankings written to {out} ({} lines skipped)",
        text.lines().count(),
        read.items.len(),
        read.skipped.len()
    );
    Ok(())
}

/// A reward model's scores of every pair in a rankings or pairs file, with the ids it
/// scored (the prompt in the model's template, the answer, the end of the turn).
fn score(o: &Options) -> CliResult {
    let path = o.get("data").ok_or_else(|| usage("score needs --data FILE.jsonl (rankings or TRL pairs)"))?;
    let bytes = std::fs::read(path).map_err(|e| KilnError::Io(format!("{path}: {e}")))?;
    let read = read_rankings(&bytes)?;
    with_backend!(o, ckpt_spec(o), be => {
        let mut run = load(be, o)?;
        let format = run.chat_format();
        let t = run.model.config.block_size;
        let mut pairs = 0;
        for ranking in &read.items {
            let Some(group) = kiln::train::preference::Group::of_in(&format, &run.tokenizer, ranking, t)? else { continue };
            let scores = block_on(run.row_rewards(&group.rows))?;
            // the row ends with a padding target; the model reads the ids before it
            let ids = |k: usize| &group.rows[k].ids[..group.rows[k].ids.len() - 1];
            for &(c, r) in &group.pairs {
                println!("{}", serde_json::json!({
                    "chosen_ids": ids(c), "chosen": scores[c], "rejected_ids": ids(r), "rejected": scores[r],
                }));
                pairs += 1;
            }
        }
        eprintln!("{path}: {pairs} pairs scored ({} lines skipped)", read.skipped.len());
        Ok(())
    })
}

/// A model folder as one GGUF file.
fn export(o: &Options) -> CliResult {
    let (Some(dir), Some(out)) = (o.get("ckpt"), o.get("gguf")) else {
        return Err(usage("export needs the model and the file to write: kiln export --ckpt DIR --gguf FILE.gguf"));
    };
    let encoding = kiln::gguf::model::parse_encoding(o.get("type").map_or("f16", String::as_str))?;
    let name = Path::new(dir).file_name().map_or("Kiln model".into(), |n| n.to_string_lossy().into_owned());
    let bytes = kiln::gguf::model::folder_gguf(&read_dir(Path::new(dir))?, encoding, &name)?;
    // written beside the target and renamed into place: never half a file under its name
    let part = Path::new(out).with_extension("gguf.part");
    std::fs::write(&part, &bytes)
        .and_then(|_| std::fs::rename(&part, out))
        .map_err(|e| KilnError::Io(format!("{out}: {e}")))?;
    let g = kiln::gguf::read(&bytes)?;
    eprintln!(
        "wrote {out}: {} tensors, {} keys, {:.1} MiB",
        g.tensors.len(),
        g.kv.len(),
        bytes.len() as f64 / (1 << 20) as f64
    );
    Ok(())
}

/// A conversation on stdin: each line is the user's turn, the answer streams back.
fn chat(o: &Options) -> CliResult {
    let cfg = sample_config(o, SampleConfig::for_chat())?;
    let system: Vec<Message> =
        o.get("system").map(|s| Message { role: Role::System, content: s.clone() }).into_iter().collect();
    with_backend!(o, ckpt_spec(o), be => {
        let mut run = load(be, o)?;
        let tty = std::io::stdin().is_terminal();
        if tty {
            eprintln!("chatting with {}; /reset starts over, Ctrl-D ends", o["ckpt"]);
        }
        let mut messages = system.clone();
        let mut answers = 0;
        for line in std::io::stdin().lines() {
            let line = line.map_err(|e| KilnError::Io(format!("stdin: {e}")))?;
            match line.trim() {
                "" => continue,
                "/reset" => {
                    messages = system.clone();
                    continue;
                }
                text => messages.push(Message { role: Role::User, content: text.to_string() }),
            }
            let ids = run.chat_prompt(&messages)?;
            let answer = stream(&mut run, &ids, &cfg)?;
            answers += 1;
            eprintln!("[answer {answers}: {} characters]", answer.chars().count());
            messages.push(Message { role: Role::Assistant, content: answer });
        }
        Ok(())
    })
}

/// The chat template's ids and supervised flags for a JSON list of messages.
fn chat_ids(o: &Options) -> CliResult {
    let json = o.get("json").ok_or_else(|| usage("chat-ids needs --json '[{\"role\": …, \"content\": …}]'"))?;
    let messages: Vec<Message> =
        serde_json::from_str(json).map_err(|e| KilnError::Data(format!("--json is not a list of messages: {e}")))?;
    let dir = o.get("ckpt").ok_or_else(|| usage("chat-ids needs --ckpt DIR"))?;
    let loaded = load_model(&read_dir(Path::new(dir))?)?;
    let generation_prompt = o.contains_key("generation-prompt");
    let (ids, supervised) = match (&loaded.chat_template, generation_prompt) {
        // an imported model's own template; with the generation prompt, no answer is supervised
        (Some(template), _) => {
            let r = template.encode_with(&loaded.tokenizer, &messages, generation_prompt)?;
            (r.ids, r.supervised)
        }
        (None, true) => {
            let ids = render_prompt(&loaded.tokenizer, &messages)?;
            let flags = vec![false; ids.len()];
            (ids, flags)
        }
        (None, false) => {
            let r = render(&loaded.tokenizer, &messages)?;
            (r.ids, r.supervised)
        }
    };
    println!("{}", serde_json::json!({ "ids": ids, "supervised": supervised }));
    Ok(())
}

/// The prompt's logits at every position, and the next token's probabilities: the same
/// forward pass as the page's next-token view (inspect.rs), for comparing the two.
fn logits(o: &Options) -> CliResult {
    let text = o.get("text").ok_or_else(|| usage("logits needs --text TEXT"))?;
    let (k, temperature) = (get(o, "top-k", inspect::TOP_K)?, get(o, "temperature", 1.0f32)?);
    with_backend!(o, ckpt_spec(o), be => {
        let mut run = load(be, o)?;
        let ids = run.prompt_ids(text)?;
        let look = block_on(inspect::next_token(&mut run.be, &run.model, &ids, None, true))?;
        let top: Vec<_> = inspect::top_tokens(&look, k, temperature)
            .into_iter()
            .map(|x| serde_json::json!({
                "id": x.id, "text": run.tokenizer.token_text(x.id), "p": x.p, "pAtTemperature": x.p_at_temperature,
            }))
            .collect();
        println!("{}", serde_json::json!({
            "ids": look.ids, "vocab_size": run.model.config.vocab_size, "logits": look.logits,
            "probs": look.probs, "temperature": temperature, "top": top,
        }));
        Ok(())
    })
}

fn corpus(o: &Options) -> CliResult {
    println!("{}", default_corpus(language(o)?, get(o, "stories", DEFAULT_STORIES)?, get(o, "seed", DEFAULT_SEED)?));
    Ok(())
}

fn info() -> CliResult {
    let gpu = block_on(Gpu::new())?;
    let l = gpu.limits();
    println!("adapter: {}", gpu.adapter_name());
    println!("max storage buffer binding: {} MiB", l.max_storage_buffer_binding_size >> 20);
    println!("max buffer size: {} MiB", l.max_buffer_size >> 20);
    println!("storage buffers per shader stage: {}", l.max_storage_buffers_per_shader_stage);
    println!("workgroup storage: {} bytes", l.max_compute_workgroup_storage_size);
    println!("invocations per workgroup: {}", l.max_compute_invocations_per_workgroup);
    Ok(())
}

fn print_json(value: &impl serde::Serialize) -> CliResult {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON"));
    Ok(())
}

/// `--quick` (the first 3 shapes), `--large` (adds 2048³ and 4096³, for real GPUs).
fn bench_matmul(quick: bool, large: bool) -> CliResult {
    let gpu = block_on(Gpu::new())?;
    print_json(&kiln::bench::bench_matmul(&gpu, quick.then_some(3), large, |s| eprintln!("timing {s}"))?)
}

/// `--preset NAME` (default tiny), `--backend gpu|cpu` (default gpu).
fn bench_profile(o: &Options) -> CliResult {
    let preset = o.get("preset").map_or("tiny", String::as_str);
    let gpu = match backend_kind(o)? {
        BackendKind::Gpu => Some(block_on(Gpu::new())?),
        BackendKind::Cpu => None,
    };
    let rows = kiln::bench::profile_step(gpu.as_ref(), preset, 3)?;
    let total: f64 = rows.iter().map(|r| r.2).sum();
    let json: Vec<_> = rows
        .iter()
        .map(|(k, n, s)| serde_json::json!({"kernel": k, "dispatches": n, "seconds": s, "share": s / total}))
        .collect();
    print_json(&json)
}

/// `--quick` (tiny and small), `--presets a,b`, `--backend gpu|cpu` (default both).
fn bench_train(o: &Options) -> CliResult {
    let quick = if o.contains_key("quick") { "tiny,small" } else { "tiny,small,base" };
    let presets: Vec<&str> = o.get("presets").map_or(quick, String::as_str).split(',').collect();
    let backends: Vec<&str> = match o.get("backend").map(String::as_str) {
        None => vec!["gpu", "cpu"],
        Some(b @ ("gpu" | "cpu")) => vec![b],
        Some(other) => return Err(usage(&format!("--backend {other:?}: choose gpu or cpu"))),
    };
    let gpu = if backends.contains(&"gpu") { Some(block_on(Gpu::new())?) } else { None };
    print_json(&kiln::bench::bench_train(gpu.as_ref(), &presets, &backends, |s| eprintln!("{s}"))?)
}

fn bench_lora(o: &Options) -> CliResult {
    let gpu = if o.contains_key("no-gpu") { None } else { Some(block_on(Gpu::new())?) };
    let (b, steps) = (get(o, "batch", 4usize)?, get(o, "steps", 3usize)?);
    print_json(&kiln::bench::lora::bench_lora(gpu.as_ref(), b, steps, |s| eprintln!("{s}"))?)
}

fn bench_align() -> CliResult {
    let gpu = block_on(Gpu::new())?;
    print_json(&kiln::bench::bench_align(&gpu, |s| eprintln!("{s}"))?)
}

/// `kiln agreement FILES… [--json] [--combine HOW --out FILE]`: several people's rankings,
/// one person a file (named by its stem) unless the lines name their annotator.
fn agreement_cmd(args: &[String]) -> CliResult {
    let (mut files, mut flags, mut json) = (Vec::new(), Vec::new(), false);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--json" {
            json = true;
        } else if arg.starts_with("--") {
            flags.push(arg.clone());
            flags.extend(it.next().cloned());
        } else {
            files.push(arg.as_str());
        }
    }
    let o = options("agreement", &flags, &["json", "combine", "out"], None)?;
    let annotators = annotators_of(&files)?;
    if annotators.len() < 2 {
        return Err(usage(
            "agreement needs two people's rankings: give a file each, or lines that name their \"annotator\"",
        ));
    }
    match (o.get("combine"), o.get("out")) {
        (Some(how), Some(out)) => {
            let combined = combine(&annotators, &Combine::parse(how))?;
            std::fs::write(out, rankings_jsonl(&combined)).map_err(io_error(Path::new(out)))?;
            let pairs: usize = combined.iter().map(|r| r.pairs().len()).sum();
            eprintln!("{} rankings ({pairs} pairs) combined by {how} written to {out}", combined.len());
        }
        (Some(_), None) => return Err(usage("--combine needs --out FILE.jsonl for the rankings")),
        (None, Some(_)) => return Err(usage("--out writes combined rankings: say which with --combine")),
        (None, None) => {}
    }
    let report = agreement(&annotators);
    if json {
        return print_json(&report);
    }
    print!("{}", agreement_table(&report));
    Ok(())
}

/// Each person's rankings: a file each, named by its stem (its path where two stems are
/// alike), or by the lines' `annotator` where they give one.
fn annotators_of(files: &[&str]) -> Result<Vec<(String, Vec<Ranking>)>, KilnError> {
    if files.is_empty() {
        return Err(usage("kiln agreement FILES…: one rankings file per person"));
    }
    let stem = |path: &str| Path::new(path).file_stem().map_or(path.to_string(), |s| s.to_string_lossy().into_owned());
    let mut read_files = Vec::with_capacity(files.len());
    for &path in files {
        let bytes = read_text_file(path, MAX_JSONL_BYTES, "rankings")?;
        let read = read_rankings(&bytes).map_err(|e| e.at(path))?;
        for skipped in &read.skipped {
            eprintln!("{path}: skipped {skipped}");
        }
        let alike = files.iter().filter(|&&other| stem(other) == stem(path)).count() > 1;
        let file_name = printable(if alike { path.to_string() } else { stem(path) }, MAX_ANNOTATOR_CHARS);
        read_files.push((file_name, read.items));
    }
    Ok(kiln::data::agreement::people(read_files))
}

/// `text` without control characters (a stranger's file must not drive the terminal), cut
/// to `chars` characters.
fn printable(text: String, chars: usize) -> String {
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match clean.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &clean[..at]),
        None => clean,
    }
}

/// The agreement report as a table.
fn agreement_table(report: &Agreement) -> String {
    const SHOWN: usize = 5;
    let figure = |x: Option<f64>, digits: usize| x.map_or("–".to_string(), |x| format!("{x:.digits$}"));
    let mut out = format!("{:<24} {:>8} {:>7} {:>8} {:>8}\n", "annotator", "rankings", "pairs", "skipped", "all bad");
    for a in &report.annotators {
        out += &format!("{:<24} {:>8} {:>7} {:>8} {:>8}\n", a.name, a.rankings, a.pairs, a.skipped, a.all_bad);
    }
    out +=
        &format!("\n{:<24} {:>8} {:>12} {:>10} {:>9}\n", "between", "prompts", "answer pairs", "agreement", "mean τ-b");
    for p in &report.between {
        let share = p.pairwise_agreement.map_or("–".to_string(), |x| format!("{:.1}%", 100.0 * x));
        let mut line = format!(
            "{:<24} {:>8} {:>12} {:>10} {:>9}",
            format!("{} – {}", p.annotators[0], p.annotators[1]),
            p.shared_prompts,
            p.answer_pairs,
            share,
            figure(p.mean_tau_b, 3)
        );
        if p.tau_skipped > 0 {
            line += &format!("  ({} without τ-b: one of them ties every answer)", p.tau_skipped);
        }
        out += &(line + "\n");
    }
    out += &format!(
        "\nKrippendorff's α (ordinal, everyone): {} over {} prompts ranked by two people or more\n",
        figure(report.krippendorff_alpha, 3),
        report.shared_prompts
    );
    if report.disagreement_count > 0 {
        out += &format!(
            "{} prompts disagreed on (best answers differ, or τ-b < 0); the least agreed first:\n",
            report.disagreement_count
        );
    }
    for d in report.disagreements.iter().take(SHOWN) {
        let answers: Vec<String> = d.answers.iter().map(|a| printable(a.clone(), 30)).collect();
        out += &format!("  {:?}: {}\n", printable(d.question.clone(), 60), answers.join(" | "));
        for r in &d.ranks {
            let ranks: Vec<String> = r.ranks.iter().map(u32::to_string).collect();
            let ranks = if r.all_bad { "all bad".to_string() } else { ranks.join(" ") };
            out += &format!("      {:<20} {ranks}\n", r.annotator);
        }
    }
    out
}
