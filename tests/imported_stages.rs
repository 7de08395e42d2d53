//! An imported Llama-family model (tests/golden/smollm2_like: SmolLM2's shape, its ChatML
//! template, <|im_start|> = 1 and <|im_end|> = 2) fine-tuned in a session on the CPU, in its
//! own template and with its own tokens: SFT on a few conversations (loss only on each answer
//! and its <|im_end|>), DPO on a few pairs, the session's snapshot restored, and the model
//! exported with its own tokenizer files and imported back.

use kiln::backend::BackendKind;
use kiln::checkpoint::{from_zip, load_model, read_dir, to_zip, Files};
use kiln::data::chat::{Message, Role};
use kiln::data::corpus::Language;
use kiln::sample::SampleConfig;
use kiln::session::{Session, StageData};
use kiln::train::{StageKind, TrainConfig};
use kiln::with_run;
use pollster::block_on;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/smollm2_like");
const IM_END: u32 = 2;

fn folder() -> Files {
    read_dir(std::path::Path::new(DIR)).unwrap()
}

fn imported() -> Session {
    let mut session = Session::new(None, BackendKind::Cpu);
    let notes = session.import(&folder(), None).expect("a Llama-family folder imports into a session");
    assert!(notes.is_empty(), "nothing changed: {notes:?}");
    session
}

/// A short run: every step's loss read back, validated every 2 steps.
fn options(kind: StageKind, steps: u64) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 2,
        eval_every: 2,
        eval_batches: 1,
        sample_every: 0,
        log_every: 1,
        warmup_steps: 0,
        ..kind.defaults()
    }
}

fn conversations() -> Vec<u8> {
    let pairs = [("Hi", "Hello there."), ("Name a colour.", "Blue."), ("Two plus two?", "Four."), ("Bye", "Goodbye!")];
    pairs
        .iter()
        .map(|(q, a)| {
            serde_json::json!({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
                .to_string()
                + "\n"
        })
        .collect::<String>()
        .into_bytes()
}

fn pairs() -> Vec<u8> {
    let pairs =
        [("Say yes.", "Yes.", "No."), ("Greet me.", "Hello!", "Go away."), ("Count to two.", "One, two.", "Three.")];
    pairs
        .iter()
        .map(|(p, c, r)| serde_json::json!({"prompt": p, "chosen": c, "rejected": r}).to_string() + "\n")
        .collect::<String>()
        .into_bytes()
}

fn begin(session: &mut Session, kind: StageKind, data: &[u8], steps: u64) {
    let data = StageData { bytes: Some(data), lang: Language::English };
    let skipped = block_on(session.begin(kind, data, options(kind, steps))).unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
}

/// Trains to the end of the run; each step's loss.
fn finish(session: &mut Session) -> Vec<f32> {
    let mut losses = Vec::new();
    while let Some(p) = block_on(session.train_step(None)).unwrap() {
        losses.push(p.loss.expect("logged every step"));
    }
    losses
}

fn question(q: &str) -> Vec<Message> {
    vec![Message { role: Role::User, content: q.into() }]
}

#[test]
fn sft_on_an_imported_llama_supervises_its_own_template_answers() {
    let mut session = imported();
    let format = with_run!(session.run().unwrap(), r => r.chat_format());
    assert_eq!(format.end_of_turn(), IM_END, "ChatML's answers end with <|im_end|>");
    assert!(format.is_stop(IM_END) && !format.is_stop(1), "PPO strips <|im_end|> from answers, not <|im_start|>");
    // each conversation's supervised tokens are its answer and <|im_end|>, nothing else
    let tok = session.tokenizer().unwrap().clone();
    let convs = kiln::data::jsonl::read_conversations(&conversations()).unwrap().items;
    for conv in &convs {
        let r = format.render(&tok, conv).unwrap();
        let answer: Vec<u32> = r.ids.iter().zip(&r.supervised).filter(|(_, &s)| s).map(|(&id, _)| id).collect();
        assert_eq!(*answer.last().unwrap(), IM_END);
        assert_eq!(tok.decode(&answer[..answer.len() - 1]).unwrap(), conv[1].content);
        assert_eq!(r.ids[0], 1, "the template's <|im_start|> first, no Kiln token");
    }
    begin(&mut session, StageKind::Sft, &conversations(), 8);
    let row = with_run!(session.run().unwrap(), r => r.stage.as_ref().unwrap().example_row().cloned()).unwrap();
    let rendered: Vec<_> = convs.iter().map(|c| format.render(&tok, c).unwrap()).collect();
    assert!(
        rendered.iter().any(|r| r.ids == row.ids && r.supervised == row.supervised),
        "a row is a rendered conversation"
    );
    let losses = finish(&mut session);
    println!("SFT losses: {losses:?}");
    assert_eq!(losses.len(), 8);
    assert!(losses[7] < losses[0], "the loss drops: {losses:?}");
}

#[test]
fn dpo_snapshot_and_export_of_an_imported_llama_keep_its_template_and_tokens() {
    let mut session = imported();
    begin(&mut session, StageKind::Dpo, &pairs(), 4);
    // each row: the template's prompt with its generation prompt, the answer, <|im_end|>
    let (batch, prompt) = with_run!(session.run().unwrap(), r => (
        r.stage.as_ref().unwrap().val_batches(2, 1).remove(0),
        r.chat_prompt(&question("Say yes.")).unwrap(),
    ));
    let t = batch.t;
    for row in 0..2 {
        let w = &batch.weights[row * t..(row + 1) * t];
        let (first, last) = (w.iter().position(|&x| x > 0.0).unwrap(), w.iter().rposition(|&x| x > 0.0).unwrap());
        assert_eq!(batch.targets[row * t + last], IM_END, "an answer ends with the template's end of turn");
        assert_eq!(batch.tokens[row * t], 1, "the template's own first token");
        assert!(
            batch.tokens[row * t..row * t + first + 1].ends_with(&prompt[prompt.len() - 3..]),
            "the generation prompt"
        );
    }

    // two steps, then the snapshot (a save point); the rest in both sessions alike
    let first: Vec<f32> = (0..2).map(|_| block_on(session.train_step(None)).unwrap().unwrap().loss.unwrap()).collect();
    let files = block_on(session.snapshot()).unwrap().expect("a stage has begun");
    for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"] {
        assert_eq!(files[name], folder()[name], "{name} kept as it came");
    }
    let mut restored = Session::new(None, BackendKind::Cpu);
    restored.restore(&files).unwrap();
    let rest = finish(&mut session);
    let again = finish(&mut restored);
    println!("DPO losses: {first:?} then {rest:?}; restored {again:?}");
    assert!(first.iter().chain(&rest).all(|l| l.is_finite()));
    assert_eq!(rest, again, "a restored DPO run continues bit for bit");
    with_run!(restored.run().unwrap(), r => {
        assert_eq!(r.chat_prompt(&question("Say yes.")).unwrap(), prompt, "the same template");
        assert_eq!(r.model.roles.stop, vec![IM_END], "the same stops");
        assert!(r.tokenizer.is_pretrained() && r.tokenizer.token_to_id("<|pad|>").is_none());
    });

    // the export: its own tokenizer files unchanged; imported back, the same ids and answers
    let exported = block_on(session.model_files()).unwrap();
    for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"] {
        assert_eq!(exported[name], folder()[name], "{name} exported as it came");
    }
    let config: serde_json::Value = serde_json::from_slice(&exported["config.json"]).unwrap();
    assert_eq!((config["bos_token_id"].as_u64(), config["eos_token_id"].as_u64()), (Some(1), Some(2)));
    let mut back = Session::new(None, BackendKind::Cpu);
    back.import(&from_zip(&to_zip(&exported).unwrap()).unwrap(), None).unwrap();
    let greedy = SampleConfig { temperature: 0.0, max_tokens: 6, ..SampleConfig::default() };
    let answer = |s: &mut Session| {
        with_run!(s.run_mut().unwrap(), r => {
            let ids = r.chat_prompt(&question("Say yes.")).unwrap();
            (ids.clone(), block_on(r.continue_ids(&ids, &greedy)).unwrap())
        })
    };
    let (ids, text) = answer(&mut back);
    assert_eq!(ids, prompt, "re-imported: the same chat prompt ids");
    assert_eq!((ids, text), answer(&mut session), "re-imported: the same greedy answer");
    let loaded = load_model(&exported).unwrap();
    assert_eq!(loaded.roles, with_run!(session.run().unwrap(), r => r.model.roles.clone()));
    let trained = with_run!(session.run_mut().unwrap(), r => block_on(r.params())).unwrap();
    assert_eq!(loaded.params, trained, "the trained weights, exactly (f32)");
}

