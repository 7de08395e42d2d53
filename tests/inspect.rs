//! The inspection views' readings (inspect.rs): the next token's probabilities, one head's
//! attention weights and a row's loss at each position, on lavapipe and on the CPU backend.

use kiln::backend::{Backend, CpuBackend, GpuBackend};
use kiln::data::Row;
use kiln::gpu::Gpu;
use kiln::inspect::{next_token, row_losses, softmax, top_k, HeadRef, Look};
use kiln::model::{Gpt, GptConfig};
use kiln::rng::Rng;
use kiln::tokenizer::BOS;
use pollster::block_on;

const CONFIG: GptConfig = GptConfig::gpt2(60, 20, 2, 2, 32);

fn prompt(n: usize) -> Vec<u32> {
    let mut rng = Rng::new(11);
    std::iter::once(BOS).chain((1..n).map(|_| 8 + rng.below(52) as u32)).collect()
}

fn look<B: Backend>(be: &mut B, config: GptConfig, params: &[f32], ids: &[u32], head: HeadRef) -> Look {
    let model = Gpt::from_params(be, config, params).unwrap();
    let all = block_on(next_token(be, &model, ids, Some(head), true)).unwrap();
    // the page's reading: only the last row of logits comes back, the same numbers
    let last = block_on(next_token(be, &model, ids, Some(head), false)).unwrap();
    assert_eq!(last.logits, all.logits[(ids.len() - 1) * config.vocab_size..]);
    assert_eq!((last.probs.clone(), last.attention.clone()), (all.probs.clone(), all.attention.clone()));
    all
}

/// Checks what every reading must hold, and returns the worst row-sum error.
fn check(name: &str, look: &Look, t: usize, v: usize) -> f64 {
    let sum: f64 = look.probs.iter().map(|&p| p as f64).sum();
    assert!((sum - 1.0).abs() < 1e-5, "[{name}] next-token probabilities sum to {sum}");
    assert_eq!(look.probs, softmax(&look.logits[(t - 1) * v..], 1.0), "[{name}] probs are the last row's softmax");
    let att = look.attention.as_ref().unwrap();
    assert_eq!(att.len(), t * t);
    let mut worst = 0.0f64;
    for q in 0..t {
        let row = &att[q * t..][..t];
        assert!(row[q + 1..].iter().all(|&w| w == 0.0), "[{name}] token {q} attends to a later token: {row:?}");
        assert!(row[..=q].iter().all(|&w| (0.0..=1.0 + 1e-6).contains(&w)));
        worst = worst.max((row.iter().map(|&w| w as f64).sum::<f64>() - 1.0).abs());
    }
    assert!(worst < 1e-4, "[{name}] attention rows sum to 1 within {worst:.2e}");
    worst
}

/// lavapipe and the CPU backend read the same probabilities and attention, over prompts
/// shorter than one 64-key tile of the attention kernel and longer than two.
#[test]
fn next_token_and_attention_agree_on_both_backends() {
    let gpu = block_on(Gpu::new()).expect("a GPU adapter (lavapipe)");
    let mut gpu = GpuBackend::new(gpu);
    let mut cpu = CpuBackend::new();
    let long = GptConfig { block_size: 160, ..CONFIG };
    for (config, n) in [(CONFIG, 13), (long, 150)] {
        let model = Gpt::new(&mut cpu, config, 5).unwrap();
        let params = block_on(cpu.read(model.weights.all_f32())).unwrap();
        let ids = prompt(n);
        for head in [HeadRef { layer: 0, head: 1 }, HeadRef { layer: 1, head: 0 }] {
            let g = look(&mut gpu, config, &params, &ids, head);
            let c = look(&mut cpu, config, &params, &ids, head);
            let v = config.vocab_size;
            let (eg, ec) = (check("gpu", &g, n, v), check("cpu", &c, n, v));
            let dp = g.probs.iter().zip(&c.probs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            let (ga, ca) = (g.attention.as_ref().unwrap(), c.attention.as_ref().unwrap());
            let da = ga.iter().zip(ca).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            println!("T = {n}, {head:?}: row sums within {eg:.1e} (gpu), {ec:.1e} (cpu); gpu vs cpu: probs {dp:.1e}, attention {da:.1e}");
            assert!(dp < 1e-5 && da < 1e-5);
            // the first token can attend only to itself
            assert!((ca[0] - 1.0).abs() < 1e-6, "token 0 attends to itself with weight {}", ca[0]);
        }
    }
}

#[test]
fn temperature_sharpens_and_top_k_orders() {
    let logits = [0.5f32, 2.0, -1.0, 2.0, 1.0];
    let p1 = softmax(&logits, 1.0);
    let cold = softmax(&logits, 0.5);
    let hot = softmax(&logits, 2.0);
    assert!(cold[1] > p1[1] && p1[1] > hot[1], "{cold:?} {p1:?} {hot:?}");
    assert_eq!(softmax(&logits, 0.0), vec![0.0, 1.0, 0.0, 0.0, 0.0]);
    assert_eq!(top_k(&p1, 3), vec![1, 3, 4], "ties keep id order");
}

#[test]
fn a_prompt_longer_than_the_context_keeps_its_end_and_bad_heads_are_refused() {
    let mut cpu = CpuBackend::new();
    let model = Gpt::new(&mut cpu, CONFIG, 2).unwrap();
    let ids = prompt(30);
    let long = block_on(next_token(&mut cpu, &model, &ids, None, false)).unwrap();
    assert_eq!(long.ids, ids[10..]);
    let e = block_on(next_token(&mut cpu, &model, &ids, Some(HeadRef { layer: 2, head: 0 }), false)).err().unwrap();
    assert!(e.to_string().contains("2 layers of 2 heads"), "{e}");
    assert!(block_on(next_token(&mut cpu, &model, &[], None, false)).is_err());
}

#[test]
fn row_losses_are_each_positions_negative_log_probability() {
    let mut cpu = CpuBackend::new();
    let model = Gpt::new(&mut cpu, CONFIG, 8).unwrap();
    let ids = prompt(12);
    // a fine-tuning row: the first five targets are the prompt, masked
    let row = Row { supervised: (0..ids.len()).map(|i| i > 5).collect(), ids: ids.clone() };
    let out = block_on(row_losses(&mut cpu, &model, &row)).unwrap();
    assert_eq!(out.inputs, ids[..11]);
    assert_eq!(out.targets, ids[1..]);
    let logits = block_on(next_token(&mut cpu, &model, &ids[..11], None, true)).unwrap().logits;
    let v = CONFIG.vocab_size;
    for (i, loss) in out.losses.iter().enumerate() {
        match loss {
            None => assert!(i < 5, "position {i} is learnt but has no loss"),
            Some(l) => {
                let p = softmax(&logits[i * v..][..v], 1.0)[ids[i + 1] as usize];
                assert!((l + p.ln()).abs() < 1e-4, "position {i}: loss {l}, −log p {}", -p.ln());
            }
        }
    }
    assert_eq!(out.losses.iter().filter(|l| l.is_some()).count(), 6);
}
