//! The `#[wasm_bindgen]` surface, and nothing else. It runs inside Kiln's Web Worker
//! (www/lib/worker.js), which calls one function at a time; the session lives in a
//! worker-global slot and is taken out for the length of an async call.

use std::cell::RefCell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::backend::{Backend, CpuBackend, GpuBackend};
use crate::checkpoint::{self, Files};
use crate::data::chat::Message;
use crate::data::corpus::{default_corpus, Language, DEFAULT_SEED, DEFAULT_STORIES};
use crate::data::format::ChatFormat;
use crate::data::instruct::{instruction_set, Split};
use crate::data::preference::{rankings_jsonl, read_rankings};
use crate::data::{documents, text_from_bytes};
use crate::error::KilnError;
use crate::gpu::{Gpu, GpuError};
use crate::model::{GptConfig, ModelOptions};
use crate::sample::SampleConfig;
use crate::selftest::{self, Check};
use crate::session::{AdapterDescription, InspectOptions, Piece, Session as CoreSession, StageData, DEFAULT_THREADS};
use crate::tokenizer::{Tokenizer, TokenizerKind};
use crate::train::StageKind;
use crate::train::TrainConfig;
use crate::with_run;

/// A refusal of this surface's own (a missing model, an unknown option's value): code
/// 'config' in JS, as the core's configuration errors, its message as it is.
fn js_error(e: impl std::fmt::Display) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    err.set_name("config");
    err.into()
}

/// A Kiln error as a JS Error whose name says what kind it is (KilnError.code in JS, the
/// codes kiln.d.ts documents). A lost device or one out of memory has its own code: the
/// worker cannot go on with it, and kiln.js restarts the worker from the autosave.
fn kiln_error(e: KilnError) -> JsValue {
    let code = match &e {
        KilnError::Gpu(GpuError::Lost(_)) => "device-lost",
        KilnError::Gpu(GpuError::OutOfMemory(_)) => "gpu-out-of-memory",
        KilnError::Gpu(_) => "gpu",
        KilnError::Config(_) => "config",
        KilnError::Data(_) => "data",
        KilnError::Tokenizer(_) => "tokenizer",
        KilnError::Checkpoint(_) => "checkpoint",
        KilnError::Io(_) => "io",
        KilnError::Template(_) => "template",
        KilnError::Model(_) => "model",
        KilnError::NonFiniteLoss { .. } | KilnError::Diverged(_) => "diverged",
        KilnError::Cancelled => "cancelled",
    };
    // the code names the kind: the message says only what happened
    let err = js_sys::Error::new(&e.detail());
    err.set_name(code);
    err.into()
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(js_error)
}

fn from_js<T: for<'de> Deserialize<'de>>(value: JsValue) -> Result<T, JsValue> {
    serde_wasm_bindgen::from_value(value).map_err(|e| js_error(format!("invalid options: {e}")))
}

/// The core session and what only the page keeps: a second tokenizer for the
/// side-by-side view.
#[derive(Default)]
struct Session {
    core: CoreSession,
    /// A second tokenizer trained on the same corpus for the side-by-side view, with the
    /// options it was trained with (kept until the corpus or those options change).
    compared: Option<(TokenizerKind, Option<usize>, Tokenizer)>,
}

thread_local! {
    static SESSION: Rc<RefCell<Session>> = Rc::new(RefCell::new(Session::default()));
    /// The device of the kernel self-test page.
    static GPU: RefCell<Option<Rc<Gpu>>> = const { RefCell::new(None) };
}

fn session() -> Rc<RefCell<Session>> {
    SESSION.with(Rc::clone)
}

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// Chooses the backend: "auto" (both WebGPU, when this browser has an adapter, and the
/// CPU; each model trains on whichever of the two is faster for it, timed when the model is
/// made), "gpu" or "cpu". `adapter` is {description, software} from WebGPU's adapter info;
/// `threads`, the workers (this one and its helpers) a CPU training step is shared by:
/// by default one per core (`cores`, navigator.hardwareConcurrency), at most
/// DEFAULT_THREADS. Returns BackendInfo: {kind, adapter, reason, maxBufferBytes, auto,
/// software, threads, …}.
#[wasm_bindgen(js_name = init)]
pub async fn init(backend: String, adapter: JsValue, threads: Option<usize>, cores: usize) -> Result<JsValue, JsValue> {
    let threads = threads.unwrap_or(cores.min(DEFAULT_THREADS));
    let described: AdapterDescription =
        if adapter.is_undefined() || adapter.is_null() { Default::default() } else { from_js(adapter)? };
    let backend = backend.parse().map_err(kiln_error)?;
    let core = CoreSession::start(backend, described, threads).await.map_err(kiln_error)?;
    let s = session();
    let mut s = s.borrow_mut();
    *s = Session { core, ..Session::default() };
    to_js(&s.core.info)
}

