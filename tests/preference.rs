//! The preference stages' parts: pairs from rankings with ties, rankings files (with who
//! ranked them), the Bradley-Terry loss and the reward model's gradient against finite
//! differences, DPO against a hand-computed case and through the model against finite
//! differences, GAE and the clipped PPO objective, the batched decoder against K single-row
//! decodes, and the held-out pair accuracy of rankings that repeat an answer.

use kiln::backend::{Backend, CpuBackend, GpuBackend};
use kiln::data::chat::{Message, Role};
use kiln::data::corpus::{default_corpus, Language};
use kiln::data::documents;
use kiln::data::instruct::{ranker_score, scripted_ranks};
use kiln::data::preference::{pairs_jsonl, rankings_jsonl, read_rankings, Ranking, Verdict};
use kiln::gpu::Gpu;
use kiln::model::{Activations, Gpt, GptConfig, ParamLayout, ScalarHeadKind};
use kiln::sample::{generate, sample_candidates, Decoder, SampleConfig};
use kiln::tokenizer::{Tokenizer, TokenizerKind, BOS};
use kiln::train::dpo::Dpo;
use kiln::train::ppo::{clipped_objective, clipped_value_loss, gae};
use kiln::train::preference::PreferenceRows;
use kiln::train::reward::{bradley_terry, Reward};
use kiln::train::step::{backward_with, forward_outputs};
use kiln::train::{Outputs, Phase, Progress, Stage, StageKind, TrainConfig, Trainer};
use pollster::block_on;

fn user(text: &str) -> Vec<Message> {
    vec![Message { role: Role::User, content: text.into() }]
}

fn ranking(question: &str, answers: &[&str], ranks: &[u32]) -> Ranking {
    Ranking {
        prompt: user(question),
        answers: answers.iter().map(|a| a.to_string()).collect(),
        ranks: ranks.to_vec(),
        verdict: Verdict::Ranked,
        annotator: None,
    }
}

#[test]
fn a_ranking_gives_its_ordered_pairs_minus_ties() {
    let r = ranking("q", &["a", "b", "c", "d"], &[2, 1, 2, 4]);
    let mut pairs = r.pairs();
    pairs.sort();
    // b beats a, c, d; a and c (tied) beat d; a–c is a tie, so no pair
    assert_eq!(pairs, vec![(0, 3), (1, 0), (1, 2), (1, 3), (2, 3)]);
    let all = ranking("q", &["a", "b", "c"], &[1, 2, 3]);
    assert_eq!(all.pairs().len(), 3, "K(K−1)/2 without ties");
    assert!(Ranking { verdict: Verdict::Skipped, ..all.clone() }.pairs().is_empty());
    assert!(Ranking { verdict: Verdict::AllBad, ..all }.pairs().is_empty());
    // the scripted ranker: correct and exclaimed, then correct, then exclaimed, then neither
    let answers: Vec<String> = ["Mia.", "Mia!", "Tom!", "Tom."].iter().map(|s| s.to_string()).collect();
    assert_eq!(scripted_ranks("Mia.", &answers), vec![2, 1, 3, 4]);
    assert_eq!(ranker_score("Yes.", "yes!"), 3);
}

#[test]
fn exported_pairs_never_prefer_an_answer_to_itself() {
    // a small model at temperature 1 often gives the same answer twice; ranked apart, the
    // copies would export pairs whose chosen and rejected are one text
    let rs = vec![ranking("Who came?", &["Mia.", "Tom.", "Mia.", " Tom. "], &[1, 2, 3, 4])];
    let exported = pairs_jsonl(&rs);
    let pairs = read_rankings(exported.as_bytes()).unwrap().items;
    assert_eq!(pairs.len(), 4, "{exported}");
    for p in &pairs {
        assert_ne!(p.answers[0].trim(), p.answers[1].trim(), "{exported}");
    }
}