#[test]
fn pretraining_an_imported_llama_packs_documents_with_its_own_markers() {
    let mut session = Session::new(None, BackendKind::Cpu);
    let text = "The cat sat on the mat.\n\nA dog ran in the park.\n\n".repeat(24);
    session.set_corpus(text);
    session.import(&folder(), Some(options(StageKind::Pretrain, 2))).unwrap();
    let row = with_run!(session.run().unwrap(), r => r.stage.as_ref().unwrap().example_row().cloned()).unwrap();
    // <|im_start|> (its bos) before each document, <|im_end|> (its eos) after: no Kiln id
    let starts = row.ids.iter().filter(|&&id| id == 1).count();
    let ends = row.ids.iter().filter(|&&id| id == IM_END).count();
    assert!(starts > 0 && starts.abs_diff(ends) <= 1, "{:?}", row.ids);
    let losses = finish(&mut session);
    println!("pretraining losses: {losses:?}");
    assert!(losses.iter().all(|l| l.is_finite()) && losses.len() == 2);
}

#[test]
fn a_reward_model_and_ppo_run_on_an_imported_llama() {
    let mut session = imported();
    let mut ranked = pairs();
    ranked.extend(
        serde_json::json!({"prompt": "Thank me.", "chosen": "Thank you!", "rejected": "No."}).to_string().as_bytes(),
    );
    ranked.push(b'\n');
    begin(&mut session, StageKind::Reward, &ranked, 2);
    finish(&mut session);
    // the reward model's snapshot keeps its score head on the Llama-family layout
    let files = block_on(session.snapshot()).unwrap().unwrap();
    Session::new(None, BackendKind::Cpu).restore(&files).expect("a reward model's snapshot restores");
    let mut cfg = TrainConfig { sample_every: 1, ..options(StageKind::Ppo, 2) };
    cfg.batch_size = 4;
    cfg.align.rollout_prompts = 2;
    cfg.align.answers_per_prompt = 2;
    cfg.align.ppo_epochs = 2;
    cfg.align.answer_tokens = 8;
    let data = StageData { bytes: Some(&ranked), lang: Language::English };
    block_on(session.begin(StageKind::Ppo, data, cfg)).unwrap();
    let first = block_on(session.train_step(None)).unwrap().unwrap();
    let shown = first.sample.expect("PPO shows its rollouts' answers");
    println!("PPO step 1: loss {:?}, shown:\n{shown}", first.loss);
    assert!(first.loss.unwrap().is_finite() && shown.contains(" → "));
}
