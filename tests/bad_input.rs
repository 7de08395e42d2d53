//! Bad input gets a clear error that names the problem, and nothing is half-written:
//! empty, non-UTF-8 and binary files, text shorter than one context, configurations over
//! the GPU's limits, and a loss that turns NaN.

use kiln::backend::{Backend, CpuBackend, GpuBackend};
use kiln::data::corpus::{default_corpus, Language};
use kiln::data::jsonl::read_conversations;
use kiln::data::{check_file_size, documents, text_from_bytes, Dataset, MAX_TEXT_BYTES};
use kiln::error::KilnError;
use kiln::gpu::Gpu;
use kiln::model::GptConfig;
use kiln::tokenizer::{Tokenizer, TokenizerKind};
use kiln::train::{TrainConfig, Trainer};
use pollster::block_on;

fn says<T>(result: Result<T, KilnError>, needle: &str) {
    let err = match result {
        Ok(_) => panic!("should be refused (expected an error mentioning {needle:?})"),
        Err(e) => e.to_string(),
    };
    println!("refused: {err}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
}

#[test]
fn unusable_files_are_refused_by_name() {
    says(text_from_bytes(b""), "empty");
    says(text_from_bytes(b"caf\xc3\xa9 \xff\xfe rest"), "not UTF-8 text: the byte at offset 6");
    says(text_from_bytes(b"PK\x03\x04\x00\x00binary"), "binary");
    says(text_from_bytes(b" \n\t \n"), "whitespace");
    assert_eq!(text_from_bytes("一只小狐狸\r\n\r\n第二个故事".as_bytes()).unwrap(), "一只小狐狸\n\n第二个故事");
    // UTF-16, as Windows Notepad's "Unicode" saves it (with a byte-order mark) and without one
    let utf16: Vec<u8> = "Once upon a time".encode_utf16().flat_map(u16::to_le_bytes).collect();
    says(
        text_from_bytes(&[b"\xFF\xFE".as_slice(), &utf16].concat()),
        "UTF-16 text; Kiln reads UTF-8: save it as UTF-8",
    );
    says(text_from_bytes(&utf16), "UTF-16 text");
    let big_endian: Vec<u8> = "一只小狐狸".encode_utf16().flat_map(u16::to_be_bytes).collect();
    says(text_from_bytes(&[b"\xFE\xFF".as_slice(), &big_endian].concat()), "UTF-16 text");
    says(read_conversations(&utf16), "UTF-16 text");
    // a UTF-8 byte-order mark is dropped, not trained on
    assert_eq!(text_from_bytes("\u{FEFF}Once upon a time".as_bytes()).unwrap(), "Once upon a time");
    // over the cap: refused by the size alone, before a byte is read (the CLI and the page)
    says(
        check_file_size(300 << 20, MAX_TEXT_BYTES, "training text"),
        "the file is 300.0 MiB, over the 256 MiB Kiln reads for training text",
    );
}

#[test]
fn text_shorter_than_one_context_is_refused() {
    let tok = Tokenizer::train(&["hello there, hello again"], TokenizerKind::Char, None).unwrap();
    says(Dataset::packed(&tok, "hello there", 64, 0.1, 0), "shorter than one context");
    // just long enough: both splits get something
    let text = "hello there, hello again. ".repeat(4);
    let data = Dataset::packed(&tok, &text, 16, 0.1, 0).unwrap();
    assert!(!data.train.is_empty() && !data.val.is_empty());
}

#[test]
fn a_model_over_the_gpu_limits_is_refused_before_allocating() {
    let gpu = block_on(Gpu::new()).expect("a GPU adapter (lavapipe)");
    let text = default_corpus(Language::English, 100, 1);
    let tok = Tokenizer::train(&documents(&text), TokenizerKind::Char, None).unwrap();
    // logits of 64 × 1024 positions × V alone exceed a 128 MiB (or 1 GiB) binding
    let huge = GptConfig::gpt2(tok.vocab_size(), 4096, 1, 1, 64);
    let cfg = TrainConfig { batch_size: 64, ..Default::default() };
    let before = gpu.memory().0;
    says(Trainer::pretrain(GpuBackend::new(gpu.clone()), tok, &text, huge, cfg), "maxStorageBufferBindingSize");
    assert_eq!(gpu.memory().0, before, "nothing may be allocated for a refused model");
    says(GptConfig::preset("gigantic", 100), "unknown preset");
    says(GptConfig::gpt2(100, 64, 2, 3, 64).validate(), "multiple of n_head");
}

#[test]
fn bad_training_settings_are_refused() {
    let text = default_corpus(Language::English, 100, 1);
    let tok = Tokenizer::train(&documents(&text), TokenizerKind::Char, None).unwrap();
    let model = GptConfig::preset("tiny", tok.vocab_size()).unwrap();
    let cfg = TrainConfig { lr: -1.0, ..Default::default() };
    says(Trainer::pretrain(CpuBackend::new(), tok, &text, model, cfg), "lr must be above 0 and at most 1, not -1");
    // past 1 AdamW only diverges: refused before a step, not found out by the NaN guard
    let tok = Tokenizer::train(&documents(&text), TokenizerKind::Char, None).unwrap();
    let cfg = TrainConfig { lr: 1e6, ..Default::default() };
    says(Trainer::pretrain(CpuBackend::new(), tok, &text, model, cfg), "lr must be above 0 and at most 1, not 1000000");
    let tok = Tokenizer::train(&documents(&text), TokenizerKind::Char, None).unwrap();
    let wrong_vocab = GptConfig { vocab_size: 7, ..model };
    says(Trainer::pretrain(CpuBackend::new(), tok, &text, wrong_vocab, TrainConfig::default()), "vocabulary");
}

/// The divergence guard (train/guard.rs) on both backends: a NaN loss is rolled back to the
/// last validation with half the learning rate and training goes on; a run that keeps
/// diverging stops with advice after three rollbacks.
fn nan_rolls_back_then_stops<B: Backend>(be: B, name: &str) {
    let text = default_corpus(Language::English, 100, 1);
    let tok = Tokenizer::train(&documents(&text), TokenizerKind::Char, None).unwrap();
    let model = GptConfig::gpt2(tok.vocab_size(), 32, 1, 2, 16);
    let cfg = TrainConfig { log_every: 1, eval_every: 2, sample_every: 0, ..Default::default() };
    let lr = cfg.lr;
    let mut run = Trainer::pretrain(be, tok, &text, model, cfg).unwrap();
    for _ in 0..2 {
        block_on(run.train_one()).unwrap();
    }
    let good = block_on(run.params()).unwrap();
    // a poisoned weight (as from an overflowing update) makes the next loss NaN
    let poison = |run: &mut Trainer<B>| {
        let offset = run.model.layout.get("h.0.ln_1.weight").unwrap().offset;
        run.be.write(run.model.weights.all_f32(), offset, &[f32::NAN]);
    };
    poison(&mut run);
    let p = block_on(run.train_one()).expect("a NaN is rolled back, not fatal");
    let event = p.event.expect("the rollback is reported");
    println!("[{name}] {event}");
    assert!(
        event
            .starts_with("the loss became NaN at step 3: rolled back to step 2 and halved the learning rate to 1.5e-3"),
        "{event}"
    );
    assert_eq!((p.step, run.step), (2, 2));
    assert_eq!(block_on(run.params()).unwrap(), good, "the weights are the last validation's");
    assert_eq!(run.cfg.lr, lr / 2.0);
    let next = block_on(run.train_one()).unwrap();
    assert!(next.event.is_none() && next.loss.is_some_and(f32::is_finite), "training goes on: {:?}", next.loss);
    // diverging again and again: three more rollbacks, then a stop with advice
    let mut events = 1;
    let err = loop {
        poison(&mut run);
        match block_on(run.train_one()) {
            Ok(p) => {
                assert!(p.event.is_some(), "step {} should have rolled back", p.step);
                events += 1;
            }
            Err(e) => break e,
        }
    };
    println!("[{name}] refused: {err}");
    assert_eq!(events, 3);
    assert!(matches!(err, KilnError::Diverged(_)), "{err:?}");
    assert!(err.to_string().contains("lower the learning rate further"), "{err}");
}

#[test]
fn a_nan_loss_rolls_back_and_repeated_divergence_stops_with_advice() {
    let gpu = block_on(Gpu::new()).expect("a GPU adapter (lavapipe)");
    nan_rolls_back_then_stops(GpuBackend::new(gpu), "gpu");
    nan_rolls_back_then_stops(CpuBackend::new(), "cpu");
}

#[test]
fn a_loss_spike_is_caught_after_the_warmup() {
    let mut guard = kiln::train::guard::Guard::default();
    for _ in 0..5 {
        assert_eq!(guard.is_spike(2.0), None);
    }
    assert_eq!(guard.is_spike(9.0), None, "not yet: the loss falls fast at first");
    for _ in 0..10 {
        assert_eq!(guard.is_spike(2.0), None);
    }
    let average = guard.is_spike(9.0).expect("over 3× the running average");
    assert!((2.0..3.0).contains(&average), "{average}");
    assert_eq!(guard.is_spike(5.0), None, "under 3×");
}

#[test]
fn a_prompt_longer_than_the_context_still_leaves_room_for_an_answer() {
    use kiln::data::chat::{Message, Role};
    use kiln::tokenizer::{ASSISTANT, BOS};
    let text = default_corpus(Language::English, 100, 1);
    let tok = Tokenizer::train(&documents(&text), TokenizerKind::Char, None).unwrap();
    let long = vec![Message { role: Role::User, content: "tell me a very long story ".repeat(40) }];
    for t in [32, 64, 128] {
        let ids = kiln::train::sft::chat_prompt(&tok, &long, t).unwrap();
        let room = (t / 4).clamp(1, 32);
        assert_eq!(ids.len(), t - room, "context {t}");
        assert_eq!((ids[0], *ids.last().unwrap()), (BOS, ASSISTANT), "starts with <|bos|>, ends ready for the answer");
    }
}

#[test]
fn a_model_past_the_cpu_backends_memory_in_the_browser_is_refused() {
    // the CPU backend in wasm32 may use 3 GiB in all: the small preset at context 4096 and
    // batch 64 needs more, though no single buffer passes a limit
    let model = GptConfig::gpt2(512, 4096, 4, 4, 128);
    says(
        kiln::train::check_fits_within(None, Some(3 << 30), &model, 64, 4096),
        "MiB in all, over the 3072 MiB this backend can use",
    );
    assert!(kiln::train::check_fits_within(None, Some(3 << 30), &model, 1, 4096).is_ok());
}