#[test]
fn who_ranked_travels_with_rankings_and_pairs() {
    let rs =
        vec![Ranking { annotator: Some("Ana".into()), ..ranking("Who came?", &["Mia.", "Tom!", "Sam."], &[1, 2, 3]) }];
    assert_eq!(read_rankings(rankings_jsonl(&rs).as_bytes()).unwrap().items, rs);
    let pairs = read_rankings(pairs_jsonl(&rs).as_bytes()).unwrap().items;
    assert!(pairs.len() == 3 && pairs.iter().all(|p| p.annotator.as_deref() == Some("Ana")));
    // a name, not a document; and not a number
    let long = format!(
        "{{\"prompt\": \"q\", \"chosen\": \"a\", \"rejected\": \"b\", \"annotator\": \"{}\"}}\n",
        "x".repeat(201)
    );
    let err = read_rankings(long.as_bytes()).unwrap_err().to_string();
    assert!(err.contains("line 1") && err.contains("1 to 200 characters"), "{err}");
    let odd = "{\"prompt\": \"q\", \"answers\": [\"a\", \"b\"], \"ranks\": [1, 2], \"annotator\": 7}\n";
    assert!(read_rankings(odd.as_bytes()).is_err());
    // no annotator: the line is as before
    assert!(!rankings_jsonl(&[ranking("q", &["a", "b"], &[1, 2])]).contains("annotator"));
}

#[test]
fn rankings_round_trip_and_bad_lines_are_named() {
    // a barely trained model's empty or blank answer is an answer the person ranked: it
    // must read back (a reload's saved rankings, a snapshot's rankings files)
    let rs = vec![
        ranking("Who came?", &["Mia.", "Tom!"], &[1, 2]),
        ranking("Where?", &["Park.", "Sea.", "Park!"], &[2, 2, 1]),
        ranking("Why?", &["", "Because."], &[2, 1]),
        ranking("When?", &[" \n", "Now."], &[2, 1]),
    ];
    let back = read_rankings(rankings_jsonl(&rs).as_bytes()).unwrap();
    assert_eq!(back.items, rs);
    assert!(back.skipped.is_empty());
    // TRL's pairs read back as two-answer rankings
    let pairs = read_rankings(pairs_jsonl(&rs).as_bytes()).unwrap();
    assert_eq!(pairs.items.len(), 5);
    assert_eq!(pairs.items[0].answers, vec!["Mia.".to_string(), "Tom!".to_string()]);
    let text = [
        r#"{"prompt": "Who?", "chosen": "Mia.", "rejected": "Tom."}"#,
        r#"{"prompt": "Who?", "answers": ["a"], "ranks": [1]}"#,
        "not json",
        "",
        r#"{"prompt": "Who?", "answers": ["a", "b"], "ranks": [1, 7]}"#,
        r#"{"prompt": [{"role": "assistant", "content": "hi"}], "chosen": "a", "rejected": "b"}"#,
        r#"{"chosen": "a", "rejected": "b"}"#,
    ]
    .join("\n");
    let read = read_rankings(text.as_bytes()).unwrap();
    assert_eq!(read.items.len(), 1);
    let lines: Vec<usize> = read.skipped.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![2, 3, 5, 6, 7]);
    assert!(read.skipped[0].reason.contains("2 to 6 answers"), "{}", read.skipped[0]);
    assert!(read.skipped[2].reason.contains("between 1 and 2"), "{}", read.skipped[2]);
    assert!(read.skipped[4].reason.contains("missing \"prompt\""), "{}", read.skipped[4]);
    let none = read_rankings(b"\n\nnope\n").unwrap_err().to_string();
    assert!(none.contains("line 3"), "{none}");
}

#[test]
fn bradley_terry_loss_and_gradient() {
    for (rc, rr) in [(0.3, -0.2), (-2.0, 1.5), (40.0, -40.0), (-40.0, 40.0)] {
        let (loss, d) = bradley_terry(rc, rr);
        let want = (1.0 + (-(rc - rr)).exp()).ln();
        assert!((loss - want).abs() <= 1e-9 * want.max(1.0), "loss({rc}, {rr}) = {loss}, want {want}");
        let h = 1e-6;
        let fd = (bradley_terry(rc + h, rr).0 - bradley_terry(rc - h, rr).0) / (2.0 * h);
        assert!((d - fd).abs() < 1e-6, "d/dr_c {d} vs finite difference {fd}");
        let fd_r = (bradley_terry(rc, rr + h).0 - bradley_terry(rc, rr - h).0) / (2.0 * h);
        assert!((-d - fd_r).abs() < 1e-6);
    }
}