/// Compiles the training kernels on this session's WebGPU device, if it has one, ahead of
/// the first model (the worker calls it right after init, without waiting).
#[wasm_bindgen(js_name = warmUp)]
pub async fn warm_up() -> Result<(), JsValue> {
    let Some(gpu) = session().borrow().core.gpu.clone() else { return Ok(()) };
    crate::train::choose::warm_up(&gpu).await.map_err(kiln_error)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CorpusInfo {
    bytes: usize,
    characters: usize,
    documents: usize,
    preview: String,
}

fn set_corpus(text: String) -> Result<JsValue, JsValue> {
    let info = CorpusInfo {
        bytes: text.len(),
        characters: text.chars().count(),
        documents: documents(&text).len(),
        preview: text.chars().take(400).collect(),
    };
    let s = session();
    let mut s = s.borrow_mut();
    s.core.set_corpus(text);
    s.compared = None;
    to_js(&info)
}

/// Uses the built-in stories ("en" or "zh") as the corpus.
#[wasm_bindgen(js_name = useDefaultCorpus)]
pub fn use_default_corpus(lang: String) -> Result<JsValue, JsValue> {
    set_corpus(default_corpus(language(&lang)?, DEFAULT_STORIES, DEFAULT_SEED))
}

/// Uses a file's bytes (or pasted text, as UTF-8) as the corpus, after checking them.
#[wasm_bindgen(js_name = useCorpus)]
pub fn use_corpus(bytes: &[u8]) -> Result<JsValue, JsValue> {
    set_corpus(text_from_bytes(bytes).map_err(kiln_error)?)
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct TokenizerOptions {
    kind: TokenizerKind,
    vocab_size: Option<usize>,
}

/// Trains the tokenizer on the corpus. Returns {vocabSize, kind}.
#[wasm_bindgen(js_name = trainTokenizer)]
pub fn train_tokenizer(options: JsValue) -> Result<JsValue, JsValue> {
    let o: TokenizerOptions = from_js(options)?;
    let corpus = session().borrow().core.corpus.clone().ok_or_else(|| js_error("choose a corpus first"))?;
    let tokenizer = Tokenizer::train(&documents(&corpus), o.kind, o.vocab_size).map_err(kiln_error)?;
    let info = serde_json::json!({"vocabSize": tokenizer.vocab_size(), "kind": o.kind});
    session().borrow_mut().core.tokenizer = Some(tokenizer);
    to_js(&info)
}

fn tokenizer(s: &Session) -> Result<&Tokenizer, JsValue> {
    s.core.tokenizer.as_ref().ok_or_else(|| js_error("train a tokenizer first"))
}

/// `text` split into tokens: [{id, text, special}].
#[wasm_bindgen]
pub fn tokenize(text: String) -> Result<JsValue, JsValue> {
    let s = session();
    let s = s.borrow();
    let tok = tokenizer(&s)?;
    let ids = tok.encode(&text).map_err(kiln_error)?;
    to_js(&ids.iter().map(|&id| Piece::of(tok, id)).collect::<Vec<_>>())
}

/// `text` under a second tokenizer trained on the same corpus with `options` ({kind,
/// vocabSize}), for the side-by-side view: {kind, vocabSize, pieces: [{id, text}]}. The
/// second tokenizer is trained once per corpus and options; the session's own is untouched.
#[wasm_bindgen(js_name = tokenizeWith)]
pub fn tokenize_with(text: String, options: JsValue) -> Result<JsValue, JsValue> {
    let o: TokenizerOptions = from_js(options)?;
    let s = session();
    let cached = matches!(&s.borrow().compared, Some((kind, vocab, _)) if *kind == o.kind && *vocab == o.vocab_size);
    if !cached {
        let corpus = s.borrow().core.corpus.clone().ok_or_else(|| js_error("choose a corpus first"))?;
        let tokenizer = Tokenizer::train(&documents(&corpus), o.kind, o.vocab_size).map_err(kiln_error)?;
        s.borrow_mut().compared = Some((o.kind, o.vocab_size, tokenizer));
    }
    let s = s.borrow();
    let (kind, _, tok) = s.compared.as_ref().expect("just trained");
    let ids = tok.encode(&text).map_err(kiln_error)?;
    let pieces: Vec<_> = ids.iter().map(|&id| Piece::of(tok, id)).collect();
    to_js(&serde_json::json!({"kind": kind, "vocabSize": tok.vocab_size(), "pieces": pieces}))
}

/// Size and memory of a model before making it; `fits` is false (with the reason) when
/// the device's limits refuse it.
#[wasm_bindgen(js_name = estimateModel)]
pub fn estimate_model(model: JsValue, batch_size: usize) -> Result<JsValue, JsValue> {
    let o: ModelOptions = from_js(model)?;
    let s = session();
    let s = s.borrow();
    let config = o.config(tokenizer(&s)?.vocab_size()).map_err(kiln_error)?;
    to_js(&s.core.estimate(config, batch_size.max(1)))
}

/// The core session taken out of its slot for an async call (no borrow of the slot is
/// held across an await); [`put_core`] puts it back whatever the call returned.
fn take_core() -> CoreSession {
    std::mem::take(&mut session().borrow_mut().core)
}

fn put_core(core: CoreSession) {
    session().borrow_mut().core = core;
}

/// Makes a new model and its pretraining run on the corpus. `training` holds training
/// options (camelCase fields of TrainConfig; missing ones take the stage's defaults).
/// With `auto`, the model is first timed on both backends (see `init`).
#[wasm_bindgen(js_name = createModel)]
pub async fn create_model(model: JsValue, training: JsValue) -> Result<JsValue, JsValue> {
    let o: ModelOptions = from_js(model)?;
    let cfg = training_config(StageKind::Pretrain, training)?;
    let config = o.config(tokenizer(&session().borrow())?.vocab_size()).map_err(kiln_error)?;
    let mut core = take_core();
    let made = match core.choose_backend(config).await {
        Ok(()) => core.create_model(config, cfg),
        Err(e) => Err(e),
    };
    put_core(core);
    made.map_err(kiln_error)?;
    run_info(&session().borrow())
}

/// The run's info (RunInfo) as a JS object, to which calls add their own keys.
fn run_info(s: &Session) -> Result<JsValue, JsValue> {
    to_js(&s.core.run_info().map_err(kiln_error)?)
}

/// Training options from JS over the stage's defaults (TrainConfig::from_options).
fn training_config(stage: StageKind, value: JsValue) -> Result<TrainConfig, JsValue> {
    let options: serde_json::Value =
        if value.is_undefined() || value.is_null() { serde_json::Value::Null } else { from_js(value)? };
    TrainConfig::from_options(stage, &options).map_err(kiln_error)
}

/// The training options `options` give for `stage` over its defaults, checked as a run
/// checks them (an error names the option and its bound): a page checks a field as it is
/// typed, before anything runs.
#[wasm_bindgen(js_name = checkTraining)]
pub fn check_training(stage: String, options: JsValue) -> Result<JsValue, JsValue> {
    let kind = StageKind::parse(&stage).map_err(kiln_error)?;
    to_js(&training_config(kind, options)?)
}

/// Kiln's defaults, the one source for the page and the JS API: the model presets, each
/// stage's training options, and sampling.
#[wasm_bindgen]
pub fn defaults() -> Result<JsValue, JsValue> {
    let presets: serde_json::Map<String, serde_json::Value> = crate::model::PRESETS
        .iter()
        .map(|&(name, n_layer, n_head, n_embd, block_size)| {
            (
                name.to_string(),
                serde_json::json!({"nLayer": n_layer, "nHead": n_head, "nEmbd": n_embd, "blockSize": block_size}),
            )
        })
        .collect();
    to_js(&serde_json::json!({
        "presets": presets,
        "training": StageKind::ALL.iter().map(|k| (k.name(), k.defaults())).collect::<std::collections::BTreeMap<_, _>>(),
        "sampling": SampleConfig::default(),
        "chat": SampleConfig::for_chat(),
        "inspect": {"topK": crate::inspect::TOP_K},
    }))
}

/// Begins a stage with a fresh optimizer: "pretrain" on the corpus, or "sft" on `data`
/// (JSONL bytes: TRL's prompt/completion or messages) or, when `data` is absent, the
/// built-in instruction set in `lang` ("en" or "zh"), both on the model as it is; or a
/// preference stage from the fine-tuned model (kept from the first one on): "reward" and
/// "dpo" on `data` (rankings JSONL, or TRL's prompt/chosen/rejected pairs), "ppo" against
/// the reward model last trained, on the prompts of `data`'s rankings or the built-in
/// questions. `training`: options over the stage's defaults. Returns the run's info, with
/// the JSONL lines skipped.
#[wasm_bindgen(js_name = beginStage)]
pub async fn begin_stage(
    stage: String,
    data: Option<Vec<u8>>,
    lang: Option<String>,
    training: JsValue,
) -> Result<JsValue, JsValue> {
    let kind = StageKind::parse(&stage).map_err(kiln_error)?;
    let cfg = training_config(kind, training)?;
    let lang = language(lang.as_deref().unwrap_or("en"))?;
    let mut core = take_core();
    let begun = core.begin(kind, StageData { bytes: data.as_deref(), lang }, cfg).await;
    put_core(core);
    let skipped = begun.map_err(kiln_error)?;
    let info = run_info(&session().borrow())?;
    js_sys::Reflect::set(&info, &"skipped".into(), &to_js(&skipped)?)?;
    Ok(info)
}

/// `k` answers (2 to 6) to `messages` (ending with the user's turn), sampled together in
/// one batch with `options` (temperature, topK, topP, maxTokens, seed; the preference
/// stages' sampling defaults otherwise): [{text, ended, logprobs}].
#[wasm_bindgen(js_name = sampleCandidates)]
pub async fn sample_candidates(messages: JsValue, k: usize, options: JsValue) -> Result<JsValue, JsValue> {
    let messages: Vec<Message> = from_js(messages)?;
    let cfg = sample_config(options, TrainConfig::for_stage(StageKind::Ppo).align.sample_config(0))?;
    let mut core = take_core();
    let result = core.sample_candidates(&messages, k, &cfg).await;
    put_core(core);
    let out: Vec<_> = result
        .map_err(kiln_error)?
        .into_iter()
        .map(|(text, c)| serde_json::json!({"text": text, "ended": c.ended, "logprobs": c.logprobs}))
        .collect();
    to_js(&out)
}

/// Adds a ranking ({prompt, answers, ranks, verdict}) to the loop that learns as the
/// person ranks; `options`: `every` (rankings per update), `steps` (DPO steps per update),
/// and DPO's training options. The update that landed ({rankings, trainedOn, heldBack,
/// loss, valPairAccuracy}), or null when none was due.
#[wasm_bindgen(js_name = rankOnline)]
pub async fn rank_online(ranking: JsValue, options: JsValue) -> Result<JsValue, JsValue> {
    let ranking: crate::data::preference::Ranking = from_js(ranking)?;
    let mut options: serde_json::Value =
        if options.is_undefined() || options.is_null() { serde_json::json!({}) } else { from_js(options)? };
    let take =
        |o: &mut serde_json::Value, key: &str| o.as_object_mut().and_then(|m| m.remove(key)).and_then(|v| v.as_u64());
    let every = take(&mut options, "every").map_or(crate::train::online::DEFAULT_EVERY, |v| v as usize);
    let steps = take(&mut options, "steps").unwrap_or(crate::train::online::DEFAULT_STEPS);
    let cfg = TrainConfig::from_options(StageKind::Dpo, &options).map_err(kiln_error)?;
    let mut core = take_core();
    let result = core.rank_online(ranking, (every, steps), &cfg).await;
    put_core(core);
    to_js(&result.map_err(kiln_error)?)
}

/// How sure the current model is of the order of its answers to each of `prompts` (lists
/// of messages; `options`: `k` and the sampling options): [spread], the smallest the one
/// whose ranking teaches it the most.
#[wasm_bindgen(js_name = orderSpreads)]
pub async fn order_spreads(prompts: JsValue, k: usize, options: JsValue) -> Result<JsValue, JsValue> {
    let prompts: Vec<Vec<Message>> = from_js(prompts)?;
    let cfg = sample_config(options, TrainConfig::for_stage(StageKind::Ppo).align.sample_config(0))?;
    let mut core = take_core();
    let result = core.order_spreads(&prompts, k, &cfg).await;
    put_core(core);
    to_js(&result.map_err(kiln_error)?)
}

/// Puts back the model as it was before the last update of that loop: whether there was
/// one to undo.
#[wasm_bindgen(js_name = undoOnline)]
pub fn undo_online() -> Result<bool, JsValue> {
    let mut core = take_core();
    let result = core.undo_online();
    put_core(core);
    result.map_err(kiln_error)
}

/// Several people's rankings, one file each (`files`: [{name, text}]; a line naming its
/// `annotator` is that person's): {agreement (counts, pairwise agreement, Kendall's τ-b,
/// Krippendorff's α, disagreements), skipped: ["NAME: line N: why"], combined: rankings
/// JSONL when `combine` ("union", "majority" or a person's name) is given}.
#[wasm_bindgen]
pub fn agreement(files: JsValue, combine: Option<String>) -> Result<JsValue, JsValue> {
    #[derive(serde::Deserialize)]
    struct File {
        name: String,
        text: String,
    }
    let files: Vec<File> = from_js(files)?;
    let (mut read, mut skipped) = (Vec::with_capacity(files.len()), Vec::new());
    for f in files {
        let rankings = read_rankings(f.text.as_bytes()).map_err(|e| kiln_error(e.at(&f.name)))?;
        skipped.extend(rankings.skipped.iter().map(|e| format!("{}: {e}", f.name)));
        read.push((f.name, rankings.items));
    }
    let people = crate::data::agreement::people(read);
    if people.len() < 2 {
        return Err(kiln_error(KilnError::Data(
            "agreement needs two people's rankings: a file each, or lines that name their \"annotator\"".into(),
        )));
    }
    let combined = combine
        .map(|how| crate::data::agreement::combine(&people, &crate::data::agreement::Combine::parse(&how)))
        .transpose()
        .map_err(kiln_error)?
        .map(|r| rankings_jsonl(&r));
    let report = crate::data::agreement::agreement(&people);
    to_js(&serde_json::json!({ "agreement": report, "skipped": skipped, "combined": combined }))
}

/// Greedy answers to each of `prompts` (lists of messages) by `which` model: "current"
/// (the model as it is) or "reference" (the fine-tuned model the preference stages
/// started from): [text] — the before/after view.
#[wasm_bindgen]
pub async fn answers(prompts: JsValue, which: String) -> Result<JsValue, JsValue> {
    let prompts: Vec<Vec<Message>> = from_js(prompts)?;
    let reference = match which.as_str() {
        "current" => false,
        "reference" => true,
        other => return Err(js_error(format!("which model {other:?}: choose current or reference"))),
    };
    let mut core = take_core();
    let result = core.answers(&prompts, reference).await;
    put_core(core);
    to_js(&result.map_err(kiln_error)?)
}

/// The first `n` conversations the last fine-tuning held out (the person's own, or the
/// built-in questions with their stories), the last message each the expected answer; an
/// empty list before any fine-tuning.
#[wasm_bindgen(js_name = heldOut)]
pub fn held_out(n: usize) -> Result<JsValue, JsValue> {
    let s = session();
    let s = s.borrow();
    to_js(&s.core.held_out.iter().take(n).collect::<Vec<_>>())
}

/// Whether `answer` is `expected`, by the rule the held-out checks use (case, spaces and a
/// final . 。 ! or ！ aside).
#[wasm_bindgen(js_name = answerMatches)]
pub fn answer_matches(expected: String, answer: String) -> bool {
    crate::data::instruct::answer_matches(&expected, &answer)
}

/// Rankings JSONL → the pairs in TRL's preference format (JSONL), for export.
#[wasm_bindgen(js_name = rankingPairs)]
pub fn ranking_pairs(rankings: &[u8]) -> Result<String, JsValue> {
    let read = read_rankings(rankings).map_err(kiln_error)?;
    Ok(crate::data::preference::pairs_jsonl(&read.items))
}

/// Checks rankings JSONL: {rankings, pairs, skipped: ["line N: why"]}.
#[wasm_bindgen(js_name = checkRankings)]
pub fn check_rankings(rankings: &[u8]) -> Result<JsValue, JsValue> {
    let read = read_rankings(rankings).map_err(kiln_error)?;
    let pairs: usize = read.items.iter().map(|r| r.pairs().len()).sum();
    let skipped: Vec<String> = read.skipped.iter().map(|e| e.to_string()).collect();
    to_js(&serde_json::json!({"rankings": read.items, "pairs": pairs, "skipped": skipped}))
}

fn language(name: &str) -> Result<Language, JsValue> {
    name.parse().map_err(kiln_error)
}

/// The stage the run is in ("pretrain", "sft"), or null before any.
#[wasm_bindgen(js_name = currentStage)]
pub fn current_stage() -> Option<String> {
    session().borrow().core.run.as_ref()?.stage_kind().map(|k| k.name().to_string())
}

/// `n` conversations of the built-in instruction set ("train" or "heldout" split).
#[wasm_bindgen(js_name = instructionExamples)]
pub fn instruction_examples(lang: String, split: String, n: usize) -> Result<JsValue, JsValue> {
    let split = match split.as_str() {
        "train" => Split::Train,
        "heldout" => Split::HeldOut,
        other => return Err(js_error(format!("split {other:?}: choose train or heldout"))),
    };
    to_js(&instruction_set(language(&lang)?, split, n.min(1000)))
}

/// A conversation through the chat template: [{id, text, supervised}] per token.
#[wasm_bindgen(js_name = renderChat)]
pub fn render_chat(messages: JsValue) -> Result<JsValue, JsValue> {
    let messages: Vec<Message> = from_js(messages)?;
    let s = session();
    let s = s.borrow();
    let tok = tokenizer(&s)?;
    // in the model's own template (an imported model's), else Kiln's
    let r = s.core.chat_format().render(tok, &messages).map_err(kiln_error)?;
    let pieces: Vec<_> = r
        .ids
        .iter()
        .zip(&r.supervised)
        .map(|(&id, &sup)| serde_json::json!({"id": id, "text": tok.token_text(id), "supervised": sup}))
        .collect();
    to_js(&pieces)
}

/// Changes the length of the run (more steps continue it; the schedule stretches).
/// `steps` is checked as the training option it is (a whole number, at least 1).
#[wasm_bindgen(js_name = setSteps)]
pub fn set_steps(steps: JsValue) -> Result<(), JsValue> {
    let given: serde_json::Value = from_js(steps)?;
    let cfg = TrainConfig::from_options(StageKind::Pretrain, &serde_json::json!({ "steps": given }));
    session().borrow_mut().core.set_steps(cfg.map_err(kiln_error)?.steps).map_err(kiln_error)
}

/// Begins a training step shared by `workers` (crate::train::parallel): null when this
/// step is not shared (WebGPU, one worker, a preference stage), else {config, params:
/// Float32Array, shares: [[{b, t, tokens, targets, weights}]]}, helper i's shares at
/// shares[i]. Then: localShare(), the helpers' shareGradients, trainStep(their results).
#[wasm_bindgen(js_name = shareStep)]
pub async fn share_step(workers: usize) -> Result<JsValue, JsValue> {
    let mut core = take_core();
    let result = core.share_step(workers).await;
    put_core(core);
    let Some(work) = result.map_err(kiln_error)? else { return Ok(JsValue::NULL) };
    let out = js_sys::Object::new();
    let set = |k: &str, v: &JsValue| js_sys::Reflect::set(&out, &k.into(), v).map(|_| ());
    set("config", &to_js(&work.config)?)?;
    set("params", &js_sys::Float32Array::from(&work.params[..]).into())?;
    set("shares", &to_js(&work.shares)?)?;
    Ok(out.into())
}

/// Runs this worker's own share of the step shareStep began.
#[wasm_bindgen(js_name = localShare)]
pub async fn local_share() -> Result<(), JsValue> {
    let mut core = take_core();
    let result = core.local_share().await;
    put_core(core);
    result.map_err(kiln_error)
}

thread_local! {
    /// A helper worker's model (it holds no session).
    static HELPER: RefCell<Option<crate::train::parallel::Helper<CpuBackend>>> = const { RefCell::new(None) };
}

/// In a helper worker: the gradient of `shares` (from shareStep) at the weights `params`
/// of a model of `config`. Returns {grads: Float32Array, lossSum}.
#[wasm_bindgen(js_name = shareGradients)]
pub async fn share_gradients(config: JsValue, params: Vec<f32>, shares: JsValue) -> Result<JsValue, JsValue> {
    let config: GptConfig = from_js(config)?;
    let shares: Vec<crate::train::TokenBatch> = from_js(shares)?;
    let mut helper = match HELPER.with(|h| h.borrow_mut().take()) {
        Some(h) if h.config() == config => h,
        _ => crate::train::parallel::Helper::new(CpuBackend::new(), config).map_err(kiln_error)?,
    };
    let result = helper.gradients(&params, &shares).await;
    HELPER.with(|h| *h.borrow_mut() = Some(helper));
    let r = result.map_err(kiln_error)?;
    let out = js_sys::Object::new();
    js_sys::Reflect::set(&out, &"grads".into(), &js_sys::Float32Array::from(&r.grads[..]).into())?;
    js_sys::Reflect::set(&out, &"lossSum".into(), &JsValue::from_f64(r.loss_sum as f64))?;
    Ok(out.into())
}

/// The helpers' results ([{grads: Float32Array, lossSum}], in helper order).
fn share_results(results: JsValue) -> Result<Vec<crate::train::parallel::ShareResult>, JsValue> {
    let get = |o: &JsValue, k: &str| js_sys::Reflect::get(o, &k.into());
    js_sys::Array::from(&results)
        .iter()
        .map(|r| {
            let grads = get(&r, "grads")?.dyn_into::<js_sys::Float32Array>()?.to_vec();
            let loss_sum = get(&r, "lossSum")?.as_f64().ok_or_else(|| js_error("a helper sent no lossSum"))? as f32;
            Ok(crate::train::parallel::ShareResult { grads, loss_sum })
        })
        .collect()
}

/// One optimizer step (with validation and a sample when due). Returns the Progress, or
/// null when the run has done all its steps. `results`: the helpers' share of a step
/// begun by shareStep.
#[wasm_bindgen(js_name = trainStep)]
pub async fn train_step(results: JsValue) -> Result<JsValue, JsValue> {
    let results = if results.is_undefined() || results.is_null() { None } else { Some(share_results(results)?) };
    let mut core = take_core();
    let result = core.train_step(results).await;
    put_core(core);
    match result.map_err(kiln_error)? {
        Some(p) => to_js(&p),
        None => Ok(JsValue::NULL),
    }
}

/// Sampling options from JS over `base` (SampleConfig's defaults, or its chat defaults).
fn sample_config(options: JsValue, base: SampleConfig) -> Result<SampleConfig, JsValue> {
    let given: serde_json::Value =
        if options.is_undefined() || options.is_null() { serde_json::Value::Null } else { from_js(options)? };
    base.with_options(&given).map_err(kiln_error)
}

/// Starts generating from `prompt`; then call generateNext until it returns null.
#[wasm_bindgen(js_name = generateStart)]
pub async fn generate_start(prompt: String, options: JsValue) -> Result<(), JsValue> {
    let cfg = sample_config(options, SampleConfig::default())?;
    // the model's own bos first (an imported model may have none)
    let prompt = |tok: &Tokenizer, format: &ChatFormat, _| {
        let mut ids: Vec<u32> = format.roles.bos.into_iter().collect();
        ids.extend(tok.encode(&prompt)?);
        Ok(ids)
    };
    session().borrow_mut().core.start_generation(prompt, &cfg).map_err(kiln_error)
}

/// Starts the assistant's answer to `messages` ([{role, content}], the last the user's);
/// then call generateNext until it returns null (the answer ends at `<|end|>`).
#[wasm_bindgen(js_name = chatStart)]
pub async fn chat_start(messages: JsValue, options: JsValue) -> Result<(), JsValue> {
    let messages: Vec<Message> = from_js(messages)?;
    let cfg = sample_config(options, SampleConfig::for_chat())?;
    session()
        .borrow_mut()
        .core
        .start_generation(|tok, format: &ChatFormat, t| format.chat_prompt(tok, &messages, t), &cfg)
        .map_err(kiln_error)
}

/// The next piece of generated text (possibly empty while a character is incomplete), or
/// null when generation has ended.
#[wasm_bindgen(js_name = generateNext)]
pub async fn generate_next() -> Result<JsValue, JsValue> {
    let mut core = take_core();
    let next = core.generate_next().await;
    put_core(core);
    Ok(next.map_err(kiln_error)?.map_or(JsValue::NULL, |t| JsValue::from_str(&t)))
}

/// What the model predicts after `prompt` (`<|bos|>`, its tokens, then the ids `append`),
/// on the backend that trains it: {tokens: [{id, text, special}], probs (V, at
/// temperature 1), temperature, top: [{id, text, special, p, pAtTemperature}] (the topK
/// most likely), attention: {layer, head, weights (T×T, query rows)} or null}. Nothing is
/// kept: a closed view costs nothing.
#[wasm_bindgen(js_name = inspectNext)]
pub async fn inspect_next(prompt: String, options: JsValue) -> Result<JsValue, JsValue> {
    let o: InspectOptions = if options.is_undefined() { InspectOptions::default() } else { from_js(options)? };
    let mut core = take_core();
    let next = core.inspect_next(&prompt, &o).await;
    put_core(core);
    to_js(&next.map_err(kiln_error)?)
}

/// The current stage's first training row under the model now: {stage, inputs, targets:
/// [{id, text, special}], losses: [nll or null where masked]}, or null when the stage
/// trains on no token rows (the preference stages).
#[wasm_bindgen(js_name = inspectRow)]
pub async fn inspect_row() -> Result<JsValue, JsValue> {
    let mut core = take_core();
    let row = core.inspect_row().await;
    put_core(core);
    to_js(&row.map_err(kiln_error)?)
}

/// The model as a Hugging Face GPT-2 folder: {fileName: Uint8Array}.
#[wasm_bindgen(js_name = exportModel)]
pub async fn export_model() -> Result<JsValue, JsValue> {
    let files = model_files().await?;
    let out = js_sys::Object::new();
    for (name, bytes) in files {
        js_sys::Reflect::set(&out, &JsValue::from_str(&name), &js_sys::Uint8Array::from(bytes.as_slice()))?;
    }
    Ok(out.into())
}

/// The same folder as one .zip file.
#[wasm_bindgen(js_name = exportZip)]
pub async fn export_zip() -> Result<Vec<u8>, JsValue> {
    checkpoint::to_zip(&model_files().await?).map_err(kiln_error)
}

/// The model as one GGUF file (llama.cpp, Ollama): `encoding` "f32", "f16" or "q8_0".
#[wasm_bindgen(js_name = exportGguf)]
pub async fn export_gguf(encoding: String) -> Result<Vec<u8>, JsValue> {
    let encoding = crate::gguf::model::parse_encoding(&encoding).map_err(kiln_error)?;
    let mut core = take_core();
    let bytes = core.model_gguf(encoding).await;
    put_core(core);
    bytes.map_err(kiln_error)
}

async fn model_files() -> Result<Files, JsValue> {
    let mut core = take_core();
    let files = core.model_files().await;
    put_core(core);
    files.map_err(kiln_error)
}

/// The session as one stored .zip, for the browser's autosave: the run's resume checkpoint
/// (model, optimizer, stage, its data and position: train::resume), the models a
/// preference stage keeps (the fine-tuned reference, the reward model) and the backend.
/// Null before a stage has begun (nothing to resume).
#[wasm_bindgen]
pub async fn snapshot() -> Result<JsValue, JsValue> {
    let mut core = take_core();
    let files = core.snapshot().await;
    put_core(core);
    let Some(files) = files.map_err(kiln_error)? else { return Ok(JsValue::NULL) };
    let zip = checkpoint::to_zip_stored(&files).map_err(kiln_error)?;
    Ok(js_sys::Uint8Array::from(zip.as_slice()).into())
}

/// Continues a session from a [`snapshot`]: the model, its optimizer and stage, the
/// tokenizer, the corpus and the kept models, on the backend it was saved on when this
/// session has it (then training continues bit for bit as it would have), else on the
/// session's. Nothing changes unless all of it loads. Returns the run's info with `step`,
/// `history` and `note` (when the backend differs).
#[wasm_bindgen]
pub fn restore(bytes: &[u8]) -> Result<JsValue, JsValue> {
    let files = checkpoint::from_zip(bytes).map_err(kiln_error)?;
    let s = session();
    let mut s = s.borrow_mut();
    let restored = s.core.restore(&files).map_err(kiln_error)?;
    if files.contains_key("corpus.txt") {
        s.compared = None;
    }
    let info = run_info(&s)?;
    js_sys::Reflect::set(&info, &"step".into(), &JsValue::from_f64(restored.step as f64))?;
    js_sys::Reflect::set(&info, &"history".into(), &to_js(&restored.history)?)?;
    js_sys::Reflect::set(&info, &"note".into(), &to_js(&restored.note)?)?;
    // the updates learnt while ranking, when the session was doing so
    let online = s.core.online.as_ref().map(|o| o.dpo.updates.clone());
    js_sys::Reflect::set(&info, &"online".into(), &to_js(&online)?)?;
    Ok(info)
}

/// Faults on purpose, for the tests of what survives them (the browser tests call it as
/// `Kiln.injectFault`): "nan" writes a NaN into a weight (the divergence guard rolls it
/// back), "lose-device" destroys the WebGPU device (the worker is recreated and the run
/// resumed from its autosave), "trap" panics (a wasm trap ends the worker's instance).
#[wasm_bindgen(js_name = injectFault)]
pub fn inject_fault(kind: String) -> Result<(), JsValue> {
    let s = session();
    let mut s = s.borrow_mut();
    match kind.as_str() {
        "nan" => {
            let run = s.core.run.as_mut().ok_or_else(|| js_error("create a model first"))?;
            with_run!(run, r => r.be.write(r.model.weights.vectors_buf(), 0, &[f32::NAN]));
        }
        "lose-device" => s.core.gpu.as_ref().ok_or_else(|| js_error("this session has no WebGPU device"))?.destroy(),
        "trap" => panic!("a trap injected by injectFault"),
        other => return Err(js_error(format!("unknown fault {other:?}: nan, lose-device or trap"))),
    }
    Ok(())
}

/// Refuses a file by its size alone, before the page reads it: `kind` is "text" (a
/// corpus), "jsonl" (instruction data, rankings) or "model" (a .zip to import).
#[wasm_bindgen(js_name = checkFileSize)]
pub fn check_file_size(size: f64, kind: String) -> Result<(), JsValue> {
    let (cap, what) = match kind.as_str() {
        "text" => (crate::data::MAX_TEXT_BYTES, "training text"),
        "jsonl" => (crate::data::jsonl::MAX_JSONL_BYTES, "JSONL data"),
        "model" => (checkpoint::MAX_ZIP_BYTES, "a model archive"),
        other => return Err(js_error(format!("unknown kind of file {other:?}"))),
    };
    crate::data::check_file_size(size as u64, cap, what).map_err(kiln_error)
}

/// Loads a model from a .zip of a model folder (as exportZip makes, or transformers'
/// save_pretrained with safetensors), replacing the current model and tokenizer. Any
/// stage can then begin on it (`beginStage`); with a corpus set, pretraining is begun
/// at once, so `train` continues as before. Returns the run's info and `notes` (what Kiln
/// changed, e.g. special tokens added).
#[wasm_bindgen(js_name = importZip)]
pub fn import_zip(bytes: &[u8], training: JsValue) -> Result<JsValue, JsValue> {
    import(checkpoint::from_zip(bytes).map_err(kiln_error)?, training)
}

/// A model folder's files into the session: the run's info and `notes`.
fn import(files: Files, training: JsValue) -> Result<JsValue, JsValue> {
    let cfg = training_config(StageKind::Pretrain, training)?;
    let s = session();
    let mut s = s.borrow_mut();
    let notes = s.core.import(&files, Some(cfg)).map_err(kiln_error)?;
    let info = run_info(&s)?;
    js_sys::Reflect::set(&info, &"notes".into(), &to_js(&notes)?)?;
    Ok(info)
}

/// Loads a model from a folder's files, {name: Uint8Array} (the page's folder input, or
/// several files chosen together): a Hugging Face folder of GPT-2, Llama, Qwen2 or Mistral
/// (its adapter's files beside it are merged in). Names may carry their folder
/// ("SmolLM2/config.json"); files Kiln does not read are left out, the rest checked as a
/// .zip's are. Otherwise as `importZip`.
#[wasm_bindgen(js_name = importFiles)]
pub fn import_files(files: JsValue, training: JsValue) -> Result<JsValue, JsValue> {
    import(checkpoint::from_named(named_files(&files)?).map_err(kiln_error)?, training)
}

/// Whether a model or adapter folder's file is one Kiln reads (the page reads only those).
#[wasm_bindgen(js_name = isModelFile)]
pub fn is_model_file(name: String) -> bool {
    checkpoint::is_checkpoint_file(crate::data::base_name(&name))
}

/// A PEFT adapter folder's files (adapter_config.json, adapter_model.safetensors) onto the
/// current model, its base; a LoRA stage of the same rank, α and targets trains them on.
/// Returns the run's info.
#[wasm_bindgen(js_name = importAdapter)]
pub fn import_adapter(files: JsValue) -> Result<JsValue, JsValue> {
    let files = crate::peft::from_named(named_files(&files)?).map_err(kiln_error)?;
    let s = session();
    let mut s = s.borrow_mut();
    s.core.import_adapter(&files).map_err(kiln_error)?;
    run_info(&s)
}

/// The model's LoRA adapters as a PEFT adapter folder, {fileName: Uint8Array}, naming
/// `baseModel` (the base's Hub id or folder) in adapter_config.json.
#[wasm_bindgen(js_name = exportAdapter)]
pub async fn export_adapter(base_model: String) -> Result<JsValue, JsValue> {
    let mut core = take_core();
    let files = core.adapter_files(&base_model).await;
    put_core(core);
    let out = js_sys::Object::new();
    for (name, bytes) in files.map_err(kiln_error)? {
        js_sys::Reflect::set(&out, &JsValue::from_str(&name), &js_sys::Uint8Array::from(bytes.as_slice()))?;
    }
    Ok(out.into())
}

/// {name: Uint8Array} as (name, bytes) pairs.
fn named_files(files: &JsValue) -> Result<Vec<(String, Vec<u8>)>, JsValue> {
    let mut out = Vec::new();
    for entry in js_sys::Object::entries(&js_sys::Object::from(files.clone())).iter() {
        let pair = js_sys::Array::from(&entry);
        let name = pair.get(0).as_string().ok_or_else(|| js_error("a file name is not a string"))?;
        out.push((name, js_sys::Uint8Array::new(&pair.get(1)).to_vec()));
    }
    Ok(out)
}

// ---------------------------------------------------------------- kernel self-test

async fn selftest_gpu() -> Result<Rc<Gpu>, JsValue> {
    if let Some(gpu) = GPU.with(|g| g.borrow().clone()) {
        return Ok(gpu);
    }
    let gpu = Rc::new(Gpu::new().await.map_err(js_error)?);
    GPU.with(|g| *g.borrow_mut() = Some(gpu.clone()));
    Ok(gpu)
}

/// The adapter's name, e.g. "google/swiftshader (BrowserWebGpu)"; opens the device.
#[wasm_bindgen(js_name = adapterName)]
pub async fn adapter_name() -> Result<String, JsValue> {
    Ok(selftest_gpu().await?.adapter_name())
}

/// The kernel families of the self-test, in order.
#[wasm_bindgen(js_name = kernelFamilies)]
pub fn kernel_families() -> Vec<String> {
    selftest::FAMILIES.iter().map(|f| f.to_string()).collect()
}

#[derive(Serialize)]
struct CheckResult {
    kernel: &'static str,
    case: String,
    max_rel_err: f64,
    tolerance: f64,
    passed: bool,
}

impl From<Check> for CheckResult {
    fn from(c: Check) -> Self {
        CheckResult {
            passed: c.passed(),
            kernel: c.kernel,
            case: c.case,
            max_rel_err: c.max_rel_err,
            tolerance: c.tolerance,
        }
    }
}

/// Runs one family of kernel-vs-CPU-twin checks on this browser's WebGPU adapter:
/// an array of `{kernel, case, max_rel_err, tolerance, passed}`.
#[wasm_bindgen(js_name = checkKernels)]
pub async fn check_kernels(family: String) -> Result<JsValue, JsValue> {
    if !selftest::FAMILIES.contains(&family.as_str()) {
        return Err(js_error(format!("unknown kernel family {family:?}")));
    }
    let gpu = selftest_gpu().await?;
    let checks = selftest::check_family(&gpu, &family).await.map_err(js_error)?;
    let results: Vec<CheckResult> = checks.into_iter().map(CheckResult::from).collect();
    serde_wasm_bindgen::to_value(&results).map_err(js_error)
}

/// The CPU backend's fast products (matrix products and attention) against their f64
/// twins, with no GPU: an array of `{kernel, case, max_rel_err, tolerance, passed}`, and
/// the kernels this build runs as `kernel` of each ("wasm32 relaxed SIMD …" or
/// "wasm32 SIMD128 …" in [`cpu_kernel`]). Run on both builds by cpu_kernels.test.mjs.
#[wasm_bindgen(js_name = checkCpuKernels)]
pub fn check_cpu_kernels() -> Result<JsValue, JsValue> {
    let results: Vec<CheckResult> = selftest::check_cpu().into_iter().map(CheckResult::from).collect();
    serde_wasm_bindgen::to_value(&results).map_err(js_error)
}

/// The CPU backend's matrix-product kernels in this build: "wasm32 relaxed SIMD
/// (f32x4.relaxed_madd, …)" or "wasm32 SIMD128 (f32x4.mul then f32x4.add, …)".
#[wasm_bindgen(js_name = cpuKernel)]
pub fn cpu_kernel() -> String {
    crate::cpu::matmul::gemm_kernel().into()
}

/// The CPU backend's matrix product (`form` "nn", "nt" or "tn": which operand is stored
/// transposed) timed on this thread for at least `min_ms`: {kernel, gflops, reps}. What
/// tests/bench/browser.mjs prints beside the native `kiln bench matmul`.
#[wasm_bindgen(js_name = benchCpuMatmul)]
pub fn bench_cpu_matmul(m: usize, n: usize, k: usize, form: String, min_ms: f64) -> Result<JsValue, JsValue> {
    use crate::cpu::matmul::{gemm_kernel, matmul_gemm, MatmulShape};
    let shape = match form.as_str() {
        "nn" => MatmulShape::nn(m, n, k),
        "nt" => MatmulShape::nt(m, n, k),
        "tn" => MatmulShape::tn(m, n, k),
        other => return Err(js_error(format!("form {other:?}: choose nn, nt or tn"))),
    };
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5).collect();
    let mut out = vec![0.0f32; m * n];
    let (start, mut reps) = (js_sys::Date::now(), 0u32);
    while reps == 0 || js_sys::Date::now() - start < min_ms {
        matmul_gemm(&mut out, &a, &b, None, shape, false);
        reps += 1;
    }
    let seconds = (js_sys::Date::now() - start) / 1000.0 / reps as f64;
    #[derive(Serialize)]
    struct Timed {
        kernel: &'static str,
        gflops: f64,
        reps: u32,
    }
    to_js(&Timed { kernel: gemm_kernel(), gflops: shape.flops() / seconds / 1e9, reps })
}

/// Where a CPU training step's time goes in this build, op by op, on this worker alone:
/// `steps` steps of `preset` (batch 8, 512-token BPE vocabulary, as `kiln bench profile
/// --backend cpu`) after one untimed, as [{op, calls, seconds}], slowest first.
#[wasm_bindgen(js_name = profileCpuStep)]
pub async fn profile_cpu_step(preset: String, steps: usize) -> Result<JsValue, JsValue> {
    #[derive(Serialize)]
    struct Row {
        op: String,
        calls: u32,
        seconds: f64,
    }
    let rows = crate::bench::profile_cpu_step(&preset, steps).await.map_err(kiln_error)?;
    to_js(&rows.into_iter().map(|(op, calls, seconds)| Row { op, calls, seconds }).collect::<Vec<_>>())
}

// ---------------------------------------------------------------- golden parity

/// A fixture folder's files, {fileName: Uint8Array}, as the core's [`Files`].
fn files_from_js(files: &JsValue) -> Result<Files, JsValue> {
    let mut out = Files::new();
    for entry in js_sys::Object::entries(&js_sys::Object::from(files.clone())).iter() {
        let pair = js_sys::Array::from(&entry);
        let name = pair.get(0).as_string().ok_or_else(|| js_error("a file name is not a string"))?;
        out.insert(name, js_sys::Uint8Array::new(&pair.get(1)).to_vec());
    }
    Ok(out)
}

/// Golden parity with transformers on this browser's `backend` ("cpu": WebAssembly, or
/// "gpu": WebGPU) for a fixture folder's files (tests/golden/llama_gqa/ …): how far Kiln's
/// logits, gradients and AdamW steps are from PyTorch's float64 ones, and whether within
/// the tolerances. Run by tests/browser/golden.test.mjs.
#[wasm_bindgen(js_name = goldenCheck)]
pub async fn golden_check(files: JsValue, backend: String) -> Result<JsValue, JsValue> {
    use crate::train::golden::{golden_check, GoldenFixture};
    let fixture = GoldenFixture::from_files(&files_from_js(&files)?).map_err(kiln_error)?;
    let report = match backend.as_str() {
        "gpu" => {
            let gpu = (*selftest_gpu().await?).clone();
            golden_check(&mut GpuBackend::new(gpu), &fixture).await
        }
        "cpu" => golden_check(&mut CpuBackend::new(), &fixture).await,
        other => return Err(js_error(format!("backend {other:?}: choose cpu or gpu"))),
    }
    .map_err(kiln_error)?;
    let out = to_js(&report)?;
    js_sys::Reflect::set(&out, &"passed".into(), &report.passed().into())?;
    Ok(out)
}
