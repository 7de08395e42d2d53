//! Learning, measured, on the tiny preset pretrained on the built-in stories:
//! - SFT: the model answers held-out questions about stories it has never seen —
//!   exact-match accuracy and the share of answers that end with `<|end|>`, before and
//!   after fine-tuning;
//! - preference ranking, from that fine-tuned model (trained once for both tests): a
//!   scripted ranker stands in for the person; it prefers answers that are correct and
//!   end with an exclamation mark (the fine-tuned model's style one time in four), then
//!   correct ones, then exclaimed ones. From its rankings of sampled answers to training
//!   questions: a reward model, whose pair accuracy on held-out rankings must be well
//!   above chance; PPO against it, and separately DPO on the same pairs, which must each
//!   raise the rule's rate on held-out questions by 30 points or more, lose at most 5
//!   points of exact-match accuracy, and stay near the fine-tuned model (KL reported).
//!
//! - rules as rewards, from the same fine-tuned model with no ranking at all: RLOO and GRPO
//!   on the rule "ends with !" + "is the reference answer" (weight 1 each), which must
//!   raise the scripted rule's rate on held-out questions by 30 points or more and keep
//!   exact match within 5 points.
//!
//! - thumbs, from the same fine-tuned model: the scripted person gives a thumb up to an
//!   answer that is correct and exclaimed and down to any other, on sampled answers to
//!   training questions; KTO on them must raise the rule's rate by 30 points and keep exact
//!   match within 5.
//!
//! - online DPO, from the same fine-tuned model: the scripted ranker ranks K answers to
//!   one training question at a time, sampled from the model as it is then; every few
//!   rankings a few DPO steps on all the rankings so far. With at most 100 ranked prompts
//!   (a third of the batch DPO's 300) it must reach batch DPO's bar: the rule's rate up 30
//!   points, exact match within 5.
//!
//! On the CPU backend, which computes what the GPU backend does (tests/golden.rs holds
//! both against PyTorch) about ten times faster on this machine; `KILN_TEST_BACKEND=gpu`
//! runs the same on the GPU backend (lavapipe here: about an hour).

use std::sync::OnceLock;

use kiln::backend::{Backend, CpuBackend, GpuBackend};
use kiln::checkpoint::{load_model, read_dir, write_dir};
use kiln::data::chat::{Conversation, Role};
use kiln::data::corpus::{default_corpus, Language, DEFAULT_SEED, DEFAULT_STORIES};
use kiln::data::documents;
use kiln::data::instruct::{answer_matches, has_style, instruction_set, scripted_ranks, Split};
use kiln::data::preference::{Ranking, Verdict};
use kiln::data::rule::Rule;
use kiln::data::thumbs::Thumb;
use kiln::gpu::Gpu;
use kiln::model::{GptConfig, ParamLayout, ScalarHeadKind};
use kiln::sample::SampleConfig;
use kiln::tokenizer::{Tokenizer, TokenizerKind};
use kiln::train::dpo::Dpo;
use kiln::train::group::{Baseline, GroupPolicy, Prompt};
use kiln::train::kto::Kto;
use kiln::train::online::{self, OnlineDpo};
use kiln::train::ppo::Ppo;
use kiln::train::preference::PreferenceRows;
use kiln::train::resume::resume_files;
use kiln::train::reward::Reward;
use kiln::train::sft::{answer_report, AnswerReport, Sft};
use kiln::train::{StageKind, TrainConfig, Trainer};
use pollster::block_on;

const PRETRAIN_STEPS: u64 = 300;
const SFT_STEPS: u64 = 400;
const HELD_OUT: usize = 100;
/// Training questions the scripted ranker ranks, K answers each.
const RANKED: usize = 300;
const K: usize = 4;

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
        if p.step % 25 == 0 || p.step == p.steps {
            let m: Vec<String> = p.metrics.entries().iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
            println!(
                "{} step {:>4} loss {:?} val {:?} {:.0} tok/s {}",
                p.stage.unwrap(),
                p.step,
                p.loss,
                p.val_loss,
                p.tokens_per_s,
                m.join(", ")
            );
        }
    }
}

/// The English model after pretraining and SFT, and its answers before and after SFT.
struct FineTuned {
    tokenizer: Tokenizer,
    config: GptConfig,
    params: Vec<f32>,
    before: AnswerReport,
    after: AnswerReport,
}