#[test]
fn gae_matches_a_hand_computed_case() {
    // r = [0, 0, 1], V = [0.5, 0.4, 0.2], γ = 1, λ = 0.95:
    //   δ₂ = 1 − 0.2 = 0.8              A₂ = 0.8
    //   δ₁ = 0 + 0.2 − 0.4 = −0.2       A₁ = −0.2 + 0.95·0.8 = 0.56
    //   δ₀ = 0 + 0.4 − 0.5 = −0.1       A₀ = −0.1 + 0.95·0.56 = 0.432
    let (adv, ret) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.4, 0.2], 1.0, 0.95);
    for (got, want) in adv.iter().zip([0.432, 0.56, 0.8]) {
        assert!((got - want).abs() < 1e-12, "{adv:?}");
    }
    for (got, want) in ret.iter().zip([0.932, 0.96, 1.0]) {
        assert!((got - want).abs() < 1e-12, "{ret:?}");
    }
    // γ = 0.5, λ = 0: one-step TD errors
    let (adv, _) = gae(&[1.0, 2.0], &[0.0, 1.0], 0.5, 0.0);
    assert_eq!(adv, vec![1.0 + 0.5 * 1.0, 2.0 - 1.0]);
}

#[test]
fn clipped_ppo_objective_and_its_gradient() {
    let h = 1e-6;
    for (logp, old, adv) in
        [(-1.0, -1.05, 0.7), (-2.0, -1.9, -1.3), (-0.5, -0.9, 1.0), (-0.9, -0.5, -1.0), (-0.5, -0.9, -1.0)]
    {
        let (loss, d, clipped) = clipped_objective(logp, old, adv, 0.2);
        let fd =
            (clipped_objective(logp + h, old, adv, 0.2).0 - clipped_objective(logp - h, old, adv, 0.2).0) / (2.0 * h);
        assert!((d - fd).abs() < 1e-6, "d/dlogp {d} vs finite difference {fd} at {logp} {old} {adv}");
        let ratio = (logp - old).exp();
        assert!((loss - (-adv * ratio).max(-adv * ratio.clamp(0.8, 1.2))).abs() < 1e-12);
        // clipped exactly when the ratio left [0.8, 1.2] in the direction the advantage favours
        assert_eq!(clipped, (adv > 0.0 && ratio > 1.2) || (adv < 0.0 && ratio < 0.8), "{logp} {old} {adv}");
    }
    for (v, old, ret) in [(0.5, 0.4, 1.0), (1.0, 0.2, 0.0), (-0.3, 0.2, 1.0)] {
        let (_, d) = clipped_value_loss(v, old, ret, 0.2);
        let fd = (clipped_value_loss(v + h, old, ret, 0.2).0 - clipped_value_loss(v - h, old, ret, 0.2).0) / (2.0 * h);
        assert!((d - fd).abs() < 1e-6, "dV {d} vs {fd}");
    }
}

fn tokenizer() -> Tokenizer {
    let text = default_corpus(Language::English, 200, 5);
    Tokenizer::train(&documents(&text), TokenizerKind::Bpe, Some(300)).unwrap()
}

fn rankings() -> Vec<Ranking> {
    vec![
        ranking("Who came to play?", &["Mia.", "Mia!", "Tom."], &[2, 1, 3]),
        ranking("Where did Ben go?", &["The park!", "The sea."], &[1, 2]),
        ranking("What did Ana find?", &["A key.", "A cat!", "A key!"], &[2, 3, 1]),
    ]
}

