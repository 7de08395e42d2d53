//! Learning as the person ranks, in the session (what the page and the JS API call): each
//! ranking joins the loop, an update of DPO steps lands every `EVERY` rankings on the model
//! the next answers come from, held near the fine-tuned model; undo puts back the model
//! before the last update bit for bit; the session's snapshot, restored in a new session,
//! goes on with the loop where it was.

use kiln::backend::BackendKind;
use kiln::data::corpus::{default_corpus, Language};
use kiln::data::documents;
use kiln::data::instruct::{instruction_set, Split};
use kiln::data::preference::{Ranking, Verdict};
use kiln::model::GptConfig;
use kiln::session::{Session, StageData};
use kiln::tokenizer::{Tokenizer, TokenizerKind};
use kiln::train::{StageKind, TrainConfig};
use kiln::with_run;
use pollster::block_on;

const EVERY: usize = 2;
const STEPS: u64 = 2;

fn params(session: &mut Session) -> Vec<u32> {
    with_run!(session.run_mut().unwrap(), r => block_on(r.params())).unwrap().iter().map(|x| x.to_bits()).collect()
}

/// Three made-up answers to built-in question `i`, the exclaimed one ranked first.
fn ranking(i: usize) -> Ranking {
    let c = &instruction_set(Language::English, Split::Train, i + 1)[i];
    Ranking {
        prompt: c[..1].to_vec(),
        answers: vec![format!("{}!", c[1].content), c[1].content.clone(), format!("no {i}")],
        ranks: vec![1, 2, 3],
        verdict: Verdict::Ranked,
        annotator: None,
    }
}

fn finish(session: &mut Session) {
    while !with_run!(session.run().unwrap(), r => r.done()) {
        with_run!(session.run_mut().unwrap(), r => block_on(r.train_one())).unwrap();
    }
}

/// A session with a tiny model, briefly pretrained and fine-tuned, and its weights' bits.
fn fine_tuned_session() -> (Session, Vec<u32>) {
    let text = default_corpus(Language::English, 60, 3);
    let mut session = Session::new(None, BackendKind::Cpu);
    session.tokenizer = Some(Tokenizer::train(&documents(&text), TokenizerKind::Bpe, Some(512)).unwrap());
    session.set_corpus(text);
    let vocab = session.tokenizer().unwrap().vocab_size();
    let quick = |kind: StageKind| TrainConfig { steps: 2, sample_every: 0, log_every: 1, ..kind.defaults() };
    session.create_model(GptConfig::gpt2(vocab, 128, 2, 2, 32), quick(StageKind::Pretrain)).unwrap();
    finish(&mut session);
    block_on(session.begin(StageKind::Sft, StageData { bytes: None, lang: Language::English }, quick(StageKind::Sft)))
        .unwrap();
    finish(&mut session);
    let fine_tuned = params(&mut session);
    (session, fine_tuned)
}

#[test]
fn updates_land_as_rankings_arrive_undo_is_exact_and_a_reload_goes_on() {
    let (mut session, fine_tuned) = fine_tuned_session();
    let cfg = TrainConfig::for_stage(StageKind::Dpo);

    // the first ranking waits; the second brings the first update
    assert_eq!(block_on(session.rank_online(ranking(0), (EVERY, STEPS), &cfg)).unwrap(), None);
    assert_eq!(params(&mut session), fine_tuned, "no update before the second ranking");
    let first = block_on(session.rank_online(ranking(1), (EVERY, STEPS), &cfg)).unwrap().expect("an update");
    assert_eq!((first.rankings, first.trained_on, first.held_back), (2, 1, 1));
    assert!(first.val_pair_accuracy.is_some_and(|a| (0.0..=1.0).contains(&a)));
    assert!(first.kl.is_some_and(f64::is_finite), "the KL to the fine-tuned model is measured: {first:?}");
    let after_first = params(&mut session);
    assert_ne!(after_first, fine_tuned, "the update changed the model");
    assert_eq!(
        session.reference.as_ref().map(|r| r.iter().map(|x| x.to_bits()).collect::<Vec<_>>()),
        Some(fine_tuned.clone())
    );
    assert_eq!(session.run().unwrap().stage_kind(), Some(StageKind::Dpo));

    // two more rankings: a second update, from the first's model
    block_on(session.rank_online(ranking(2), (EVERY, STEPS), &cfg)).unwrap();
    let second = block_on(session.rank_online(ranking(3), (EVERY, STEPS), &cfg)).unwrap().expect("an update");
    assert_eq!((second.rankings, second.trained_on + second.held_back), (4, 4));
    let after_second = params(&mut session);
    assert_ne!(after_second, after_first);

    // undo: the first update's model, bit for bit; the rankings stay
    assert!(session.undo_online().unwrap());
    assert_eq!(params(&mut session), after_first, "undo restores the model before the last update");
    let online = session.online.as_ref().unwrap();
    assert_eq!((online.dpo.rankings.len(), online.dpo.updates.len(), online.undoable()), (4, 1, 1));

    // a reload: the snapshot in a new session holds the model, the reference and the loop
    let files = block_on(session.snapshot()).unwrap().expect("a snapshot mid-loop");
    assert!(files.contains_key("online.json"));
    let mut reloaded = Session::new(None, BackendKind::Cpu);
    reloaded.restore(&files).unwrap();
    assert_eq!(params(&mut reloaded), after_first);
    let online = reloaded.online.as_ref().unwrap();
    assert_eq!((online.dpo.rankings.len(), online.dpo.updates.len(), online.undoable()), (4, 1, 0));
    // the loop goes on: the next update comes two rankings on, in both sessions alike
    for s in [&mut session, &mut reloaded] {
        assert_eq!(block_on(s.rank_online(ranking(4), (EVERY, STEPS), &cfg)).unwrap(), None);
        let next = block_on(s.rank_online(ranking(5), (EVERY, STEPS), &cfg)).unwrap().expect("an update");
        assert_eq!(next.rankings, 6);
    }
    assert_eq!(params(&mut session), params(&mut reloaded), "the reloaded loop trains as the first would have");
    assert!(reloaded.undo_online().unwrap());
    assert_eq!(params(&mut reloaded), after_first);
    assert!(!reloaded.undo_online().unwrap(), "an update from before the reload cannot be undone");
}

/// Under LoRA the updates train adapters (fresh at the first update, the same ones after):
/// undo puts back the adapters each update began from, so the model is bit for bit the one
/// before it.
#[test]
fn under_lora_updates_train_adapters_and_undo_is_exact() {
    let (mut session, fine_tuned) = fine_tuned_session();
    let cfg = TrainConfig { lora_rank: 4, ..TrainConfig::for_stage(StageKind::Dpo) };
    block_on(session.rank_online(ranking(0), (EVERY, STEPS), &cfg)).unwrap();
    block_on(session.rank_online(ranking(1), (EVERY, STEPS), &cfg)).unwrap().expect("an update");
    assert!(with_run!(session.run().unwrap(), r => r.model.lora.is_some()), "the update trained adapters");
    let after_first = params(&mut session);
    assert_ne!(after_first, fine_tuned);
    block_on(session.rank_online(ranking(2), (EVERY, STEPS), &cfg)).unwrap();
    block_on(session.rank_online(ranking(3), (EVERY, STEPS), &cfg)).unwrap().expect("an update");
    assert_ne!(params(&mut session), after_first);
    assert!(session.undo_online().unwrap());
    assert_eq!(params(&mut session), after_first, "the second update undone");
    assert!(session.undo_online().unwrap());
    assert_eq!(params(&mut session), fine_tuned, "the first update undone: fresh adapters change nothing");
}
