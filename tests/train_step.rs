//! The training step on the GPU is one submit, gradient accumulation included; the loss
//! is read back (one more submit, a copy) only on steps that report it. Accumulating
//! micro-batches normalised by token count gives the gradient of the one big batch.

use kiln::backend::{Backend, GpuBackend};
use kiln::cpu::adamw::AdamWConfig;
use kiln::data::corpus::{default_corpus, Language};
use kiln::data::{documents, make_batch, pack, windows, Row};
use kiln::gpu::Gpu;
use kiln::model::{Activations, Gpt, GptConfig};
use kiln::tokenizer::{Tokenizer, TokenizerKind};
use kiln::train::{train_step, AdamW, TokenBatch};
use pollster::block_on;

#[test]
fn a_step_is_one_submit_and_accumulation_matches_one_big_batch() {
    let text = default_corpus(Language::English, 50, 2);
    let tok = Tokenizer::train(&documents(&text), TokenizerKind::Char, None).unwrap();
    // one document per row (padded at each document's end), so micro-batches differ in tokens
    let rows: Vec<Row> = documents(&text).iter().flat_map(|d| windows(&pack(&[&tok.encode(d).unwrap()]), 16)).collect();
    let row_refs: Vec<&Row> = rows.iter().collect();
    let config = GptConfig::gpt2(tok.vocab_size(), 16, 1, 2, 16);
    let gpu = block_on(Gpu::new()).expect("a GPU adapter (lavapipe)");
    let mut be = GpuBackend::new(gpu.clone());
    let adamw = AdamWConfig { lr: 1e-3, ..Default::default() };

    // three micro-batches of 2 rows, weighted 1/(tokens of all three)
    let micro: Vec<TokenBatch> = row_refs.chunks(2).take(3).map(|r| make_batch(r, 2, 16)).collect();
    let tokens: f64 = micro.iter().map(TokenBatch::weight_sum).sum();
    let micro: Vec<TokenBatch> = micro.iter().map(|b| b.scaled((1.0 / tokens) as f32)).collect();
    let model = Gpt::new(&mut be, config, 3).unwrap();
    let acts = Activations::new(&mut be, &config, 2, 16).unwrap();
    let mut opt = AdamW::new(&mut be, &model).unwrap();
    let before = gpu.submits();
    block_on(train_step(&mut be, &model, &acts, &mut opt, &micro, adamw, 1.0, false)).unwrap();
    assert_eq!(gpu.submits() - before, 1, "a silent step with 3 micro-batches is one submit");
    // the step's bind groups were made by the first step; the next reuses every one (AdamW
    // reads its learning rate and bias corrections from a buffer, not its parameters; the
    // token buckets of the embedding gradient have a size set by the batch's shape)
    let (made, dispatches) = (gpu.bind_groups_made(), gpu.dispatches());
    block_on(train_step(&mut be, &model, &acts, &mut opt, &micro, adamw, 1.0, false)).unwrap();
    let (dispatched, new) = (gpu.dispatches() - dispatches, gpu.bind_groups_made() - made);
    println!("a repeated step: {dispatched} dispatches, {new} new bind groups");
    assert!(dispatched > 20);
    assert_eq!(new, 0, "a repeated step made {new} bind groups");
    let before = gpu.submits();
    let loss_accumulated =
        block_on(train_step(&mut be, &model, &acts, &mut opt, &micro, adamw, 1.0, true)).unwrap().unwrap();
    // (three steps on `model` now; the big batch below gets three too)
    assert_eq!(gpu.submits() - before, 2, "a reporting step adds one readback");

    // the same six rows as one batch of 6, from the same starting weights
    let big = make_batch(&row_refs[..6], 6, 16);
    let big = big.scaled((1.0 / big.weight_sum()) as f32);
    let model_big = Gpt::new(&mut be, config, 3).unwrap();
    let acts_big = Activations::new(&mut be, &config, 6, 16).unwrap();
    let mut opt_big = AdamW::new(&mut be, &model_big).unwrap();
    for _ in 0..2 {
        block_on(train_step(
            &mut be,
            &model_big,
            &acts_big,
            &mut opt_big,
            std::slice::from_ref(&big),
            adamw,
            1.0,
            false,
        ))
        .unwrap();
    }
    let loss_big =
        block_on(train_step(&mut be, &model_big, &acts_big, &mut opt_big, &[big], adamw, 1.0, true)).unwrap().unwrap();
    let (a, b) =
        (block_on(be.read(model.weights.all_f32())).unwrap(), block_on(be.read(model_big.weights.all_f32())).unwrap());
    let expected: Vec<f64> = b.iter().map(|&x| x as f64).collect();
    let err = kiln::selftest::max_rel_err(&a, &expected);
    println!(
        "accumulated loss {loss_accumulated:.6} vs one batch {loss_big:.6}; weights after 3 steps differ by {err:.2e}"
    );
    assert!(((loss_accumulated - loss_big) / loss_big).abs() < 1e-5);
    assert!(err < 1e-5);
}