#[test]
fn dpo_matches_a_hand_computed_case() {
    let tok = tokenizer();
    let t = 32;
    let mut dpo = Dpo::new(
        PreferenceRows::new(&tok, rankings()[1..2].to_vec(), rankings()[..1].to_vec(), t, Default::default()).unwrap(),
        0.1,
        0.5,
    );
    let b = 4;
    let batch = dpo.next_batch(b);
    let rows = &dpo.rows.train[0].rows;
    // made-up nll per position: the policy's and the reference's
    let spans: Vec<(usize, usize)> = rows
        .iter()
        .map(|r| {
            let first = r.supervised.iter().position(|&s| s).unwrap() - 1;
            (first, r.ids.len() - 3)
        })
        .collect();
    let fill = |per_token: [f32; 2]| {
        let mut nll = vec![0.0f32; b * t];
        for (k, &(a, z)) in spans.iter().enumerate() {
            for p in a..=z {
                nll[k * t + p] = per_token[k];
            }
        }
        Outputs { nll, values: Vec::new() }
    };
    let reference = fill([0.5, 0.4]);
    // reference_batches holds the training group then the validation group
    let val_batch_nll = Outputs { nll: vec![0.3; b * t], values: Vec::new() };
    dpo.set_reference(b, vec![reference, val_batch_nll]).unwrap();
    let policy = fill([0.45, 0.6]);
    let g = dpo.weigh(&batch, &policy, Phase::Train).unwrap();
    let (lc, lr) = ((spans[0].1 + 1 - spans[0].0) as f64, (spans[1].1 + 1 - spans[1].0) as f64);
    let (pi_c, pi_r, ref_c, ref_r) = (-0.45 * lc, -0.6 * lr, -0.5 * lc, -0.4 * lr);
    let z = 0.1 * ((pi_c - ref_c) - (pi_r - ref_r));
    let want = (1.0 + (-z).exp()).ln() + 0.5 * (-pi_c) / lc;
    assert!((g.loss - want).abs() < 1e-5, "DPO loss {} vs hand-computed {want}", g.loss);
    // each chosen token weighs β·σ(−z) + α/|chosen|, each rejected token −β·σ(−z)
    let s = 0.1 / (1.0 + z.exp());
    assert!((g.weights[spans[0].0] as f64 - (s + 0.5 / lc)).abs() < 1e-6);
    assert!((g.weights[t + spans[1].0] as f64 + s).abs() < 1e-6);
    assert_eq!(g.weights[0], 0.0, "prompt positions weigh nothing");
    let m = dpo.metrics();
    let acc = m.pair_accuracy.unwrap();
    assert_eq!(acc, (z > 0.0) as u8 as f64);
}

/// d(stage loss)/d(parameter) by the stage's gradients through the model, against central
/// finite differences of the loss, for parameters with the largest gradients.
fn check_stage_gradient(stage: &mut dyn Stage, layout: ParamLayout, config: GptConfig, what: &str) {
    let mut be = CpuBackend::new();
    let values = layout.init(&config, 11);
    let model = Gpt::from_layout(&mut be, config, layout, &values, true).unwrap();
    let heads = stage.heads().unwrap();
    let b = 8;
    let acts = Activations::new(&mut be, &config, b, config.block_size).unwrap();
    if stage.needs_reference() {
        let outs = stage
            .reference_batches(b)
            .iter()
            .map(|batch| block_on(forward_outputs(&mut be, &model, &acts, batch, heads)).unwrap())
            .collect();
        stage.set_reference(b, outs).unwrap();
    }
    let batch = stage.next_batch(b);
    let out = block_on(forward_outputs(&mut be, &model, &acts, &batch, heads)).unwrap();
    let grads = stage.weigh(&batch, &out, Phase::Train).unwrap();
    be.clear(model.grads());
    backward_with(&mut be, &model, &acts, &batch, heads, &grads).unwrap();
    let analytic = block_on(be.read(model.grads())).unwrap();
    let mut order: Vec<usize> = (0..analytic.len()).collect();
    order.sort_by(|&i, &j| analytic[j].abs().total_cmp(&analytic[i].abs()));
    let eps = 1e-2f32;
    let mut worst = 0.0f64;
    for &i in order.iter().take(12) {
        let loss_at = |be: &mut CpuBackend, x: f32, stage: &mut dyn Stage| {
            be.write(model.weights.all_f32(), i, &[x]);
            let out = block_on(forward_outputs(be, &model, &acts, &batch, heads)).unwrap();
            stage.weigh(&batch, &out, Phase::Train).unwrap().loss
        };
        let x = values[i];
        let fd = (loss_at(&mut be, x + eps, stage) - loss_at(&mut be, x - eps, stage)) / (2.0 * eps as f64);
        be.write(model.weights.all_f32(), i, &[x]);
        let err = (fd - analytic[i] as f64).abs() / (analytic[i].abs() as f64).max(1e-3);
        worst = worst.max(err);
    }
    println!("{what}: largest 12 gradients vs finite differences, worst relative error {worst:.2e}");
    assert!(worst < 0.05, "{what}: gradient off by {worst}");
}

