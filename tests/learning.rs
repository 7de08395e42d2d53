//! The tiny preset learns the default corpus: its validation loss ends far below the
//! corpus's unigram entropy (what knowing only the token frequencies gives), and greedy
//! samples are printed. On the CPU backend: 200 steps there take seconds, on lavapipe over
//! three minutes; the GPU backend is held to the CPU's losses step by step in
//! tests/train_step.rs and golden.rs, and trains end to end in the browser tests.

use kiln::backend::CpuBackend;
use kiln::data::corpus::{default_corpus, Language, DEFAULT_SEED};
use kiln::data::documents;
use kiln::model::GptConfig;
use kiln::sample::SampleConfig;
use kiln::tokenizer::{Tokenizer, TokenizerKind};
use kiln::train::pretrain::Pretrain;
use kiln::train::{TrainConfig, Trainer};
use pollster::block_on;

#[test]
fn tiny_preset_learns_the_default_corpus() {
    let text = default_corpus(Language::English, 1500, DEFAULT_SEED);
    let tokenizer = Tokenizer::train(&documents(&text), TokenizerKind::Bpe, Some(384)).unwrap();
    let config = GptConfig::preset("tiny", tokenizer.vocab_size()).unwrap();
    let cfg = TrainConfig {
        steps: 200,
        batch_size: 8,
        eval_every: 100,
        sample_every: 0,
        log_every: 50,
        ..Default::default()
    };
    let mut run = Trainer::pretrain(CpuBackend::new(), tokenizer, &text, config, cfg).unwrap();
    let entropy =
        Pretrain::new(&run.tokenizer, &text, config.block_size, &run.cfg).unwrap().rows.data.unigram_entropy();
    let first = block_on(run.validate()).unwrap();
    println!("unigram entropy {entropy:.3} nats; validation loss before training {first:.3}");
    let mut last = None;
    while !run.done() {
        let p = block_on(run.train_one()).unwrap();
        if p.loss.is_some() || p.val_loss.is_some() {
            println!(
                "step {:>4} loss {:?} val {:?} lr {:.2e} {:.0} tok/s",
                p.step, p.loss, p.val_loss, p.lr, p.tokens_per_s
            );
        }
        if p.val_loss.is_some() {
            last = p.val_loss;
        }
    }
    let val = last.unwrap();
    for prompt in ["Once upon a time", "Tom was a"] {
        let greedy = SampleConfig { temperature: 0.0, max_tokens: 40, ..Default::default() };
        println!("greedy: {prompt}|{}", block_on(run.sample(prompt, &greedy)).unwrap());
    }
    println!("validation loss {val:.3} vs unigram entropy {entropy:.3} ({:.0}%)", 100.0 * val as f64 / entropy);
    assert!((val as f64) < 0.5 * entropy, "validation loss {val} is not well below the unigram entropy {entropy}");
}
