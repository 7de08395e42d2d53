//! Supervised fine-tuning through the shared trainer: prompt positions get exactly zero
//! gradient, accumulation equals one big batch, a run resumed mid-SFT is bit-exact on
//! both backends, and a Hugging Face GPT-2 folder without Kiln's special tokens gets
//! them and fine-tunes.

use kiln::backend::{Backend, CpuBackend, GpuBackend};
use kiln::checkpoint::{load_model, model_files, read_dir, write_dir, Files};
use kiln::data::chat::{render, Message, Role};
use kiln::data::corpus::{default_corpus, Language};
use kiln::data::instruct::{instruction_set, Split};
use kiln::data::{documents, make_batch, Row};
use kiln::gpu::Gpu;
use kiln::model::{backward, forward, Activations, Gpt, GptConfig, ParamLayout};
use kiln::tokenizer::{Tokenizer, TokenizerKind, SPECIAL_TOKENS};
use kiln::train::resume::{resume, resume_files, saved_stage};
use kiln::train::sft::Sft;
use kiln::train::{StageKind, TokenBatch, TrainConfig, Trainer};
use pollster::block_on;

fn tokenizer() -> Tokenizer {
    let text = default_corpus(Language::English, 300, 5);
    Tokenizer::train(&documents(&text), TokenizerKind::Bpe, Some(320)).unwrap()
}

fn small(vocab: usize) -> GptConfig {
    GptConfig::gpt2(vocab, 128, 2, 2, 32)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Gradients of one batch (all parameters, and dlogits) on `be`, weights normalised to
/// sum to 1, from the same initial model every time.
fn gradients<B: Backend>(be: &mut B, config: GptConfig, batch: &TokenBatch) -> (Vec<f32>, Vec<f32>) {
    let batch = batch.scaled((1.0 / batch.weight_sum()) as f32);
    let model = Gpt::new(be, config, 9).unwrap();
    let acts = Activations::new(be, &config, batch.b, batch.t).unwrap();
    be.write_u32(&acts.tokens, 0, &batch.tokens);
    be.write_u32(&acts.targets, 0, &batch.targets);
    be.write(&acts.weights, 0, &batch.weights);
    forward(be, &model, &acts);
    backward(be, &model, &acts, &batch.tokens).unwrap();
    // after the backward pass the logits' buffer holds their gradient
    (block_on(be.read(model.grads())).unwrap(), block_on(be.read(&acts.logits)).unwrap())
}

#[test]
fn prompt_positions_receive_exactly_zero_gradient() {
    let tok = tokenizer();
    let config = small(tok.vocab_size());
    let (t, v) = (config.block_size, config.vocab_size);
    let convs = instruction_set(Language::English, Split::Train, 2);
    let rows: Vec<Row> = convs
        .iter()
        .map(|c| {
            let r = render(&tok, c).unwrap();
            Row { ids: r.ids, supervised: r.supervised }
        })
        .collect();
    let batch = make_batch(&rows.iter().collect::<Vec<_>>(), rows.len(), t);
    let gpu = block_on(Gpu::new()).expect("a GPU adapter (lavapipe)");
    let mut be = GpuBackend::new(gpu);
    let (grads, dlogits) = gradients(&mut be, config, &batch);

    // every position whose target is a prompt token (or padding) has a zero dlogits row
    let masked: Vec<usize> = (0..batch.weights.len()).filter(|&i| batch.weights[i] == 0.0).collect();
    let supervised = batch.weights.len() - masked.len();
    println!("{} positions: {supervised} supervised, {} masked", batch.weights.len(), masked.len());
    assert!(supervised > 0 && masked.len() > supervised);
    for &i in &masked {
        assert!(dlogits[i * v..(i + 1) * v].iter().all(|&g| g == 0.0), "position {i} has a gradient");
    }

    // other targets at the masked positions change no gradient, bit for bit
    let mut other = batch.clone();
    for &i in &masked {
        other.targets[i] = (other.targets[i] * 7 + 3) % v as u32;
    }
    assert_ne!(other.targets, batch.targets);
    let (grads_other, _) = gradients(&mut be, config, &other);
    assert!(bits(&grads) == bits(&grads_other), "prompt targets leaked into the gradient");

    // the same batch with the prompt positions weighted: they carry gradient
    let mut weighted = batch.clone();
    let real = |i: usize| i % t < rows[i / t].ids.len() - 1;
    weighted.weights = (0..batch.weights.len()).map(|i| if real(i) { 1.0 } else { 0.0 }).collect();
    let (grads_all, dlogits_all) = gradients(&mut be, config, &weighted);
    let moved = masked.iter().filter(|&&i| dlogits_all[i * v..(i + 1) * v].iter().any(|&g| g != 0.0)).count();
    println!("weighting the prompts gives {moved} of {} masked positions a gradient", masked.len());
    assert!(moved > supervised, "weighted prompt positions should carry gradient");
    let diff = grads.iter().zip(&grads_all).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff > 1e-4, "weighting the prompts should change the gradient (max diff {diff})");
}

