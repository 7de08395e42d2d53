//! Checkpoints: a run saved at step k and resumed continues bit-exactly like a run that
//! never stopped; model folders round-trip; corrupt or mismatched files are refused with
//! a message that names the problem.

use kiln::backend::{Backend, CpuBackend, GpuBackend};
use kiln::checkpoint::{load_model, model_files, read_dir, write_dir};
use kiln::data::corpus::{default_corpus, Language};
use kiln::data::documents;
use kiln::gpu::Gpu;
use kiln::model::{GptConfig, ParamLayout};
use kiln::tokenizer::{Tokenizer, TokenizerKind};
use kiln::train::resume::{resume, resume_files};
use kiln::train::{TrainConfig, Trainer};
use pollster::block_on;

fn setup() -> (String, Tokenizer, GptConfig, TrainConfig) {
    let text = default_corpus(Language::English, 200, 5);
    let tok = Tokenizer::train(&documents(&text), TokenizerKind::Bpe, Some(300)).unwrap();
    let model = GptConfig::gpt2(tok.vocab_size(), 32, 2, 2, 32);
    let cfg = TrainConfig {
        steps: 12,
        batch_size: 4,
        grad_accum: 2,
        warmup_steps: 3,
        log_every: 1,
        eval_every: 4,
        sample_every: 0,
        ..Default::default()
    };
    (text, tok, model, cfg)
}

/// (step, loss, validation loss) of one step.
type StepLog = (u64, f32, Option<f32>);

/// Steps until done; returns each step's log and the final parameters.
fn finish<B: Backend>(run: &mut Trainer<B>) -> (Vec<StepLog>, Vec<f32>) {
    let mut log = Vec::new();
    while !run.done() {
        let p = block_on(run.train_one()).unwrap();
        log.push((p.step, p.loss.unwrap(), p.val_loss));
    }
    let params = block_on(run.be.read(run.model.weights.all_f32())).unwrap();
    (log, params)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn resume_is_bit_exact<B: Backend>(make: impl Fn() -> B, name: &str) {
    let (text, tok, model, cfg) = setup();
    let tok_json = tok.to_json().unwrap();
    let (straight, params_straight) = {
        let mut run = Trainer::pretrain(make(), tok, &text, model, cfg.clone()).unwrap();
        finish(&mut run)
    };
    let dir = std::env::temp_dir().join(format!("kiln-resume-{name}-{}", std::process::id()));
    {
        let tok = Tokenizer::from_json(&tok_json).unwrap();
        let mut run = Trainer::pretrain(make(), tok, &text, model, cfg.clone()).unwrap();
        for _ in 0..5 {
            block_on(run.train_one()).unwrap();
        }
        let files = block_on(resume_files(&mut run)).unwrap();
        write_dir(&dir, &files).unwrap();
    } // the first half of the run is gone
    let mut run = resume(make(), &read_dir(&dir).unwrap()).unwrap();
    assert_eq!(run.step, 5);
    let (resumed, params_resumed) = finish(&mut run);
    std::fs::remove_dir_all(&dir).unwrap();
    println!("[{name}] steps 6..12 straight: {:?}", straight[5..].iter().map(|s| s.1).collect::<Vec<_>>());
    println!("[{name}] steps 6..12 resumed:  {:?}", resumed.iter().map(|s| s.1).collect::<Vec<_>>());
    assert_eq!(resumed.len(), 7);
    for (a, b) in straight[5..].iter().zip(&resumed) {
        assert_eq!(
            (a.0, a.1.to_bits(), a.2.map(f32::to_bits)),
            (b.0, b.1.to_bits(), b.2.map(f32::to_bits)),
            "step {}",
            a.0
        );
    }
    assert!(bits(&params_straight) == bits(&params_resumed), "[{name}] parameters differ after resuming");
}

#[test]
fn resuming_on_the_gpu_is_bit_exact() {
    let gpu = block_on(Gpu::new()).expect("a GPU adapter (lavapipe)");
    resume_is_bit_exact(|| GpuBackend::new(gpu.clone()), "gpu");
}

#[test]
fn resuming_on_the_cpu_is_bit_exact() {
    resume_is_bit_exact(CpuBackend::new, "cpu");
}

#[test]
fn model_folders_round_trip_and_corruption_is_named() {
    let (_, tok, model, _) = setup();
    let layout = kiln::model::ParamLayout::new(&model);
    let params = layout.init(&model, 11);
    let files = model_files(&model, &ParamLayout::new(&model), &tok, &params).unwrap();
    let loaded = load_model(&files).unwrap();
    assert_eq!(loaded.config, model);
    assert_eq!(bits(&loaded.params), bits(&params));

    let expect_err = |files: &kiln::checkpoint::Files, needle: &str| {
        let err = load_model(files).err().expect("should be refused").to_string();
        println!("refused: {err}");
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    };
    let mut truncated = files.clone();
    let st = truncated.get_mut("model.safetensors").unwrap();
    st.truncate(st.len() / 2);
    expect_err(&truncated, "corrupt");

    let mut nan = files.clone();
    let mut p = params.clone();
    p[layout.get("h.1.mlp.c_fc.bias").unwrap().offset + 3] = f32::NAN;
    nan.insert(
        "model.safetensors".into(),
        model_files(&model, &ParamLayout::new(&model), &tok, &p).unwrap()["model.safetensors"].clone(),
    );
    expect_err(&nan, "h.1.mlp.c_fc.bias");

    let mut missing = files.clone();
    missing.remove("tokenizer.json");
    expect_err(&missing, "tokenizer.json is missing");

    let mut garbage = files.clone();
    garbage.insert("config.json".into(), b"{\"model_type\": \"gpt2\", \"n_layer\": \"two\"}".to_vec());
    expect_err(&garbage, "config.json");

    let mut other = files.clone();
    // over twice the parameters: the f32 file is shorter than even bf16 weights would be
    let bigger = GptConfig { n_embd: 96, ..model };
    other.insert(
        "config.json".into(),
        model_files(&bigger, &ParamLayout::new(&bigger), &tok, &bigger_params(&bigger)).unwrap()["config.json"].clone(),
    );
    // refused by its byte length, before any tensor is read
    let need = 2 * bigger.num_params();
    expect_err(&other, &format!("needs at least {need} for its weights alone"));
}

fn bigger_params(cfg: &GptConfig) -> Vec<f32> {
    kiln::model::ParamLayout::new(cfg).init(cfg, 1)
}

#[test]
fn write_dir_replaces_a_checkpoint_whole_and_keeps_the_users_files() {
    let (_, tok, model, _) = setup();
    let layout = ParamLayout::new(&model);
    let dir = std::env::temp_dir().join(format!("kiln-write-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let two = model_files(&model, &layout, &tok, &layout.init(&model, 2)).unwrap();
    let mut one = model_files(&model, &layout, &tok, &layout.init(&model, 1)).unwrap();
    one.insert("trainer.json".into(), b"{}".to_vec());
    write_dir(&dir, &one).unwrap();
    // the user adds a note and a folder of plots beside the checkpoint
    std::fs::write(dir.join("notes.txt"), "my run").unwrap();
    std::fs::create_dir(dir.join("plots")).unwrap();
    std::fs::write(dir.join("plots").join("loss.csv"), "1,2").unwrap();
    write_dir(&dir, &two).unwrap();
    let back = read_dir(&dir).unwrap();
    assert_eq!(back, two, "Kiln's files are the new checkpoint's, and the old trainer.json is gone");
    assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), "my run");
    assert_eq!(std::fs::read_to_string(dir.join("plots").join("loss.csv")).unwrap(), "1,2");
    let parent = dir.parent().unwrap();
    let stray: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!(".kiln-write-{}", std::process::id())))
        .collect();
    assert!(stray.is_empty(), "no temporary folder is left behind");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// PPO saved between rounds (a save point) and resumed — with its reference and reward