fn backend_is_gpu() -> bool {
    std::env::var("KILN_TEST_BACKEND").as_deref() == Ok("gpu")
}

/// Pretraining, then SFT, once per test binary (both tests start from it). With
/// KILN_ALIGN_CACHE=DIR the fine-tuned model is also kept between runs (for tuning by hand).
fn fine_tuned() -> &'static FineTuned {
    static ONCE: OnceLock<FineTuned> = OnceLock::new();
    ONCE.get_or_init(|| {
        if backend_is_gpu() {
            pretrain_then_fine_tune(|| GpuBackend::new(block_on(Gpu::new()).expect("a GPU adapter (lavapipe)")))
        } else {
            pretrain_then_fine_tune(CpuBackend::new)
        }
    })
}

fn pretrain_then_fine_tune<B: Backend>(make: impl Fn() -> B) -> FineTuned {
    let language = Language::English;
    let held_out = instruction_set(language, Split::HeldOut, HELD_OUT);
    let cache = std::env::var("KILN_ALIGN_CACHE").ok().map(std::path::PathBuf::from);
    if let Some(m) = cache.as_ref().and_then(|dir| read_dir(dir).ok()).map(|files| load_model(&files).unwrap()) {
        let mut run = Trainer::with_model(make(), m.tokenizer.clone(), m.config, Some(&m.params), 0).unwrap();
        let after = block_on(answer_report(&mut run, &held_out, 24)).unwrap();
        let before = AnswerReport::default();
        return FineTuned { tokenizer: m.tokenizer, config: m.config, params: m.params, before, after };
    }
    let text = default_corpus(language, DEFAULT_STORIES, DEFAULT_SEED);
    let tokenizer = Tokenizer::train(&documents(&text), TokenizerKind::Bpe, Some(512)).unwrap();
    let config = GptConfig::preset("tiny", tokenizer.vocab_size()).unwrap();
    let quiet = |cfg: TrainConfig| TrainConfig { sample_every: 0, log_every: 25, ..cfg };
    let pre = TrainConfig { steps: PRETRAIN_STEPS, eval_every: PRETRAIN_STEPS, ..quiet(TrainConfig::default()) };
    let mut run = Trainer::pretrain(make(), tokenizer.clone(), &text, config, pre).unwrap();
    train(&mut run);
    let before = block_on(answer_report(&mut run, &held_out, 24)).unwrap();
    report("before SFT", &before);

    let sft = TrainConfig { steps: SFT_STEPS, eval_every: 100, ..quiet(TrainConfig::for_stage(StageKind::Sft)) };
    let stage = Sft::builtin(&tokenizer, language, config.block_size, sft.seed).unwrap();
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
    if let Some(dir) = &cache {
        write_dir(dir, &block_on(resume_files(&mut run)).unwrap()).unwrap();
    }
    FineTuned { params: block_on(run.params()).unwrap(), tokenizer, config, before, after }
}

#[test]
fn fine_tuning_teaches_the_tiny_preset_to_answer_held_out_questions() {
    let FineTuned { before, after, .. } = fine_tuned();
    if before.questions > 0 {
        assert!(before.accuracy() < 0.2, "before SFT the model should not answer: {:.2}", before.accuracy());
        assert!(after.accuracy() >= before.accuracy() + 0.5, "SFT should raise accuracy a lot");
    }
    assert!(after.accuracy() >= 0.6, "after SFT: {:.2} exact", after.accuracy());
    assert!(after.ended_share() >= 0.9, "answers should end with <|end|>: {:.2}", after.ended_share());
}

/// What a model does on the held-out questions: the rule's rate over K sampled answers
/// each (temperature 1), greedy exact-match accuracy, and the mean KL estimate
/// Σ (log π − log π_ref) over the sampled answers' tokens against `reference`.
struct Measure {
    rule: f64,
    accuracy: f64,
    kl: f64,
}

