//! Golden parity with PyTorch: the fixtures in tests/golden/tiny/ were written by
//! tests/golden/make_fixtures.py (transformers' GPT2LMHeadModel in float64 from f32
//! weights); those in tests/golden/llama_gqa/ (LlamaForCausalLM: grouped-query attention
//! 2:1, tied embeddings, rope_theta 10,000 with llama3 scaling) and tests/golden/qwen2_bias/
//! (Qwen2ForCausalLM: q/k/v biases, its own lm_head, rope_theta 1,000,000) by
//! tests/golden/make_llama_fixtures.py, each a Hugging Face folder read through Kiln's
//! config.json reader. On both backends Kiln must match the logits and loss within 1e-5,
//! every gradient tensor within 1e-4, and the losses of 10 AdamW steps (with clipping)
//! within 1e-4 — all relative to the largest magnitude of the reference tensor.

use std::collections::HashMap;

use kiln::backend::{Backend, CpuBackend, GpuBackend};
use kiln::cpu::adamw::AdamWConfig;
use kiln::gpu::Gpu;
use kiln::model::hf_config::config_from_hf;
use kiln::model::{backward, forward, Activations, Gpt, GptConfig, ParamLayout};
use kiln::train::{train_step, AdamW, TokenBatch};
use pollster::block_on;
use safetensors::{Dtype, SafeTensors};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");

type Tensors = HashMap<String, (Vec<usize>, Vec<f64>)>;

fn load(dir: &str, file: &str) -> Tensors {
    let bytes = std::fs::read(format!("{GOLDEN}/{dir}/{file}")).expect("fixture file (run tests/golden/make_*.py)");
    let st = SafeTensors::deserialize(&bytes).expect("a safetensors file");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view.data();
            let values: Vec<f64> = match view.dtype() {
                Dtype::F64 => data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
                Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
                Dtype::I32 => data.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
                other => panic!("unexpected dtype {other:?}"),
            };
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    kiln::selftest::max_rel_err(got, want)
}

struct Fixture {
    config: GptConfig,
    params: Vec<f32>,
    batch: TokenBatch,
    expected: HashMap<String, (Vec<usize>, Vec<f64>)>,
    adamw: AdamWConfig,
    max_norm: f32,
    steps: usize,
}

/// A fixture folder: tiny/ keeps Kiln's sizes in config.json and the weights in
/// params.safetensors; the others are Hugging Face folders (config.json, model.safetensors)
/// with the rest of the fixture in fixture.json.
fn fixture(dir: &str) -> Fixture {
    let read = |file: &str| std::fs::read_to_string(format!("{GOLDEN}/{dir}/{file}")).unwrap();
    let u = |v: &serde_json::Value| v.as_u64().unwrap() as usize;
    let (config, json, initial) = if dir == "tiny" {
        let json: serde_json::Value = serde_json::from_str(&read("config.json")).unwrap();
        let m = &json["model"];
        let config = GptConfig::gpt2(
            u(&m["vocab_size"]),
            u(&m["block_size"]),
            u(&m["n_layer"]),
            u(&m["n_head"]),
            u(&m["n_embd"]),
        );
        (config, json, load(dir, "params.safetensors"))
    } else {
        let config = config_from_hf(read("config.json").as_bytes()).unwrap();
        let json: serde_json::Value = serde_json::from_str(&read("fixture.json")).unwrap();
        (config, json, load(dir, "model.safetensors"))
    };
    let layout = ParamLayout::new(&config);
    assert_eq!(layout.tensors.len(), initial.len(), "{dir}: every tensor of the folder is in the layout");
    let mut params = vec![0.0f32; layout.total];
    for t in &layout.tensors {
        let (shape, values) = initial.get(&t.name).unwrap_or_else(|| panic!("fixture lacks {}", t.name));
        assert_eq!(shape, &t.shape, "{}", t.name);
        for (p, v) in params[t.offset..t.offset + t.len()].iter_mut().zip(values) {
            *p = *v as f32;
        }
    }
    let b = load(dir, "batch.safetensors");
    let (bb, tt) = (u(&json["batch"]["b"]), u(&json["batch"]["t"]));
    let ids = |name: &str| b[name].1.iter().map(|&x| x as u32).collect::<Vec<u32>>();
    let batch = TokenBatch {
        b: bb,
        t: tt,
        tokens: ids("tokens"),
        targets: ids("targets"),
        weights: b["weights"].1.iter().map(|&x| x as f32).collect(),
    };
    let o = &json["optimizer"];
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    Fixture {
        config,
        params,
        batch,
        expected: load(dir, "expected.safetensors"),
        adamw: AdamWConfig {
            lr: f(&o["lr"]),
            beta1: f(&o["beta1"]),
            beta2: f(&o["beta2"]),
            eps: f(&o["eps"]),
            weight_decay: f(&o["weight_decay"]),
        },
        max_norm: f(&o["max_norm"]) as f32,
        steps: u(&o["steps"]),
    }
}