#[test]
fn reward_and_dpo_gradients_through_the_model_match_finite_differences() {
    let tok = tokenizer();
    let config = GptConfig::gpt2(tok.vocab_size(), 32, 1, 2, 16);
    let rows = |seed| PreferenceRows::split(&tok, rankings(), config.block_size, 0.3, seed).unwrap();
    let mut reward = Reward::new(rows(1), 0.01);
    check_stage_gradient(
        &mut reward,
        ParamLayout::with_scalar_head(&config, ScalarHeadKind::Reward),
        config,
        "reward model",
    );
    let mut dpo = Dpo::new(rows(2), 0.1, 1.0);
    // the policy moves away from the reference so that σ(−z) is not ½ everywhere
    check_stage_gradient(&mut dpo, ParamLayout::new(&config), config, "DPO");
}

fn batched_equals_single<B: Backend>(be: &mut B, name: &str) {
    let config = GptConfig::gpt2(60, 24, 2, 2, 32);
    let model = Gpt::new(be, config, 21).unwrap();
    let prompt = [BOS, 10, 11, 12, 13];
    let cfg = SampleConfig { max_tokens: 12, temperature: 1.0, top_k: 0, top_p: 1.0, seed: 40 };
    let k = 4;
    let batched = Decoder::batched(be, &model, k).unwrap();
    let cands = block_on(sample_candidates(be, &model, &batched, &prompt, &cfg)).unwrap();
    let single = Decoder::new(be, &model).unwrap();
    for (r, cand) in cands.iter().enumerate() {
        let one = SampleConfig { seed: cfg.seed + r as u64, ..cfg.clone() };
        let alone = block_on(generate(be, &model, &single, &prompt, &one, |_| true)).unwrap();
        assert_eq!(cand.content(), &alone[..], "[{name}] candidate {r}");
        assert_eq!(cand.logprobs.len(), cand.ids.len());
        assert!(cand.logprobs.iter().all(|&l| l <= 0.0 && l.is_finite()));
    }
    let distinct: std::collections::HashSet<_> = cands.iter().map(|c| c.ids.clone()).collect();
    assert!(distinct.len() > 1, "[{name}] different seeds give different answers");
    println!("[{name}] {k} candidates decoded together equal {k} single-row decodes");
}

#[test]
fn the_batched_decoder_equals_k_single_row_decodes() {
    batched_equals_single(&mut CpuBackend::new(), "cpu");
    let gpu = block_on(Gpu::new()).expect("a GPU adapter (lavapipe)");
    batched_equals_single(&mut GpuBackend::new(gpu), "gpu");
}

/// `steps` steps of `stage` on a fresh tiny model (a reward head when it asks for one),
/// validating at each.
fn run_stage(stage: Box<dyn Stage>, kind: StageKind, tok: &Tokenizer, config: GptConfig, steps: u64) -> Vec<Progress> {
    let layout = match kind.def().head {
        Some(head) => ParamLayout::with_scalar_head(&config, head),
        None => ParamLayout::new(&config),
    };
    let mut run = Trainer::with_layout(CpuBackend::new(), tok.clone(), config, layout, None, 5).unwrap();
    let cfg = TrainConfig { steps, batch_size: 6, eval_every: 1, warmup_steps: 0, ..TrainConfig::for_stage(kind) };
    run.begin(stage, cfg).unwrap();
    (0..steps).map(|_| block_on(run.train_one()).unwrap()).collect()
}

