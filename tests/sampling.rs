//! Generation: the KV-cache decoder computes exactly the logits the full forward pass
//! computes at each position; greedy decoding is deterministic; sampling settings behave.

use kiln::backend::{Backend, CpuBackend, GpuBackend};
use kiln::cpu::rope::RopeScaling;
use kiln::gpu::Gpu;
use kiln::model::{forward, Activations, Family, Gpt, GptConfig, LlamaArch, LlamaShape};
use kiln::rng::Rng;
use kiln::sample::{generate, sample_logits, Decoder, SampleConfig};
use kiln::tokenizer::{TokenRoles, BOS, EOS, PAD};
use pollster::block_on;

const CONFIG: GptConfig = GptConfig::gpt2(50, 24, 2, 2, 32);

/// A Qwen2-shaped model: grouped-query attention 2:1, q/k/v biases, its own output layer,
/// llama3-scaled rotary positions (so the decoder's positions past 0 are tested).
fn llama_config() -> GptConfig {
    let shape = LlamaShape {
        arch: LlamaArch::Qwen2,
        n_kv_head: 2,
        intermediate_size: 40,
        qkv_bias: true,
        tie_word_embeddings: false,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        rope_scaling: RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 16.0,
        },
    };
    GptConfig { family: Family::Llama(shape), ..GptConfig::gpt2(50, 24, 2, 4, 32) }
}

fn kv_cache_matches_forward<B: Backend>(be: &mut B, name: &str, config: GptConfig) {
    let model = Gpt::new(be, config, 3).unwrap();
    let t = 17;
    let mut rng = Rng::new(4);
    let tokens: Vec<u32> = (0..t).map(|_| 8 + rng.below(42) as u32).collect();
    let acts = Activations::new(be, &config, 1, t).unwrap();
    be.write_u32(&acts.tokens, 0, &tokens);
    be.write_u32(&acts.targets, 0, &tokens);
    be.write(&acts.weights, 0, &vec![0.0; t]);
    forward(be, &model, &acts);
    let full = block_on(be.read(&acts.logits)).unwrap();
    let decoder = Decoder::new(be, &model).unwrap();
    let mut worst = 0.0f64;
    for (pos, &token) in tokens.iter().enumerate() {
        decoder.step(be, &model, token, pos);
        let logits = block_on(decoder.logits(be)).unwrap();
        let v = config.vocab_size;
        let want: Vec<f64> = full[pos * v..][..v].iter().map(|&x| x as f64).collect();
        worst = worst.max(kiln::selftest::max_rel_err(&logits, &want));
    }
    let family = if config.llama().is_some() { "Qwen2-shaped" } else { "GPT-2" };
    println!("[{name}, {family}] KV-cache logits vs full forward over {t} positions: max rel err {worst:.2e}");
    assert!(worst < 1e-5);
}

#[test]
fn kv_cache_decoding_matches_the_full_forward_pass() {
    let gpu = block_on(Gpu::new()).expect("a GPU adapter (lavapipe)");
    let mut gpu = GpuBackend::new(gpu);
    for config in [CONFIG, llama_config()] {
        kv_cache_matches_forward(&mut gpu, "gpu", config);
        kv_cache_matches_forward(&mut CpuBackend::new(), "cpu", config);
    }
}

#[test]
fn greedy_decoding_is_deterministic_and_stops_at_the_context() {
    let gpu = block_on(Gpu::new()).expect("a GPU adapter (lavapipe)");
    let mut be = GpuBackend::new(gpu);
    let model = Gpt::new(&mut be, CONFIG, 9).unwrap();
    let decoder = Decoder::new(&mut be, &model).unwrap();
    let greedy = SampleConfig { temperature: 0.0, max_tokens: 100, ..Default::default() };
    let prompt = [BOS, 10, 11, 12];
    let a = block_on(generate(&mut be, &model, &decoder, &prompt, &greedy, |_| true)).unwrap();
    let b = block_on(generate(&mut be, &model, &decoder, &prompt, &greedy, |_| true)).unwrap();
    assert_eq!(a, b);
    assert!(a.len() <= CONFIG.block_size - prompt.len() + 1);
    // the CPU backend decodes the same tokens
    let mut cpu = CpuBackend::new();
    let params = block_on(be.read(model.weights.all_f32())).unwrap();
    let cpu_model = Gpt::from_params(&mut cpu, CONFIG, &params).unwrap();
    let cpu_decoder = Decoder::new(&mut cpu, &cpu_model).unwrap();
    let c = block_on(generate(&mut cpu, &cpu_model, &cpu_decoder, &prompt, &greedy, |_| true)).unwrap();
    println!("greedy on gpu: {a:?}\ngreedy on cpu: {c:?}");
    assert_eq!(a, c);
    // streaming can stop early
    let mut seen = 0;
    let short = block_on(generate(&mut be, &model, &decoder, &prompt, &greedy, |_| {
        seen += 1;
        seen < 3
    }))
    .unwrap();
    assert_eq!(short.len(), 3);
}

#[test]
fn sampling_respects_temperature_top_k_and_top_p() {
    let mut logits = vec![-10.0f32; 20];
    logits[EOS as usize] = 1.0;
    logits[PAD as usize] = 50.0; // never sampled, however likely
    logits[9] = 3.0;
    logits[10] = 2.9;
    logits[11] = 2.8;
    let never = TokenRoles::kiln().never;
    let mut rng = Rng::new(1);
    let greedy = SampleConfig { temperature: 0.0, ..Default::default() };
    assert_eq!(sample_logits(&logits, &greedy, &never, &mut rng).unwrap(), 9);
    let top1 = SampleConfig { temperature: 1.0, top_k: 1, ..Default::default() };
    assert!((0..50).all(|_| sample_logits(&logits, &top1, &never, &mut rng).unwrap() == 9));
    let top3 = SampleConfig { temperature: 1.0, top_k: 3, ..Default::default() };
    let seen: std::collections::BTreeSet<u32> =
        (0..300).map(|_| sample_logits(&logits, &top3, &never, &mut rng).unwrap()).collect();
    assert_eq!(seen, [9, 10, 11].into());
    let nucleus = SampleConfig { temperature: 1.0, top_k: 0, top_p: 0.3, ..Default::default() };
    assert!((0..50).all(|_| sample_logits(&logits, &nucleus, &never, &mut rng).unwrap() == 9));
}
