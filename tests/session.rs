//! The session, natively, on both backends (the CPU one and lavapipe's Vulkan): a model
//! created and pretrained, fine-tuned, a reward model, then PPO against it; the snapshot
//! of that PPO run restored in a new session continues bit for bit; a stage that cannot
//! begin leaves the session as it was.

use kiln::backend::BackendKind;
use kiln::data::corpus::{default_corpus, Language};
use kiln::data::documents;
use kiln::data::instruct::{instruction_set, Split};
use kiln::data::preference::{rankings_jsonl, Ranking, Verdict};
use kiln::gpu::Gpu;
use kiln::model::GptConfig;
use kiln::session::{Session, StageData};
use kiln::tokenizer::{Tokenizer, TokenizerKind};
use kiln::train::{StageKind, TrainConfig};
use kiln::with_run;
use pollster::block_on;

/// A short run of each stage: `steps` steps, the loss read back at each, validated (a
/// save point) every 2; PPO's rounds of two updates, so that a run of 4 steps has a save
/// point between its two rounds.
fn options(kind: StageKind, steps: u64) -> TrainConfig {
    let mut cfg = TrainConfig { steps, eval_every: 2, sample_every: 0, log_every: 1, ..kind.defaults() };
    cfg.align.ppo_epochs = 2;
    cfg
}

/// Rankings of three made-up answers to built-in questions, the exclaimed one first.
fn rankings() -> Vec<u8> {
    let rankings: Vec<Ranking> = instruction_set(Language::English, Split::Train, 8)
        .into_iter()
        .map(|c| Ranking {
            prompt: c[..1].to_vec(),
            answers: vec![format!("{}!", c[1].content), c[1].content.clone(), "no".into()],
            ranks: vec![1, 2, 3],
            verdict: Verdict::Ranked,
            annotator: None,
        })
        .collect();
    rankings_jsonl(&rankings).into_bytes()
}

/// Trains the session's run to its end; each step's loss, as bits.
fn finish(session: &mut Session) -> Vec<(u64, u32)> {
    let mut losses = Vec::new();
    while !with_run!(session.run().unwrap(), r => r.done()) {
        let p = with_run!(session.run_mut().unwrap(), r => block_on(r.train_one())).unwrap();
        losses.push((p.step, p.loss.expect("logged every step").to_bits()));
    }
    losses
}

fn begin(session: &mut Session, kind: StageKind, data: Option<&[u8]>, steps: u64) -> kiln::error::Result<Vec<String>> {
    block_on(session.begin(kind, StageData { bytes: data, lang: Language::English }, options(kind, steps)))
}

fn every_stage_on(gpu: Option<Gpu>, backend: BackendKind) {
    let text = default_corpus(Language::English, 60, 3);
    let mut session = Session::new(gpu.clone(), backend);
    session.tokenizer = Some(Tokenizer::train(&documents(&text), TokenizerKind::Bpe, Some(512)).unwrap());
    session.set_corpus(text);
    let vocab = session.tokenizer().unwrap().vocab_size();
    let model = GptConfig::gpt2(vocab, 128, 2, 2, 32);
    session.create_model(model, options(StageKind::Pretrain, 3)).unwrap();
    assert_eq!(session.run().unwrap().backend(), backend);
    assert_eq!(finish(&mut session).len(), 3);

    let skipped = begin(&mut session, StageKind::Sft, None, 2).unwrap();
    assert!(skipped.is_empty());
    finish(&mut session);
    assert!(session.reference.is_none(), "no model is kept before a preference stage");
    let held_out = session.held_out.clone();
    assert!(!held_out.is_empty(), "fine-tuning's held-out conversations are kept for the checks");

    // a bad line is skipped and said; the reward model starts from the fine-tuned model
    let mut ranked = rankings();
    ranked.extend_from_slice(b"{\"prompt\": 3}\n");
    let skipped = begin(&mut session, StageKind::Reward, Some(&ranked), 2).unwrap();
    assert!(skipped.len() == 1 && skipped[0].contains("line 9"), "{skipped:?}");
    finish(&mut session);
    assert!(session.reference.is_some() && session.reward.is_none());

    // PPO keeps the reward model just trained and starts again from the fine-tuned one
    begin(&mut session, StageKind::Ppo, None, 4).unwrap();
    assert!(session.reward.is_some());
    assert_eq!(session.held_out, held_out, "kept through the preference stages");
    let first = finish(&mut session);
    assert_eq!(first.len(), 4);

    // a stage that cannot begin (no rankings for DPO) changes nothing
    let err = begin(&mut session, StageKind::Dpo, None, 2).unwrap_err().to_string();
    assert!(err.contains("needs rankings"), "{err}");
    assert_eq!(session.run().unwrap().stage_kind(), Some(StageKind::Ppo));

    // the snapshot after 2 PPO steps, restored in a fresh session, gives steps 3 and 4
    // exactly as the run that never stopped
    let mut replay = Session::new(gpu.clone(), backend);
    replay.tokenizer = session.tokenizer.clone();
    replay.corpus = session.corpus.clone();
    // replay the same path to PPO's step 2, snapshot, restore elsewhere, finish
    replay.create_model(model, options(StageKind::Pretrain, 3)).unwrap();
    finish(&mut replay);
    begin(&mut replay, StageKind::Sft, None, 2).unwrap();
    finish(&mut replay);
    begin(&mut replay, StageKind::Reward, Some(&ranked), 2).unwrap();
    finish(&mut replay);
    begin(&mut replay, StageKind::Ppo, None, 4).unwrap();
    let saved = (0..2).map(|_| with_run!(replay.run_mut().unwrap(), r => block_on(r.train_one())).unwrap()).last();
    assert!(saved.unwrap().save_point, "PPO's step 2 ends a round");
    let files = block_on(replay.snapshot()).unwrap().expect("a stage has begun");
    assert!(files.contains_key("reference.safetensors") && files.contains_key("reward.safetensors"));
    let mut restored = Session::new(gpu, backend);
    let r = restored.restore(&files).unwrap();
    assert_eq!((r.step, r.note), (2, None));
    assert_eq!(restored.held_out, held_out, "the held-out conversations come back with the snapshot");
    assert_eq!(finish(&mut restored), first[2..].to_vec(), "a restored PPO run continues bit for bit");

    // a new model forgets the old one's kept models: its snapshot holds only its own
    assert!(session.reference.is_some() && session.reward.is_some());
    session.create_model(GptConfig { n_embd: 48, ..model }, options(StageKind::Pretrain, 2)).unwrap();
    assert!(session.reference.is_none() && session.reward.is_none() && session.held_out.is_empty());
    let files = block_on(session.snapshot()).unwrap().expect("a stage has begun");
    assert!(!files.contains_key("reference.safetensors") && !files.contains_key("reward.safetensors"));
}

#[test]
fn the_session_runs_every_stage_and_resumes_ppo_on_the_cpu() {
    every_stage_on(None, BackendKind::Cpu);
}

#[test]
fn the_session_runs_every_stage_and_resumes_ppo_on_the_gpu() {
    let gpu = block_on(Gpu::new()).expect("a GPU adapter (lavapipe)");
    every_stage_on(Some(gpu), BackendKind::Gpu);
}