fn measure<B: Backend>(
    run: &mut Trainer<B>,
    reference: &mut Trainer<CpuBackend>,
    held_out: &[Conversation],
) -> Measure {
    let report = block_on(answer_report(run, held_out, 24)).unwrap();
    let (mut rule, mut total, mut kl) = (0usize, 0usize, 0.0);
    for (i, conv) in held_out.iter().enumerate() {
        let cfg = SampleConfig { max_tokens: 16, temperature: 1.0, top_k: 0, top_p: 1.0, seed: 7_000 + (i * K) as u64 };
        let cands = block_on(run.sample_answers(&conv[..1], K, &cfg)).unwrap();
        let prompt = kiln::train::sft::chat_prompt(&run.tokenizer, &conv[..1], run.model.config.block_size).unwrap();
        let ids: Vec<Vec<u32>> = cands.iter().map(|c| c.ids.clone()).collect();
        let ref_logps = block_on(reference.answer_logps(&prompt, &ids)).unwrap();
        for (c, r) in cands.iter().zip(ref_logps) {
            let text = run.tokenizer.decode(c.content()).unwrap();
            rule += (c.ended && answer_matches(&conv[1].content, &text) && has_style(&text)) as usize;
            total += 1;
            kl += c.logprobs.iter().map(|&l| l as f64).sum::<f64>() - r;
        }
    }
    Measure { rule: rule as f64 / total as f64, accuracy: report.accuracy(), kl: kl / total as f64 }
}

fn print(name: &str, m: &Measure) {
    println!(
        "{name}: rule (correct and exclaimed) {:.1}% of sampled answers, greedy exact match {:.1}%, KL to the fine-tuned model {:.3} nats/answer",
        100.0 * m.rule,
        100.0 * m.accuracy,
        m.kl
    );
}

fn rank_with_script<B: Backend>(run: &mut Trainer<B>, questions: &[Conversation]) -> Vec<Ranking> {
    let mut out = Vec::new();
    for (i, conv) in questions.iter().enumerate() {
        let cfg = SampleConfig { max_tokens: 16, temperature: 1.0, top_k: 0, top_p: 1.0, seed: (i * K) as u64 };
        let cands = block_on(run.sample_answers(&conv[..1], K, &cfg)).unwrap();
        let answers: Vec<String> = cands.iter().map(|c| run.tokenizer.decode(c.content()).unwrap()).collect();
        let ranks = scripted_ranks(&conv[1].content, &answers);
        out.push(Ranking { prompt: conv[..1].to_vec(), answers, ranks, verdict: Verdict::Ranked, annotator: None });
    }
    out
}

/// The stage's defaults, with KILN_{STAGE}_OPTIONS (JSON, as the JS API takes them) on top
/// when set (for tuning by hand; CI sets none).
fn options(stage: StageKind) -> TrainConfig {
    let var = format!("KILN_{}_OPTIONS", stage.name().to_uppercase());
    let given = std::env::var(&var).map(|v| serde_json::from_str(&v).expect("JSON options")).unwrap_or_default();
    TrainConfig::from_options(stage, &given).unwrap()
}

/// What each alignment test starts from: the fine-tuned model's tokenizer, shape and
/// weights, a trainer of it on the test's backend, a frozen copy on the CPU (the reference
/// KL is measured against), the held-out questions, and how the fine-tuned model does on
/// them.
struct Start<B: Backend> {
    tokenizer: Tokenizer,
    config: GptConfig,
    sft_params: Vec<f32>,
    run: Trainer<B>,
    reference: Trainer<CpuBackend>,
    held_out: Vec<Conversation>,
    before: Measure,
}

fn start<B: Backend>(make: &impl Fn() -> B) -> Start<B> {
    let tuned = fine_tuned();
    let (config, tokenizer, sft_params) = (tuned.config, tuned.tokenizer.clone(), tuned.params.clone());
    let held_out = instruction_set(Language::English, Split::HeldOut, HELD_OUT);
    let mut reference =
        Trainer::with_model(CpuBackend::new(), tokenizer.clone(), config, Some(&sft_params), 0).unwrap();
    let mut run = Trainer::with_model(make(), tokenizer.clone(), config, Some(&sft_params), 0).unwrap();
    let before = measure(&mut run, &mut reference, &held_out);
    print("fine-tuned (SFT)", &before);
    Start { tokenizer, config, sft_params, run, reference, held_out, before }
}