/// The CPU backend runs its products and row-wise ops on every core; each output is still
/// computed by one thread in a fixed order, so a run repeats bit for bit.
#[test]
fn a_multithreaded_cpu_run_repeats_bit_for_bit() {
    use kiln::backend::CpuBackend;
    use kiln::train::{TrainConfig, Trainer};
    let text = default_corpus(Language::English, 200, 3);
    let tok = Tokenizer::train(&documents(&text), TokenizerKind::Bpe, Some(300)).unwrap();
    let config = GptConfig::preset("tiny", tok.vocab_size()).unwrap();
    let cfg = TrainConfig { steps: 6, eval_every: 3, sample_every: 0, log_every: 1, ..Default::default() };
    let run = || {
        let mut run = Trainer::pretrain(CpuBackend::new(), tok.clone(), &text, config, cfg.clone()).unwrap();
        let mut losses = Vec::new();
        for _ in 0..6 {
            let p = block_on(run.train_one()).unwrap();
            losses.extend(p.loss.map(f32::to_bits));
            losses.extend(p.val_loss.map(f32::to_bits));
        }
        (losses, block_on(run.params()).unwrap().iter().map(|x| x.to_bits()).collect::<Vec<u32>>())
    };
    let (first, second) = (run(), run());
    println!(
        "{} threads: losses {:?}",
        rayon::current_num_threads(),
        first.0.iter().map(|&b| f32::from_bits(b)).collect::<Vec<_>>()
    );
    assert!(rayon::current_num_threads() > 1 || std::thread::available_parallelism().map_or(1, |n| n.get()) == 1);
    assert_eq!(first.0.len(), 8, "6 training losses and 2 validations");
    assert_eq!(first, second, "two runs of the same seed differ");
}

/// Attention keeps one log-sum-exp per query row instead of the (B, NH, T, T) scores, so
/// a model trains at context 1024 in less device memory than the old kernel's score
/// matrices alone took (one per layer, and one for their gradient). The loss on WebGPU
/// (lavapipe) matches the CPU backend's from the same weights. One layer of the small
/// preset's width keeps lavapipe's time down; the browser test trains all four.
#[test]
fn context_1024_trains_without_the_score_matrix() {
    use kiln::backend::CpuBackend;
    let (b, t) = (1, 1024);
    let text = default_corpus(Language::English, 60, 4);
    let tok = Tokenizer::train(&documents(&text), TokenizerKind::Char, None).unwrap();
    let docs: Vec<Vec<u32>> = documents(&text).iter().map(|d| tok.encode(d).unwrap()).collect();
    let rows = windows(&pack(&docs.iter().map(Vec::as_slice).collect::<Vec<_>>()), t);
    let batch = make_batch(&[&rows[0]], b, t);
    let batch = batch.scaled((1.0 / batch.weight_sum()) as f32);
    // a layer of the small preset (4 heads × 128 wide) at context 1024
    let config = GptConfig::gpt2(tok.vocab_size(), t, 1, 4, 128);
    let adamw = AdamWConfig { lr: 1e-3, ..Default::default() };

    async fn losses<B: Backend>(be: &mut B, config: GptConfig, batch: &TokenBatch, adamw: AdamWConfig) -> Vec<f32> {
        let model = Gpt::new(be, config, 7).unwrap();
        let acts = Activations::new(be, &config, batch.b, batch.t).unwrap();
        let mut opt = AdamW::new(be, &model).unwrap();
        let mut out = Vec::new();
        for _ in 0..3 {
            let loss = train_step(be, &model, &acts, &mut opt, std::slice::from_ref(batch), adamw, 1.0, true);
            out.push(loss.await.unwrap().unwrap());
        }
        out
    }
    let gpu = block_on(Gpu::new()).expect("a GPU adapter (lavapipe)");
    let gpu_losses = block_on(losses(&mut GpuBackend::new(gpu.clone()), config, &batch, adamw));
    let cpu_losses = block_on(losses(&mut CpuBackend::new(), config, &batch, adamw));
    let peak = gpu.memory().1;
    let scores = 4 * (config.n_layer + 1) as u64 * (b * config.n_head * t * t) as u64;
    println!(
        "context {t}: losses WebGPU {gpu_losses:?}, CPU {cpu_losses:?}; device peak {:.1} MiB, the score matrices alone {:.1} MiB",
        peak as f64 / 1048576.0,
        scores as f64 / 1048576.0
    );
    assert!(gpu_losses.iter().all(|l| l.is_finite()) && gpu_losses[2] < gpu_losses[0], "{gpu_losses:?}");
    for (g, c) in gpu_losses.iter().zip(&cpu_losses) {
        assert!(((g - c) / c).abs() < 1e-4, "WebGPU {gpu_losses:?} vs CPU {cpu_losses:?}");
    }
    assert!(peak < scores, "peak {peak} bytes, scores {scores}");
}