fn sft_run<B: Backend>(be: B, tok: Tokenizer, cfg: TrainConfig) -> Trainer<B> {
    let config = small(tok.vocab_size());
    let stage = Sft::builtin(&tok, Language::English, config.block_size, cfg.seed).unwrap();
    let mut run = Trainer::with_model(be, tok, config, None, 4).unwrap();
    run.begin(Box::new(stage), cfg).unwrap();
    run
}

#[test]
fn sft_accumulation_over_micro_batches_equals_one_big_batch() {
    let tok_json = tokenizer().to_json().unwrap();
    let base = TrainConfig {
        steps: 3,
        log_every: 1,
        eval_every: 100,
        sample_every: 0,
        ..TrainConfig::for_stage(StageKind::Sft)
    };
    let run_with = |batch_size, grad_accum| {
        let tok = Tokenizer::from_json(&tok_json).unwrap();
        let mut run = sft_run(CpuBackend::new(), tok, TrainConfig { batch_size, grad_accum, ..base.clone() });
        let mut losses = Vec::new();
        while !run.done() {
            losses.push(block_on(run.train_one()).unwrap().loss.unwrap());
        }
        (losses, block_on(run.be.read(run.model.weights.all_f32())).unwrap())
    };
    let (l_acc, p_acc) = run_with(2, 3);
    let (l_big, p_big) = run_with(6, 1);
    let worst = p_acc.iter().zip(&p_big).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("losses accumulated {l_acc:?}, one batch {l_big:?}; weights differ by at most {worst:.2e}");
    for (a, b) in l_acc.iter().zip(&l_big) {
        assert!((a - b).abs() <= 1e-5 * b.abs(), "loss {a} vs {b}");
    }
    assert!(worst < 1e-6, "weights differ by {worst}");
}

/// (step, loss bits, validation loss bits) of a step.
type StepLog = (u64, u32, Option<u32>);

/// The log of each remaining step, and the final parameters' bits.
fn finish<B: Backend>(run: &mut Trainer<B>) -> (Vec<StepLog>, Vec<u32>) {
    let mut log = Vec::new();
    while !run.done() {
        let p = block_on(run.train_one()).unwrap();
        log.push((p.step, p.loss.unwrap().to_bits(), p.val_loss.map(f32::to_bits)));
    }
    (log, bits(&block_on(run.be.read(run.model.weights.all_f32())).unwrap()))
}

fn resume_mid_sft_is_bit_exact<B: Backend>(make: impl Fn() -> B, name: &str) {
    let tok_json = tokenizer().to_json().unwrap();
    let cfg = TrainConfig {
        steps: 10,
        batch_size: 4,
        grad_accum: 2,
        log_every: 1,
        eval_every: 4,
        sample_every: 0,
        ..TrainConfig::for_stage(StageKind::Sft)
    };
    let fresh = || sft_run(make(), Tokenizer::from_json(&tok_json).unwrap(), cfg.clone());
    let (straight, params) = finish(&mut fresh());
    let dir = std::env::temp_dir().join(format!("kiln-sft-resume-{name}-{}", std::process::id()));
    {
        let mut run = fresh();
        for _ in 0..5 {
            block_on(run.train_one()).unwrap();
        }
        write_dir(&dir, &block_on(resume_files(&mut run)).unwrap()).unwrap();
    }
    let files = read_dir(&dir).unwrap();
    assert_eq!(saved_stage(&files), Some(StageKind::Sft));
    assert!(files.contains_key("sft-train.jsonl") && files.contains_key("sft-val.jsonl"));
    let mut run = resume(make(), &files).unwrap();
    assert_eq!((run.step, run.stage().unwrap().kind()), (5, StageKind::Sft));
    let (resumed, params_resumed) = finish(&mut run);
    std::fs::remove_dir_all(&dir).unwrap();
    println!(
        "[{name}] SFT steps 6..10 straight: {:?}",
        straight[5..].iter().map(|s| f32::from_bits(s.1)).collect::<Vec<_>>()
    );
    println!(
        "[{name}] SFT steps 6..10 resumed:  {:?}",
        resumed.iter().map(|s| f32::from_bits(s.1)).collect::<Vec<_>>()
    );
    assert_eq!(&straight[5..], &resumed[..], "[{name}] losses differ after resuming");
    assert!(params == params_resumed, "[{name}] parameters differ after resuming");
}

