//! Golden parity with PyTorch: the fixtures in tests/golden/tiny/ were written by
//! tests/golden/make_fixtures.py (transformers' GPT2LMHeadModel in float64 from f32
//! weights); those in tests/golden/llama_gqa/ (LlamaForCausalLM: grouped-query attention
//! 2:1, tied embeddings, rope_theta 10,000 with llama3 scaling) and tests/golden/qwen2_bias/
//! (Qwen2ForCausalLM: q/k/v biases, its own lm_head, rope_theta 1,000,000) by
//! tests/golden/make_llama_fixtures.py, each a Hugging Face folder read through Kiln's
//! config.json reader. On both backends Kiln must match the logits and loss within 1e-5,
//! every gradient tensor within 1e-4, and the losses of 10 AdamW steps (with clipping)
//! within 1e-4 — all relative to the largest magnitude of the reference tensor
//! (`kiln::train::golden`, which the browser test runs too). tests/golden/llama_gqa_lora/
//! and qwen2_bias_lora/ (tests/golden/make_lora_fixtures.py) are PEFT adapter folders on
//! those two: the gradients compared are the adapters' alone, the base frozen.

use kiln::backend::{Backend, CpuBackend, GpuBackend};
use kiln::checkpoint::Files;
use kiln::gpu::Gpu;
use kiln::model::GptConfig;
use kiln::train::golden::{golden_check, read_tensors, GoldenFixture};
use pollster::block_on;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");

/// Every file of a fixture folder.
fn files(dir: &str) -> Files {
    std::fs::read_dir(format!("{GOLDEN}/{dir}"))
        .expect("fixture folder (run tests/golden/make_*.py)")
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// tiny/ keeps Kiln's sizes and its settings in config.json and the weights in
/// params.safetensors; the others are Hugging Face folders with a fixture.json.
fn fixture(dir: &str) -> GoldenFixture {
    // a PEFT adapter folder on the base its fixture.json names
    if let Some(base) = dir.strip_suffix("_lora") {
        return fixture(base).with_adapter(&files(dir)).unwrap();
    }
    let files = files(dir);
    if dir != "tiny" {
        return GoldenFixture::from_files(&files).unwrap();
    }
    let json: serde_json::Value = serde_json::from_slice(&files["config.json"]).unwrap();
    let m = &json["model"];
    let u = |v: &serde_json::Value| v.as_u64().unwrap() as usize;
    let config =
        GptConfig::gpt2(u(&m["vocab_size"]), u(&m["block_size"]), u(&m["n_layer"]), u(&m["n_head"]), u(&m["n_embd"]));
    let initial = read_tensors(&files["params.safetensors"], "params.safetensors").unwrap();
    GoldenFixture::new(config, &initial, &json, &files).unwrap()
}

async fn check<B: Backend>(be: &mut B, backend: &str, dir: &str) {
    let name = format!("{dir}, {backend}");
    let r = golden_check(be, &fixture(dir)).await.unwrap();
    println!("[{name}] logits max rel err {:.2e}, per-position losses {:.2e}, loss {:.2e}", r.logits, r.losses, r.loss);
    println!(
        "[{name}] {} gradient tensors, worst max rel err {:.2e} ({})",
        r.gradient_tensors, r.worst_gradient, r.worst_gradient_tensor
    );
    let (got, want) = (&r.step_losses, &r.reference_step_losses);
    println!(
        "[{name}] {} AdamW steps: {:.5} → {:.5} (PyTorch {:.5} → {:.5}), max rel err {:.2e}",
        got.len(),
        got[0],
        got[got.len() - 1],
        want[0],
        want[want.len() - 1],
        r.steps
    );
    assert!(r.passed(), "[{name}] off: {r:?}");
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

#[test]
fn lora_on_every_linear_layer_matches_peft() {
    block_on(check(&mut CpuBackend::new(), "cpu", "llama_gqa_lora"));
    block_on(check(&mut gpu(), "gpu", "llama_gqa_lora"));
}

#[test]
fn lora_on_q_and_v_matches_peft() {
    block_on(check(&mut CpuBackend::new(), "cpu", "qwen2_bias_lora"));
    block_on(check(&mut gpu(), "gpu", "qwen2_bias_lora"));
}