/// Data parallelism (the browser's CPU workers): a step split between the trainer and
/// two helpers, their gradients added in helper order, trains as the unshared step does
/// (the same batches, summed in another order) and repeats bit for bit.
#[test]
fn a_step_shared_with_helpers_matches_one_worker_and_repeats() {
    use kiln::backend::CpuBackend;
    use kiln::train::parallel::Helper;
    use kiln::train::{TrainConfig, Trainer};
    let text = default_corpus(Language::English, 200, 3);
    let tok = Tokenizer::train(&documents(&text), TokenizerKind::Bpe, Some(300)).unwrap();
    let config = GptConfig::preset("tiny", tok.vocab_size()).unwrap();
    let cfg =
        TrainConfig { steps: 5, eval_every: 5, sample_every: 0, log_every: 1, batch_size: 7, ..Default::default() };
    let run = |workers: usize| {
        let mut run = Trainer::pretrain(CpuBackend::new(), tok.clone(), &text, config, cfg.clone()).unwrap();
        let mut helpers: Vec<Helper<CpuBackend>> =
            (1..workers).map(|_| Helper::new(CpuBackend::new(), config).unwrap()).collect();
        let mut losses = Vec::new();
        for _ in 0..5 {
            if let Some(work) = block_on(run.share_step(workers)).unwrap() {
                assert_eq!(work.shares.len(), workers - 1);
                assert_eq!(work.shares[1][0].b, 2, "7 rows in shares of 3, 2 and 2");
                block_on(run.local_share()).unwrap();
                let results = helpers
                    .iter_mut()
                    .zip(&work.shares)
                    .map(|(h, shares)| block_on(h.gradients(&work.params, shares)).unwrap())
                    .collect();
                run.add_share_results(results).unwrap();
            }
            let p = block_on(run.train_one()).unwrap();
            losses.extend(p.loss);
            losses.extend(p.val_loss);
        }
        (losses, block_on(run.params()).unwrap())
    };
    let (one, shared, again) = (run(1), run(3), run(3));
    println!("one worker {:?}\nthree workers {:?}", one.0, shared.0);
    assert_eq!(shared.0.len(), 6, "5 training losses and a validation");
    for (a, b) in one.0.iter().zip(&shared.0) {
        assert!(((a - b) / a).abs() < 1e-5, "{:?} vs {:?}", one.0, shared.0);
    }
    let expected: Vec<f64> = one.1.iter().map(|&x| x as f64).collect();
    let err = kiln::selftest::max_rel_err(&shared.1, &expected);
    assert!(err < 1e-3, "weights after 5 steps differ by {err:.2e}");
    assert_eq!(shared.0, again.0, "two shared runs of the same seed differ");
    assert_eq!(shared.1, again.1);
}