#[test]
fn resuming_mid_sft_on_the_gpu_is_bit_exact() {
    let gpu = block_on(Gpu::new()).expect("a GPU adapter (lavapipe)");
    resume_mid_sft_is_bit_exact(|| GpuBackend::new(gpu.clone()), "gpu");
}

#[test]
fn resuming_mid_sft_on_the_cpu_is_bit_exact() {
    resume_mid_sft_is_bit_exact(CpuBackend::new, "cpu");
}

/// A GPT-2 folder as transformers saves one for a tokenizer without Kiln's special
/// tokens: Kiln's tokenizer with the eight removed and every id moved down by 8.
fn foreign_folder() -> (Files, Tokenizer, GptConfig, Vec<f32>) {
    let kiln_tok = tokenizer();
    let mut json: serde_json::Value = serde_json::from_str(&kiln_tok.to_json().unwrap()).unwrap();
    let vocab = json["model"]["vocab"].as_object_mut().unwrap();
    for s in SPECIAL_TOKENS {
        vocab.remove(s);
    }
    for id in vocab.values_mut() {
        *id = (id.as_u64().unwrap() - SPECIAL_TOKENS.len() as u64).into();
    }
    json["added_tokens"] = serde_json::json!([]);
    json["post_processor"] = serde_json::Value::Null;
    let config = small(kiln_tok.vocab_size() - SPECIAL_TOKENS.len());
    let params = ParamLayout::new(&config).init(&config, 21);
    let mut files = model_files(&config, &ParamLayout::new(&config), &kiln_tok, &params).unwrap(); // config sized for the foreign vocab
    files.insert("tokenizer.json".into(), serde_json::to_vec(&json).unwrap());
    (files, kiln_tok, config, params)
}

#[test]
fn a_gpt2_folder_without_kiln_special_tokens_gets_them_and_fine_tunes() {
    let (files, kiln_tok, config, params) = foreign_folder();
    let loaded = load_model(&files).unwrap();
    println!("notes: {:?}", loaded.notes);
    assert_eq!(loaded.notes.len(), 1);
    assert!(loaded.notes[0].contains("<|user|>"), "{}", loaded.notes[0]);
    let n = SPECIAL_TOKENS.len();
    assert_eq!(loaded.config.vocab_size, config.vocab_size + n);
    assert_eq!(loaded.tokenizer.vocab_size(), config.vocab_size + n);
    // text encodes to the same ids as Kiln's own tokenizer (the old ids moved up by 8)
    let text = "Lily was a brave fox.";
    assert_eq!(loaded.tokenizer.encode(text).unwrap(), kiln_tok.encode(text).unwrap());
    // new rows are the mean of the old ones; the old rows and everything after are unchanged
    let c = config.n_embd;
    let mean0: f64 = (0..config.vocab_size).map(|r| params[r * c] as f64).sum::<f64>() / config.vocab_size as f64;
    for r in 0..n {
        assert!((loaded.params[r * c] as f64 - mean0).abs() < 1e-6);
    }
    assert_eq!(bits(&loaded.params[n * c..]), bits(&params));

    let cfg = TrainConfig {
        steps: 30,
        batch_size: 4,
        log_every: 1,
        eval_every: 30,
        sample_every: 0,
        ..TrainConfig::for_stage(StageKind::Sft)
    };
    let stage = Sft::builtin(&loaded.tokenizer, Language::English, loaded.config.block_size, 1).unwrap();
    let mut run =
        Trainer::with_model(CpuBackend::new(), loaded.tokenizer, loaded.config, Some(&loaded.params), 1).unwrap();
    run.begin(Box::new(stage), cfg).unwrap();
    let first = block_on(run.validate()).unwrap();
    let mut last = first;
    while !run.done() {
        if let Some(v) = block_on(run.train_one()).unwrap().val_loss {
            last = v;
        }
    }
    println!("fine-tuning the imported model: validation loss {first:.3} -> {last:.3}");
    assert!(last < first - 0.4, "SFT did not learn: {first} -> {last}");
}

#[test]
fn a_conversation_without_an_answer_is_refused() {
    let tok = tokenizer();
    let conv = vec![Message { role: Role::User, content: "Hello?".into() }];
    let err = Sft::new(&tok, vec![conv.clone()], vec![conv], 64, 1).err().expect("refused").to_string();
    println!("{err}");
    assert!(err.contains("assistant"), "{err}");
}