/// models set again, as the browser's restore does — continues bit for bit: the next
/// round's rollouts are seeded by the step and sampled from the same weights.
#[test]
fn ppo_resumes_bit_exactly_from_a_save_point() {
    use kiln::data::instruct::{instruction_set, Split};
    use kiln::model::ScalarHeadKind;
    use kiln::train::{ppo::Ppo, StageKind};
    let (_, tok, model, _) = setup();
    let model = GptConfig { block_size: 96, ..model }; // room for a chat prompt and an answer
    let base = ParamLayout::new(&model).init(&model, 4);
    let prompts: Vec<_> =
        instruction_set(Language::English, Split::Train, 20).into_iter().map(|c| c[..1].to_vec()).collect();
    let cfg = TrainConfig {
        steps: 8,
        batch_size: 8,
        eval_every: 4,
        log_every: 1,
        sample_every: 0,
        align: kiln::train::AlignConfig {
            ppo_epochs: 2,
            rollout_prompts: 2,
            answers_per_prompt: 2,
            answer_tokens: 6,
            ..TrainConfig::for_stage(StageKind::Ppo).align
        },
        ..TrainConfig::for_stage(StageKind::Ppo)
    };
    let reward = {
        let mut rm = Trainer::with_model(CpuBackend::new(), tok.clone(), model, Some(&base), 1).unwrap();
        block_on(rm.add_scalar_head(ScalarHeadKind::Reward, 2)).unwrap();
        block_on(rm.params()).unwrap()
    };
    let policy = || {
        let mut run = Trainer::with_model(CpuBackend::new(), tok.clone(), model, Some(&base), 1).unwrap();
        block_on(run.add_scalar_head(ScalarHeadKind::Value, 3)).unwrap();
        run.set_frozen(&[(Some(&base), None), (Some(&reward), Some(ScalarHeadKind::Reward))]).unwrap();
        run.begin(Box::new(Ppo::new(prompts.clone(), model.block_size, cfg.align.clone(), 9).unwrap()), cfg.clone())
            .unwrap();
        run
    };
    let log = |run: &mut Trainer<CpuBackend>, steps: usize| {
        (0..steps)
            .map(|_| {
                let p = block_on(run.train_one()).unwrap();
                (p.step, p.loss.map(f32::to_bits), p.save_point)
            })
            .collect::<Vec<_>>()
    };
    let straight = log(&mut policy(), 8);
    assert!(straight[3].2 && !straight[2].2, "step 4 ends a round on a validation step: a save point; {straight:?}");
    let files = {
        let mut run = policy();
        log(&mut run, 4);
        block_on(resume_files(&mut run)).unwrap()
    };
    let mut run = resume(CpuBackend::new(), &files).unwrap();
    run.set_frozen(&[(Some(&base), None), (Some(&reward), Some(ScalarHeadKind::Reward))]).unwrap();
    assert_eq!(run.step, 4);
    let resumed = log(&mut run, 4);
    println!("PPO straight {straight:?}\nPPO resumed  {resumed:?}");
    assert_eq!(resumed, straight[4..], "steps 5..8 after resuming equal the uninterrupted run's, bit for bit");
}
