//! LoRA in a session, on an imported Llama-family model (tests/golden/smollm2_like), on the
//! CPU: SFT with adapters trains them and leaves the imported weights exactly as they
//! were; DPO goes on training the same adapters; the session's snapshot resumes bit for
//! bit; the adapters go out as a PEFT folder and come back onto the base, and the merged
//! export gives the adapted model's logits. (Gradients against PEFT's: tests/golden.rs.)

use kiln::backend::BackendKind;
use kiln::checkpoint::{load_model, read_dir, Files};
use kiln::data::corpus::Language;
use kiln::session::{Session, StageData};
use kiln::train::{StageKind, TrainConfig};
use kiln::with_run;
use pollster::block_on;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/smollm2_like");

fn folder() -> Files {
    read_dir(std::path::Path::new(DIR)).unwrap()
}

fn imported() -> Session {
    let mut session = Session::new(None, BackendKind::Cpu);
    session.import(&folder(), None).unwrap();
    session
}

/// A short LoRA run of rank 4 on every linear layer: every step's loss read back.
fn options(kind: StageKind, steps: u64) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 2,
        eval_every: 100,
        eval_batches: 1,
        sample_every: 0,
        log_every: 1,
        warmup_steps: 0,
        lr: 3e-3,
        min_lr: 3e-4,
        lora_rank: 4,
        lora_alpha: 8.0,
        lora_targets: "all-linear".into(),
        ..kind.defaults()
    }
}

fn jsonl(rows: Vec<serde_json::Value>) -> Vec<u8> {
    rows.iter().map(|r| r.to_string() + "\n").collect::<String>().into_bytes()
}

fn conversations() -> Vec<u8> {
    let pairs = [("Hi", "Hello there."), ("Name a colour.", "Blue."), ("Two plus two?", "Four."), ("Bye", "Goodbye!")];
    jsonl(
        pairs
            .iter()
            .map(|(q, a)| serde_json::json!({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}))
            .collect(),
    )
}

fn pairs() -> Vec<u8> {
    let pairs =
        [("Say yes.", "Yes.", "No."), ("Greet me.", "Hello!", "Go away."), ("Count to two.", "One, two.", "Three.")];
    jsonl(pairs.iter().map(|(p, c, r)| serde_json::json!({"prompt": p, "chosen": c, "rejected": r})).collect())
}

fn begin(session: &mut Session, kind: StageKind, data: &[u8], steps: u64) {
    let data = StageData { bytes: Some(data), lang: Language::English };
    block_on(session.begin(kind, data, options(kind, steps))).unwrap();
}

fn finish(session: &mut Session) -> Vec<f32> {
    let mut losses = Vec::new();
    while let Some(p) = block_on(session.train_step(None)).unwrap() {
        losses.push(p.loss.expect("logged every step"));
    }
    losses
}

/// The model's logits (T, V) for a few ids (the merged model when it has adapters).
fn logits(session: &mut Session, ids: &[u32]) -> Vec<f32> {
    let run = session.run_mut().unwrap();
    with_run!(run, r => block_on(kiln::inspect::next_token(&mut r.be, &r.model, ids, None, true))).unwrap().logits
}

const IDS: [u32; 6] = [1, 30, 31, 32, 2, 40];