async fn check<B: Backend>(be: &mut B, backend: &str, dir: &str) {
    let name = format!("{dir}, {backend}");
    let fx = fixture(dir);
    let (b, t) = (fx.batch.b, fx.batch.t);
    let model = Gpt::from_params(be, fx.config, &fx.params).unwrap();
    let acts = Activations::new(be, &fx.config, b, t).unwrap();
    be.write_u32(&acts.tokens, 0, &fx.batch.tokens);
    be.write_u32(&acts.targets, 0, &fx.batch.targets);
    be.write(&acts.weights, 0, &fx.batch.weights);
    forward(be, &model, &acts);
    let logits = be.read(&acts.logits).await.unwrap();
    let losses = be.read(&acts.losses).await.unwrap();
    let loss: f64 = losses.iter().map(|&x| x as f64).sum();
    let e = &fx.expected;
    let logits_err = rel_err(&logits, &e["logits"].1);
    let losses_err = rel_err(&losses, &e["losses"].1);
    let loss_err = (loss - e["loss"].1[0]).abs() / e["loss"].1[0].abs();
    println!("[{name}] logits max rel err {logits_err:.2e}, per-position losses {losses_err:.2e}, loss {loss:.6} vs {:.6} (rel err {loss_err:.2e})", e["loss"].1[0]);
    assert!(logits_err <= 1e-5 && losses_err <= 1e-5 && loss_err <= 1e-5, "[{name}] forward off");

    be.clear(model.grads());
    backward(be, &model, &acts, &fx.batch.tokens).unwrap();
    let grads = be.read(model.grads()).await.unwrap();
    let mut worst = (0.0f64, String::new());
    for tensor in &model.layout.tensors {
        let want = &e[&format!("grad.{}", tensor.name)].1;
        let err = rel_err(&grads[tensor.offset..tensor.offset + tensor.len()], want);
        assert!(err <= 1e-4, "[{name}] gradient of {} off by {err:.2e}", tensor.name);
        if err > worst.0 {
            worst = (err, tensor.name.clone());
        }
    }
    println!(
        "[{name}] {} gradient tensors, worst max rel err {:.2e} ({})",
        model.layout.tensors.len(),
        worst.0,
        worst.1
    );

    // 10 AdamW steps with clipping, through the trainer's step.
    let model = Gpt::from_params(be, fx.config, &fx.params).unwrap();
    let mut opt = AdamW::new(be, &model).unwrap();
    let want = &e["step_losses"].1;
    let mut got = Vec::new();
    for _ in 0..fx.steps {
        let loss =
            train_step(be, &model, &acts, &mut opt, std::slice::from_ref(&fx.batch), fx.adamw, fx.max_norm, true)
                .await
                .unwrap()
                .unwrap();
        got.push(loss);
    }
    let steps_err = rel_err(&got, want);
    println!(
        "[{name}] 10 AdamW steps: {:.5} → {:.5} (PyTorch {:.5} → {:.5}), max rel err {steps_err:.2e}",
        got[0], got[9], want[0], want[9]
    );
    assert!(steps_err <= 1e-4, "[{name}] AdamW steps off");
}

fn gpu() -> GpuBackend {
    GpuBackend::new(block_on(Gpu::new()).expect("a GPU adapter (lavapipe)"))
}

#[test]
fn gpu_backend_matches_pytorch() {
    block_on(check(&mut gpu(), "gpu", "tiny"));
}

#[test]
fn cpu_backend_matches_pytorch() {
    block_on(check(&mut CpuBackend::new(), "cpu", "tiny"));
}

#[test]
fn llama_with_grouped_query_attention_matches_transformers() {
    block_on(check(&mut CpuBackend::new(), "cpu", "llama_gqa"));
    block_on(check(&mut gpu(), "gpu", "llama_gqa"));
}

#[test]
fn qwen2_with_biases_and_its_own_output_layer_matches_transformers() {
    block_on(check(&mut CpuBackend::new(), "cpu", "qwen2_bias"));
    block_on(check(&mut gpu(), "gpu", "qwen2_bias"));
}
