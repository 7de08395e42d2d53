//! A model as people bring one from the Hub: tests/golden/smollm2_like/ is a Llama folder in
//! SmolLM2-Instruct's shape (its ChatML template in chat_template.jinja, <|im_start|> and
//! <|im_end|> at their own ids, bf16 weights), made by tests/golden/make_llama_folder.py with
//! what transformers does with it. Kiln reads it as it is — no token of its own added — and
//! on both backends gives transformers' apply_chat_template ids and its greedy answers.

use kiln::backend::{Backend, CpuBackend, GpuBackend};
use kiln::checkpoint::{load_model, read_dir, LoadedModel};
use kiln::data::chat::Message;
use kiln::gpu::Gpu;
use kiln::sample::{generate, Decoder, SampleConfig};
use kiln::train::Trainer;
use pollster::block_on;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/smollm2_like");

fn folder() -> LoadedModel {
    load_model(&read_dir(std::path::Path::new(DIR)).unwrap()).unwrap()
}

struct Case {
    messages: Vec<Message>,
    prompt_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
}

fn cases() -> Vec<Case> {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{DIR}/expected.json")).unwrap()).unwrap();
    let ids = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            messages: serde_json::from_value(c["messages"].clone()).unwrap(),
            prompt_ids: ids(&c["prompt_ids"]),
            greedy_ids: ids(&c["greedy_ids"]),
        })
        .collect()
}

#[test]
fn an_imported_folder_keeps_its_vocabulary_and_its_tokens_roles() {
    let loaded = folder();
    let l = loaded.config.llama().expect("a Llama-family model");
    assert_eq!((l.n_kv_head, loaded.config.n_head), (2, 4));
    assert!(loaded.tokenizer.is_pretrained());
    // its own tokens at their own ids: none of Kiln's eight added
    assert_eq!(loaded.tokenizer.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(loaded.tokenizer.token_to_id("<|im_end|>"), Some(2));
    assert_eq!(loaded.tokenizer.token_to_id("<|eos|>"), None);
    assert_eq!(loaded.config.vocab_size, loaded.tokenizer.vocab_size());
    // tokenizer_config.json's bos and eos; generation_config.json's eos id
    assert_eq!(loaded.roles.bos, Some(1));
    assert_eq!(loaded.roles.stop, vec![2]);
    assert!(loaded.roles.never.is_empty(), "an imported model may say any of its tokens");
    assert!(loaded.chat_template.is_some(), "chat_template.jinja read");
    println!("{}: {:?}, notes {:?}", loaded.config, loaded.roles, loaded.notes);
}

fn answers_as_transformers<B: Backend>(be: B, name: &str) {
    let loaded = folder();
    let mut run =
        Trainer::with_layout(be, loaded.tokenizer, loaded.config, loaded.layout, Some(&loaded.params), 0).unwrap();
    run.model.roles = loaded.roles;
    run.chat_template = loaded.chat_template;
    for (i, case) in cases().into_iter().enumerate() {
        let ids = run.chat_prompt(&case.messages).unwrap();
        assert_eq!(ids, case.prompt_ids, "[{name}] case {i}: apply_chat_template's ids");
        let greedy = SampleConfig { temperature: 0.0, max_tokens: case.greedy_ids.len(), ..SampleConfig::default() };
        let decoder = Decoder::new(&mut run.be, &run.model).unwrap();
        let got = block_on(generate(&mut run.be, &run.model, &decoder, &ids, &greedy, |_| true)).unwrap();
        // transformers' output ends with the stop token; Kiln's answer stops before it
        let mut want = case.greedy_ids.clone();
        let stopped = want.last().is_some_and(|id| run.model.roles.stop.contains(id));
        if stopped {
            want.pop();
        }
        println!(
            "[{name}] case {i}: {} prompt ids, greedy {got:?} (stopped: {stopped}) {:?}",
            ids.len(),
            run.tokenizer.decode(&got).unwrap()
        );
        assert_eq!(got, want, "[{name}] case {i}: transformers' greedy answer");
    }
}

#[test]
fn an_imported_llama_answers_as_transformers_does_on_the_cpu() {
    answers_as_transformers(CpuBackend::new(), "cpu");
}

#[test]
fn an_imported_llama_answers_as_transformers_does_on_the_gpu() {
    answers_as_transformers(GpuBackend::new(block_on(Gpu::new()).expect("a GPU adapter (lavapipe)")), "gpu");
}