#[test]
fn lora_sft_then_dpo_trains_the_adapters_alone_and_round_trips_as_peft() {
    let mut session = imported();
    let run = session.run_mut().unwrap();
    let original = with_run!(run, r => block_on(r.base_params())).unwrap();
    let before = logits(&mut session, &IDS);

    begin(&mut session, StageKind::Sft, &conversations(), 40);
    let sft = finish(&mut session);
    println!("LoRA SFT losses {sft:?}");
    assert!(sft.iter().all(|l| l.is_finite()));
    let mean = |l: &[f32]| l.iter().sum::<f32>() / l.len() as f32;
    let (early, late) = (mean(&sft[..4]), mean(&sft[sft.len() - 4..]));
    assert!(late < 0.5 * early, "SFT with adapters learns: {early} → {late}, {sft:?}");
    let run = session.run_mut().unwrap();
    let (lora, adapters) = with_run!(run, r => block_on(r.adapter())).unwrap().expect("the run trains adapters");
    let frozen = with_run!(run, r => block_on(r.base_params())).unwrap();
    assert_eq!(frozen, original, "the imported weights stay exactly as they were");
    // PEFT's A and B for the 7 linear layers of each of the 2 blocks, rank 4
    let tensors = lora.peft_tensors(&adapters);
    assert_eq!(tensors.len(), 2 * 7 * 2);
    assert!(tensors.iter().any(|t| t.0 == "model.layers.1.self_attn.v_proj.lora_B.weight" && t.1 == [32, 4]));
    let tuned = logits(&mut session, &IDS);
    assert_ne!(tuned, before);

    // the adapters as a PEFT folder, onto a fresh import of the base: the same model
    let peft = block_on(session.adapter_files("HuggingFaceTB/SmolLM2-135M-Instruct")).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&peft["adapter_config.json"]).unwrap();
    assert_eq!(config["r"], 4);
    assert_eq!(config["base_model_name_or_path"], "HuggingFaceTB/SmolLM2-135M-Instruct");
    let mut other = imported();
    other.import_adapter(&peft).unwrap();
    assert_eq!(logits(&mut other, &IDS), tuned);
    // the base folder with the adapter's files beside it loads as the merged model
    let mut with_adapter = folder();
    with_adapter.extend(peft.clone());
    let merged = load_model(&with_adapter).unwrap();
    assert!(merged.notes.iter().any(|n| n.contains("merged the LoRA adapters")), "{:?}", merged.notes);

    // the merged Hugging Face export: no adapters, the adapted model's logits
    let export = block_on(session.model_files()).unwrap();
    assert!(!export.contains_key("adapter_config.json"));
    let mut reimported = Session::new(None, BackendKind::Cpu);
    reimported.import(&export, None).unwrap();
    let err = max_rel(&logits(&mut reimported, &IDS), &tuned);
    println!("merged export vs adapters on: max rel err {err:.2e}");
    assert!(err < 1e-5, "{err}");

    // DPO trains the same adapters on (its reference: the model after SFT)
    begin(&mut session, StageKind::Dpo, &pairs(), 4);
    let run = session.run_mut().unwrap();
    let (_, dpo_start) = with_run!(run, r => block_on(r.adapter())).unwrap().expect("DPO trains adapters");
    assert_eq!(dpo_start, adapters, "DPO starts from SFT's adapters");
    let frozen = with_run!(run, r => block_on(r.base_params())).unwrap();
    assert_eq!(frozen[..original.len()], original[..], "still on the imported weights");
    let first = block_on(session.train_step(None)).unwrap().unwrap().loss.unwrap();
    // policy = reference at the first step: DPO's loss is −log σ(0) plus RPO's NLL term
    assert!(first.is_finite() && first > std::f32::consts::LN_2 - 1e-4, "{first}");

    // the snapshot resumes the LoRA run bit for bit
    let snapshot = block_on(session.snapshot()).unwrap().expect("a stage is running");
    assert!(snapshot.contains_key("adapter_model.safetensors"));
    let mut restored = Session::new(None, BackendKind::Cpu);
    restored.restore(&snapshot).unwrap();
    let (a, b) = (finish(&mut session), finish(&mut restored));
    println!("LoRA DPO losses after the snapshot {a:?}, restored {b:?}");
    assert_eq!(a, b);
}

/// Rankings for the reward model and PPO's prompts.
fn rankings() -> Vec<u8> {
    let mut ranked = pairs();
    ranked.extend(jsonl(vec![serde_json::json!({"prompt": "Thank me.", "chosen": "Thank you!", "rejected": "No."})]));
    ranked
}

/// The current model's adapter folder, and its config's modules_to_save and task_type.
fn head_and_task(session: &mut Session) -> (Files, (serde_json::Value, serde_json::Value)) {
    let peft = block_on(session.adapter_files("base")).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&peft["adapter_config.json"]).unwrap();
    (peft, (config["modules_to_save"].clone(), config["task_type"].clone()))
}