fn align<B: Backend>(make: impl Fn() -> B) {
    let language = Language::English;
    let Start { tokenizer, config, sft_params, mut run, mut reference, held_out, before } = start(&make);
    let t = config.block_size;

    // the scripted ranker ranks K sampled answers to each of RANKED training questions
    let questions = instruction_set(language, Split::Train, RANKED);
    let rankings = rank_with_script(&mut run, &questions);
    let pairs: usize = rankings.iter().map(|r| r.pairs().len()).sum();
    println!("{} rankings of {K} answers: {pairs} pairs", rankings.len());

    // reward model
    let mut rm = Trainer::with_model(make(), tokenizer.clone(), config, Some(&sft_params), 0).unwrap();
    block_on(rm.add_scalar_head(ScalarHeadKind::Reward, 1)).unwrap();
    let cfg = TrainConfig::for_stage(StageKind::Reward);
    let rows = PreferenceRows::split(&tokenizer, rankings.clone(), t, cfg.val_fraction, cfg.seed).unwrap();
    rm.begin(Box::new(Reward::new(rows, cfg.align.reward_center)), cfg).unwrap();
    let mut val_accuracy = 0.0;
    let started = std::time::Instant::now();
    while !rm.done() {
        let p = block_on(rm.train_one()).unwrap();
        if let Some(a) = p.metrics.val_pair_accuracy {
            val_accuracy = a;
            println!("reward step {:>4} loss {:?} held-out pair accuracy {:.1}%", p.step, p.loss, 100.0 * a);
        }
    }
    let reward_s = started.elapsed().as_secs_f64();
    let reward_params = block_on(rm.params()).unwrap();
    assert_eq!(reward_params.len(), ParamLayout::with_scalar_head(&config, ScalarHeadKind::Reward).total);

    // PPO
    let mut policy = Trainer::with_model(make(), tokenizer.clone(), config, Some(&sft_params), 0).unwrap();
    block_on(policy.add_scalar_head(ScalarHeadKind::Value, 2)).unwrap();
    policy.set_frozen(&[(Some(&sft_params), None), (Some(&reward_params), Some(ScalarHeadKind::Reward))]).unwrap();
    let cfg = options(StageKind::Ppo);
    let prompts: Vec<Conversation> = questions.iter().map(|c| c[..1].to_vec()).collect();
    assert!(prompts.iter().all(|p| p[0].role == Role::User));
    let stage = Ppo::new(prompts, t, cfg.align.clone(), cfg.seed).unwrap();
    policy.begin(Box::new(stage), cfg).unwrap();
    let started = std::time::Instant::now();
    train(&mut policy);
    let ppo_s = started.elapsed().as_secs_f64();
    let after_ppo = measure(&mut policy, &mut reference, &held_out);
    print("after PPO", &after_ppo);

    // DPO
    let mut dpo = Trainer::with_model(make(), tokenizer.clone(), config, Some(&sft_params), 0).unwrap();
    let cfg = options(StageKind::Dpo);
    let rows = PreferenceRows::split(&tokenizer, rankings, t, cfg.val_fraction, cfg.seed).unwrap();
    let stage = Dpo::new(rows, cfg.align.dpo_beta, cfg.align.rpo_alpha);
    dpo.begin(Box::new(stage), cfg).unwrap();
    let started = std::time::Instant::now();
    train(&mut dpo);
    let dpo_s = started.elapsed().as_secs_f64();
    let after_dpo = measure(&mut dpo, &mut reference, &held_out);
    print("after DPO", &after_dpo);

    println!(
        "SUMMARY base rule {:.1}% acc {:.1}% | {} rankings, {pairs} pairs | reward held-out pair accuracy {:.1}% ({reward_s:.0} s) | PPO rule {:.1}% acc {:.1}% KL {:.3} ({ppo_s:.0} s) | DPO rule {:.1}% acc {:.1}% KL {:.3} ({dpo_s:.0} s)",
        100.0 * before.rule,
        100.0 * before.accuracy,
        RANKED,
        100.0 * val_accuracy,
        100.0 * after_ppo.rule,
        100.0 * after_ppo.accuracy,
        after_ppo.kl,
        100.0 * after_dpo.rule,
        100.0 * after_dpo.accuracy,
        after_dpo.kl
    );
    assert!(before.rule > 0.02 && before.rule < 0.5, "the rule holds some of the time but not most: {}", before.rule);
    assert!(val_accuracy > 0.7, "the reward model agrees with held-out rankings well above chance: {val_accuracy}");
    for (name, after) in [("PPO", &after_ppo), ("DPO", &after_dpo)] {
        assert!(
            after.rule >= before.rule + 0.30,
            "{name} raises the rule's rate by 30 points: {} → {}",
            before.rule,
            after.rule
        );
        assert!(
            after.accuracy >= before.accuracy - 0.05,
            "{name} keeps task accuracy: {} → {}",
            before.accuracy,
            after.accuracy
        );
        assert!(after.kl < 10.0, "{name} stays near the fine-tuned model: KL {}", after.kl);
    }
}