#[test]
fn held_out_pair_accuracy_counts_only_pairs_of_different_answers() {
    let tok = tokenizer();
    let config = GptConfig::gpt2(tok.vocab_size(), 32, 1, 2, 16);
    let t = config.block_size;
    // a small model often samples one answer several times, and a person may rank the
    // copies apart: "Yes." is preferred to itself in both, and the two disagree on "No."
    let q = "Did Sam go to the park?";
    let held_out =
        vec![ranking(q, &["Yes.", "Yes.", "No."], &[1, 2, 3]), ranking(q, &["Yes.", "Yes.", "No."], &[2, 3, 1])];
    let rows = PreferenceRows::new(&tok, rankings()[..2].to_vec(), held_out.clone(), t, Default::default()).unwrap();
    // Yes. > No. twice, then No. > Yes. twice; the copies' pairs are gone
    let pairs: Vec<_> = rows.val.iter().map(|g| g.pairs.clone()).collect();
    assert_eq!(pairs, vec![vec![(0, 2), (1, 2)], vec![(2, 0), (2, 1)]]);
    // Whatever the model scores "Yes." and "No.", it orders exactly half of these pairs as
    // the person did, with a mean margin of 0. Counted, the copies' pairs (a margin of
    // exactly 0, whatever is learnt) read as wrong: 2/6, or 0 while the margins are 0.
    for kind in [StageKind::Reward, StageKind::Dpo] {
        let rows =
            PreferenceRows::new(&tok, rankings()[..2].to_vec(), held_out.clone(), t, Default::default()).unwrap();
        let stage: Box<dyn Stage> = match kind {
            StageKind::Reward => Box::new(Reward::new(rows, 0.0)),
            _ => Box::new(Dpo::new(rows, 0.1, 1.0)),
        };
        let progress = run_stage(stage, kind, &tok, config, 3);
        for p in &progress {
            let m = &p.metrics;
            println!("{kind} step {}: {m:?}", p.step);
            assert_eq!(m.val_pair_accuracy, Some(0.5), "{kind} step {}: {m:?}", p.step);
            assert!(m.val_reward_margin.unwrap().abs() < 1e-9, "{kind} step {}: {m:?}", p.step);
        }
        if kind == StageKind::Dpo {
            // the first step's policy is the reference: every margin is 0, no pair ordered
            assert_eq!(progress[0].metrics.reward_margin, Some(0.0));
            assert_eq!(progress[0].metrics.pair_accuracy, Some(0.5), "a tie is a coin's accuracy, not 0");
        }
    }

    // a ranking of one answer repeated prefers nothing: never held out, nor trained on
    let same = ranking(q, &["Yes.", "Yes.", " Yes. ", "Yes."], &[1, 2, 3, 4]);
    assert!(same.pairs().is_empty(), "{:?}", same.pairs());
    let mut all = rankings();
    all.push(same.clone());
    for seed in 0..8 {
        let rows = PreferenceRows::split(&tok, all.clone(), t, 0.3, seed).unwrap();
        assert_eq!(rows.train.len() + rows.val.len(), 3);
        assert!(!rows.held_out().contains(&same), "seed {seed}");
    }
    assert!(PreferenceRows::new(&tok, rankings(), vec![same], t, Default::default()).is_err());
    // different texts cut to the same tokens by the context are the same answer to the model
    let long = "Mia and Tom ran to the big green hill and sat by the old tree";
    let cut = ranking(q, &[&format!("{long} all day."), &format!("{long} to rest."), "No."], &[1, 2, 3]);
    let rows = PreferenceRows::new(&tok, rankings(), vec![cut], 24, Default::default()).unwrap();
    let g = &rows.val[0];
    assert_eq!(g.rows[0].ids, g.rows[1].ids, "the context of 24 cuts both answers before they differ");
    assert_eq!(g.pairs, vec![(0, 2), (1, 2)]);
}