#[test]
fn lora_reward_model_and_ppo_train_adapters_and_their_head_on_the_frozen_base() {
    let mut session = imported();
    let run = session.run_mut().unwrap();
    let original = with_run!(run, r => block_on(r.base_params())).unwrap();

    // the reward model: adapters and the score head (PEFT's modules_to_save) train
    begin(&mut session, StageKind::Reward, &rankings(), 30);
    let run = session.run_mut().unwrap();
    let (_, start) = with_run!(run, r => block_on(r.adapter())).unwrap().expect("the reward model trains adapters");
    let losses = finish(&mut session);
    println!("LoRA reward model losses {losses:?}");
    let (early, late) = (losses[0], losses[losses.len() - 1]);
    assert!(late < 0.5 * early, "the reward model learns its pairs: {early} → {late}");
    let run = session.run_mut().unwrap();
    let (lora, adapters) = with_run!(run, r => block_on(r.adapter())).unwrap().unwrap();
    let head = lora.head.expect("the score head trains beside the adapters");
    let c = with_run!(run, r => r.model.config.n_embd);
    assert_ne!(adapters[head.weight..head.weight + c], start[head.weight..head.weight + c], "the head trained");
    let frozen = with_run!(run, r => block_on(r.base_params())).unwrap();
    assert_eq!(frozen[..original.len()], original[..], "the imported weights stay as they were");
    // its adapter as PEFT writes a sequence classifier's: the head among modules_to_save
    assert_eq!(head_and_task(&mut session).1, (serde_json::json!(["score"]), "SEQ_CLS".into()));
    // and it resumes with its head: the snapshot restores the trained reward model
    let snapshot = block_on(session.snapshot()).unwrap().unwrap();
    let mut restored = Session::new(None, BackendKind::Cpu);
    restored.restore(&snapshot).unwrap();
    let run = restored.run_mut().unwrap();
    assert_eq!(with_run!(run, r => block_on(r.adapter())).unwrap().unwrap().1, adapters);

    // PPO: fresh adapters and a value head on the merged fine-tuned model; its reference
    // is that model with the adapters off (no second copy)
    let mut cfg = options(StageKind::Ppo, 6);
    cfg.lr = 1e-2;
    cfg.batch_size = 4;
    cfg.align.rollout_prompts = 2;
    cfg.align.answers_per_prompt = 2;
    cfg.align.ppo_epochs = 2;
    cfg.align.answer_tokens = 6;
    let data = StageData { bytes: Some(&rankings()), lang: Language::English };
    block_on(session.begin(StageKind::Ppo, data, cfg)).unwrap();
    let run = session.run_mut().unwrap();
    let (ppo, _) = with_run!(run, r => block_on(r.adapter())).unwrap().expect("PPO trains adapters");
    assert_eq!(ppo.head.map(|h| h.kind), Some(kiln::model::ScalarHeadKind::Value));
    let mut kl = Vec::new();
    while let Some(p) = block_on(session.train_step(None)).unwrap() {
        kl.extend(p.metrics.kl);
    }
    println!("LoRA PPO: KL to the reference per rollout round {kl:?}");
    // the first rollouts come from the untrained adapters (B = 0): exactly the reference
    assert_eq!(kl[0], 0.0, "{kl:?}");
    assert!(kl[1..].iter().any(|&k| k != 0.0), "the policy moves away from the reference: {kl:?}");
    let run = session.run_mut().unwrap();
    let frozen = with_run!(run, r => block_on(r.base_params())).unwrap();
    assert_eq!(frozen[..original.len()], original[..], "PPO leaves the imported weights as they were");
    // the policy's adapter goes out without the value head, as a causal LM's
    let (peft, saved) = head_and_task(&mut session);
    assert_eq!(saved, (serde_json::Value::Null, "CAUSAL_LM".into()));
    let mut other = imported();
    other.import_adapter(&peft).unwrap();
}

#[test]
fn hostile_or_unsupported_adapters_are_refused_by_name() {
    let mut session = imported();
    let good = {
        let mut s = imported();
        begin(&mut s, StageKind::Sft, &conversations(), 1);
        finish(&mut s);
        block_on(s.adapter_files("base")).unwrap()
    };
    let before = logits(&mut session, &IDS);
    let with = |key: &str, value: serde_json::Value| {
        let mut files = good.clone();
        let mut config: serde_json::Value = serde_json::from_slice(&files["adapter_config.json"]).unwrap();
        config[key] = value;
        files.insert("adapter_config.json".into(), config.to_string().into_bytes());
        files
    };
    for (files, says) in [
        (with("use_dora", true.into()), "use_dora"),
        (with("r", 8.into()), "shape"),
        (with("target_modules", "q_proj|v_proj".into()), "regular expression"),
        (with("target_modules", serde_json::json!(["fc9"])), "name none"),
        (with("peft_type", "IA3".into()), "LoRA"),
        (with("modules_to_save", serde_json::json!(["lm_head"])), "modules_to_save"),
        (with("modules_to_save", serde_json::json!(["score"])), "another kind of model"),
    ] {
        let err = session.import_adapter(&files).unwrap_err().to_string();
        assert!(err.contains(says), "{says}: {err}");
    }
    let mut cut = good.clone();
    cut.get_mut("adapter_model.safetensors").unwrap().truncate(100);
    assert!(session.import_adapter(&cut).unwrap_err().to_string().contains("corrupt"));
    assert_eq!(logits(&mut session, &IDS), before, "a refused adapter changes nothing");
}

fn max_rel(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0f64, |m, &x| m.max(x.abs() as f64));
    a.iter().zip(b).fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs())) / scale
}
