//! SFT works, measured: the tiny preset, pretrained on the built-in stories, answers
//! held-out questions about stories it has never seen — exact-match accuracy and the
//! share of answers that end with `<|end|>`, before and after fine-tuning. On the CPU
//! backend, which computes what the GPU backend does (tests/golden.rs holds both against
//! PyTorch) about ten times faster on this machine; `KILN_TEST_BACKEND=gpu` runs the same
//! on the GPU backend (lavapipe here: about 20 minutes).

use kiln::backend::{Backend, CpuBackend, GpuBackend};
use kiln::data::corpus::{default_corpus, Language, DEFAULT_SEED, DEFAULT_STORIES};
use kiln::data::documents;
use kiln::data::instruct::{instruction_set, Split};
use kiln::gpu::Gpu;
use kiln::model::GptConfig;
use kiln::tokenizer::{Tokenizer, TokenizerKind};
use kiln::train::sft::{answer_report, AnswerReport, Sft};
use kiln::train::{StageKind, TrainConfig, Trainer};
use pollster::block_on;

const PRETRAIN_STEPS: u64 = 300;
const SFT_STEPS: u64 = 400;
const HELD_OUT: usize = 100;

fn report(name: &str, r: &AnswerReport) {
    println!(
        "{name}: {}/{} exact ({:.0}%), {:.0}% ended with <|end|>",
        r.exact,
        r.questions,
        100.0 * r.accuracy(),
        100.0 * r.ended_share()
    );
    for (q, expected, got) in &r.examples {
        println!("  {:?} → {got:?} (expected {expected:?})", q.lines().last().unwrap_or(""));
    }
}

fn train<B: Backend>(run: &mut Trainer<B>) {
    while !run.done() {
        let p = block_on(run.train_one()).unwrap();
        if p.loss.is_some() || p.val_loss.is_some() {
            println!(
                "{:?} step {:>4} loss {:?} val {:?} {:.0} tok/s",
                p.stage.unwrap(),
                p.step,
                p.loss,
                p.val_loss,
                p.tokens_per_s
            );
        }
    }
}

fn pretrain_then_fine_tune<B: Backend>(be: B, language: Language) -> (AnswerReport, AnswerReport) {
    let text = default_corpus(language, DEFAULT_STORIES, DEFAULT_SEED);
    let tokenizer = Tokenizer::train(&documents(&text), TokenizerKind::Bpe, Some(512)).unwrap();
    let config = GptConfig::preset("tiny", tokenizer.vocab_size()).unwrap();
    let cfg = TrainConfig {
        steps: PRETRAIN_STEPS,
        eval_every: PRETRAIN_STEPS,
        sample_every: 0,
        log_every: 100,
        ..TrainConfig::default()
    };
    let mut run = Trainer::pretrain(be, tokenizer, &text, config, cfg).unwrap();
    train(&mut run);
    let held_out = instruction_set(language, Split::HeldOut, HELD_OUT);
    let before = block_on(answer_report(&mut run, &held_out, 24)).unwrap();
    report("before SFT", &before);

    let sft = TrainConfig {
        steps: SFT_STEPS,
        eval_every: 100,
        sample_every: 0,
        log_every: 50,
        ..TrainConfig::for_stage(StageKind::Sft)
    };
    let stage = Sft::builtin(&run.tokenizer, language, config.block_size, sft.seed).unwrap();
    println!(
        "SFT: {} training conversations ({} cut at the context, {} left out)",
        stage.rows.data.train.len(),
        stage.truncated,
        stage.dropped
    );
    run.begin(Box::new(stage), sft).unwrap();
    train(&mut run);
    let after = block_on(answer_report(&mut run, &held_out, 24)).unwrap();
    report("after SFT", &after);
    (before, after)
}

#[test]
fn fine_tuning_teaches_the_tiny_preset_to_answer_held_out_questions() {
    let (before, after) = if std::env::var("KILN_TEST_BACKEND").as_deref() == Ok("gpu") {
        let gpu = block_on(Gpu::new()).expect("a GPU adapter (lavapipe)");
        pretrain_then_fine_tune(GpuBackend::new(gpu), Language::English)
    } else {
        pretrain_then_fine_tune(CpuBackend::new(), Language::English)
    };
    assert!(before.accuracy() < 0.2, "before SFT the model should not answer: {:.2}", before.accuracy());
    assert!(after.accuracy() >= 0.6, "after SFT: {:.2} exact", after.accuracy());
    assert!(after.accuracy() >= before.accuracy() + 0.5, "SFT should raise accuracy a lot");
    assert!(after.ended_share() >= 0.9, "answers should end with <|end|>: {:.2}", after.ended_share());
}
