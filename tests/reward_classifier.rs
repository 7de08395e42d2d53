//! A reward model's folder is transformers' GPT2ForSequenceClassification: config.json
//! says so with one label, the score has a weight and no bias (its bias folded into
//! ln_f.bias along the weight), and every score stays what Kiln's head gives. Kiln reads
//! the folder back bit for bit (the exact biases kept beside it), reads a classifier
//! without them with the same scores, and still reads its older folders (GPT2LMHeadModel
//! with `score.bias`).

use kiln::backend::CpuBackend;
use kiln::checkpoint::{load_model, model_files, Files, REWARD_HEAD};
use kiln::data::corpus::{default_corpus, Language};
use kiln::data::documents;
use kiln::data::preference::answer_row;
use kiln::data::Row;
use kiln::model::{GptConfig, ParamLayout, ScalarHeadKind};
use kiln::tokenizer::{Tokenizer, TokenizerKind};
use kiln::train::Trainer;
use pollster::block_on;
use safetensors::SafeTensors;

fn reward_folder() -> (Files, Vec<f32>, Tokenizer, GptConfig) {
    let text = default_corpus(Language::English, 60, 3);
    let tok = Tokenizer::train(&documents(&text), TokenizerKind::Bpe, Some(300)).unwrap();
    let cfg = GptConfig::gpt2(tok.vocab_size(), 64, 1, 2, 32);
    let layout = ParamLayout::with_scalar_head(&cfg, ScalarHeadKind::Reward);
    let mut params = layout.init(&cfg, 5);
    // a trained head's bias is far from zero
    let head = layout.scalar_head.unwrap();
    params[head.bias] = 0.75;
    (model_files(&cfg, &layout, &tok, &params).unwrap(), params, tok, cfg)
}

fn rows(tok: &Tokenizer) -> Vec<Row> {
    let prompt = tok.encode("Who came?").unwrap();
    ["Mia.", "Tom came to play!", "No."].iter().map(|a| answer_row(&prompt, &tok.encode(a).unwrap(), 64, 0)).collect()
}

fn scores(files: &Files, tok: &Tokenizer) -> (Vec<f64>, Vec<f32>) {
    let loaded = load_model(files).unwrap();
    let params = loaded.params.clone();
    let mut run = Trainer::with_layout(
        CpuBackend::new(),
        loaded.tokenizer,
        loaded.config,
        loaded.layout,
        Some(&loaded.params),
        0,
    )
    .unwrap();
    (block_on(run.row_rewards(&rows(tok))).unwrap(), params)
}

#[test]
fn a_reward_folder_is_a_sequence_classifier_with_the_same_scores() {
    let (files, params, tok, _) = reward_folder();
    let config: serde_json::Value = serde_json::from_slice(&files["config.json"]).unwrap();
    assert_eq!(config["architectures"], serde_json::json!(["GPT2ForSequenceClassification"]));
    assert_eq!(config["num_labels"], 1);
    assert_eq!(config["pad_token_id"], 0);
    let st = SafeTensors::deserialize(&files["model.safetensors"]).unwrap();
    assert_eq!(st.tensor("score.weight").unwrap().shape(), [1, 32]);
    assert!(st.tensor("score.bias").is_err(), "transformers' score has no bias");

    // read back: every parameter as trained, bit for bit
    let (exact, read) = scores(&files, &tok);
    assert!(read.iter().zip(&params).all(|(a, b)| a.to_bits() == b.to_bits()), "the exact biases are put back");

    // without Kiln's file (a classifier as transformers sees it): the folded bias gives
    // the same scores
    let mut classifier = files.clone();
    classifier.remove(REWARD_HEAD);
    let (folded, _) = scores(&classifier, &tok);
    println!("scores with the bias: {exact:?}; folded: {folded:?}");
    for (a, b) in exact.iter().zip(&folded) {
        assert!((a - b).abs() < 1e-5, "{a} against {b}");
    }
    assert!(exact.iter().any(|s| s.abs() > 0.1), "the bias shows in the scores: {exact:?}");

    // an older Kiln reward folder: GPT2LMHeadModel with score.bias in model.safetensors
    let loaded = load_model(&files).unwrap();
    let mut old = classifier.clone();
    let tensors = loaded
        .layout
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone(), kiln::tensors::f32_bytes(&params[t.offset..t.offset + t.len()])))
        .collect();
    old.insert("model.safetensors".into(), kiln::tensors::safetensors_of(tensors).unwrap());
    let mut config = config.clone();
    config["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
    old.insert("config.json".into(), serde_json::to_vec(&config).unwrap());
    let (older, _) = scores(&old, &tok);
    assert_eq!(older, exact);
}