#[test]
fn ranking_aligns_the_model_with_ppo_and_with_dpo() {
    if backend_is_gpu() {
        align(|| GpuBackend::new(block_on(Gpu::new()).expect("a GPU adapter (lavapipe)")))
    } else {
        align(CpuBackend::new)
    }
}

/// RLOO and GRPO from the fine-tuned model on the rule alone: every training question with
/// its answer, no ranking.
fn rules<B: Backend>(make: impl Fn() -> B) {
    let language = Language::English;
    let Start { tokenizer, config, sft_params, mut reference, held_out, before, .. } = start(&make);
    let prompts: Vec<Prompt> = instruction_set(language, Split::Train, 1000)
        .into_iter()
        .map(|c| Prompt { messages: c[..1].to_vec(), reference: Some(c[1].content.clone()) })
        .collect();
    let mut summary = Vec::new();
    for (kind, baseline) in [(StageKind::Rloo, Baseline::LeaveOneOut), (StageKind::Grpo, Baseline::GroupNormalised)] {
        let mut run = Trainer::with_model(make(), tokenizer.clone(), config, Some(&sft_params), 0).unwrap();
        run.set_frozen(&[(Some(&sft_params), None)]).unwrap();
        let mut cfg = options(kind);
        cfg.align.rule = Rule::exclaimed_and_correct().to_json();
        let stage = GroupPolicy::new(kind, baseline, prompts.clone(), config.block_size, cfg.align.clone(), cfg.seed);
        run.begin(Box::new(stage.unwrap()), cfg).unwrap();
        let started = std::time::Instant::now();
        train(&mut run);
        let seconds = started.elapsed().as_secs_f64();
        let after = measure(&mut run, &mut reference, &held_out);
        print(&format!("after {kind}"), &after);
        summary.push(format!(
            "{kind} rule {:.1}% acc {:.1}% KL {:.3} ({seconds:.0} s)",
            100.0 * after.rule,
            100.0 * after.accuracy,
            after.kl
        ));
        assert!(
            after.rule >= before.rule + 0.30,
            "{kind} raises the rule's rate by 30 points with no label: {} → {}",
            before.rule,
            after.rule
        );
        assert!(
            after.accuracy >= before.accuracy - 0.05,
            "{kind} keeps task accuracy: {} → {}",
            before.accuracy,
            after.accuracy
        );
    }
    println!(
        "SUMMARY base rule {:.1}% acc {:.1}% | {}",
        100.0 * before.rule,
        100.0 * before.accuracy,
        summary.join(" | ")
    );
}

#[test]
fn a_rule_aligns_the_model_with_rloo_and_with_grpo() {
    if backend_is_gpu() {
        rules(|| GpuBackend::new(block_on(Gpu::new()).expect("a GPU adapter (lavapipe)")))
    } else {
        rules(CpuBackend::new)
    }
}

/// Thumbs given by the scripted person: up when the answer is correct and exclaimed.
fn thumbs_with_script<B: Backend>(run: &mut Trainer<B>, questions: &[Conversation], per: usize) -> Vec<Thumb> {
    let mut out = Vec::new();
    for (i, conv) in questions.iter().enumerate() {
        let cfg =
            SampleConfig { max_tokens: 16, temperature: 1.0, top_k: 0, top_p: 1.0, seed: 50_000 + (i * per) as u64 };
        for c in block_on(run.sample_answers(&conv[..1], per, &cfg)).unwrap() {
            let completion = run.tokenizer.decode(c.content()).unwrap();
            let label = c.ended && answer_matches(&conv[1].content, &completion) && has_style(&completion);
            out.push(Thumb { prompt: conv[..1].to_vec(), completion, label, annotator: None });
        }
    }
    out
}

fn kto<B: Backend>(make: impl Fn() -> B) {
    let language = Language::English;
    let Start { tokenizer, config, mut run, mut reference, held_out, before, .. } = start(&make);
    let questions = instruction_set(language, Split::Train, RANKED);
    let thumbs = thumbs_with_script(&mut run, &questions, 2);
    let (up, thumbs_n) = (thumbs.iter().filter(|t| t.label).count(), thumbs.len());
    println!("{} thumbs: {up} up, {} down", thumbs.len(), thumbs.len() - up);
    let cfg = options(StageKind::Kto);
    let stage =
        Kto::split(&kiln::data::format::ChatFormat::kiln(), &tokenizer, thumbs, config.block_size, &cfg).unwrap();
    println!("KTO weights (desirable, undesirable): {:?}", stage.weights());
    run.begin(Box::new(stage), cfg).unwrap();
    let started = std::time::Instant::now();
    train(&mut run);
    let seconds = started.elapsed().as_secs_f64();
    let after = measure(&mut run, &mut reference, &held_out);
    print("after KTO", &after);
    println!(
        "SUMMARY base rule {:.1}% acc {:.1}% | kto ({up} up, {} down) rule {:.1}% acc {:.1}% KL {:.3} ({seconds:.0} s)",
        100.0 * before.rule,
        100.0 * before.accuracy,
        thumbs_n - up,
        100.0 * after.rule,
        100.0 * after.accuracy,
        after.kl
    );
    assert!(
        after.rule >= before.rule + 0.30,
        "KTO raises the rule's rate by 30 points: {} → {}",
        before.rule,
        after.rule
    );
    assert!(
        after.accuracy >= before.accuracy - 0.05,
        "KTO keeps task accuracy: {} → {}",
        before.accuracy,
        after.accuracy
    );
}

#[test]
fn thumbs_align_the_model_with_kto() {
    if backend_is_gpu() {
        kto(|| GpuBackend::new(block_on(Gpu::new()).expect("a GPU adapter (lavapipe)")))
    } else {
        kto(CpuBackend::new)
    }
}

/// Ranked prompts online DPO may use.
const ONLINE_RANKED: usize = 100;

fn online<B: Backend>(make: impl Fn() -> B) {
    let language = Language::English;
    let Start { tokenizer, run: mut policy, mut reference, held_out, before, .. } = start(&make);
    let cfg = options(StageKind::Dpo);
    let every = std::env::var("KILN_ONLINE_EVERY").map_or(online::DEFAULT_EVERY, |v| v.parse().unwrap());
    let steps = std::env::var("KILN_ONLINE_STEPS").map_or(online::DEFAULT_STEPS, |v| v.parse().unwrap());
    let mut online = OnlineDpo::new(every, steps);
    let started = std::time::Instant::now();
    for (i, conv) in instruction_set(language, Split::Train, ONLINE_RANKED).iter().enumerate() {
        // the answers come from the model as it is now
        let sc = SampleConfig { max_tokens: 16, temperature: 1.0, top_k: 0, top_p: 1.0, seed: (i * K) as u64 };
        let cands = block_on(policy.sample_answers(&conv[..1], K, &sc)).unwrap();
        let answers: Vec<String> = cands.iter().map(|c| tokenizer.decode(c.content()).unwrap()).collect();
        let ranks = scripted_ranks(&conv[1].content, &answers);
        let ranking = Ranking { prompt: conv[..1].to_vec(), answers, ranks, verdict: Verdict::Ranked, annotator: None };
        if online.add(ranking) {
            if let Some(u) = block_on(online.update(&mut policy, &mut reference, &cfg)).unwrap() {
                if online.updates.len() % 5 == 0 {
                    println!("online update {} after {} rankings: {u:?}", online.updates.len(), u.rankings);
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = measure(&mut policy, &mut reference, &held_out);
    print("after online DPO", &after);
    println!(
        "SUMMARY base rule {:.1}% acc {:.1}% | online DPO ({} rankings, {} updates of {steps} steps, {seconds:.0} s) rule {:.1}% acc {:.1}% KL {:.3}",
        100.0 * before.rule,
        100.0 * before.accuracy,
        online.rankings.len(),
        online.updates.len(),
        100.0 * after.rule,
        100.0 * after.accuracy,
        after.kl
    );
    assert!(online.rankings.len() <= 100, "a third of batch DPO's rankings at most");
    assert!(
        after.rule >= before.rule + 0.30,
        "online DPO raises the rule's rate by 30 points: {} → {}",
        before.rule,
        after.rule
    );
    assert!(
        after.accuracy >= before.accuracy - 0.05,
        "online DPO keeps task accuracy: {} → {}",
        before.accuracy,
        after.accuracy
    );
}

#[test]
fn online_dpo_learns_while_the_script_ranks() {
    if backend_is_gpu() {
        online(|| GpuBackend::new(block_on(Gpu::new()).expect("a GPU adapter (lavapipe)")))
    } else {
        online(CpuBackend::new)
    }
}
