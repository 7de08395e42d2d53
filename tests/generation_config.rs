//! generation_config.json: every model folder Kiln writes tells transformers' `generate`
//! to stop where Kiln's sampler stops (`<|eos|>` and `<|end|>`), with Kiln's sampling
//! defaults; an imported folder's own file is kept through import, fine-tuning, a
//! snapshot and its restore, and export, its token ids moved with the vocabulary; a
//! malformed one never breaks an import.

use kiln::backend::BackendKind;
use kiln::checkpoint::{
    from_zip, load_model, model_files, read_dir, to_zip, write_dir, Files, LoadedModel, GENERATION_CONFIG,
};
use kiln::data::corpus::{default_corpus, Language};
use kiln::data::documents;
use kiln::data::instruct::{instruction_set, Split};
use kiln::data::preference::{rankings_jsonl, Ranking, Verdict};
use kiln::model::{GptConfig, ParamLayout};
use kiln::sample::SampleConfig;
use kiln::session::{Session, StageData};
use kiln::tokenizer::TokenRoles;
use kiln::tokenizer::{Tokenizer, TokenizerKind, SPECIAL_TOKENS};
use kiln::train::{StageKind, TrainConfig};
use kiln::with_run;
use pollster::block_on;
use serde_json::{json, Value};

fn tokenizer() -> Tokenizer {
    let text = default_corpus(Language::English, 60, 3);
    Tokenizer::train(&documents(&text), TokenizerKind::Bpe, Some(300)).unwrap()
}

fn tiny(vocab: usize) -> GptConfig {
    GptConfig::gpt2(vocab, 64, 1, 2, 16)
}

/// A Kiln model folder of a tiny model.
fn folder() -> (Files, Tokenizer) {
    let tok = tokenizer();
    let cfg = tiny(tok.vocab_size());
    let layout = ParamLayout::new(&cfg);
    (model_files(&cfg, &layout, &tok, &layout.init(&cfg, 1)).unwrap(), tok)
}

fn parse(files: &Files, name: &str) -> Value {
    serde_json::from_slice(&files[name]).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("a list of ids").iter().map(|x| x.as_u64().expect("an id") as u32).collect()
}

#[test]
fn the_written_generation_config_stops_where_kiln_stops() {
    let (files, tok) = folder();
    let g = parse(&files, GENERATION_CONFIG);
    println!("{}", serde_json::to_string_pretty(&g).unwrap());
    // the stop ids are the tokenizer's <|eos|> and <|end|>, the ones Kiln's sampler stops on
    let eos = ids(&g["eos_token_id"]);
    assert_eq!(eos.iter().map(|&id| tok.token_text(id)).collect::<Vec<_>>(), ["<|eos|>", "<|end|>"]);
    assert_eq!(eos, TokenRoles::kiln().stop);
    assert_eq!(tok.token_text(g["pad_token_id"].as_u64().unwrap() as u32), "<|pad|>");
    assert_eq!(tok.token_text(g["bos_token_id"].as_u64().unwrap() as u32), "<|bos|>");
    // config.json agrees on the ids it names
    let config = parse(&files, "config.json");
    for key in ["bos_token_id", "pad_token_id"] {
        assert_eq!(g[key], config[key], "{key}");
    }
    assert!(eos.contains(&(config["eos_token_id"].as_u64().unwrap() as u32)));
    // what Kiln's sampler never picks, generate never picks either
    let suppressed = ids(&g["suppress_tokens"]);
    assert_eq!(suppressed, TokenRoles::kiln().never);
    let names: Vec<String> = suppressed.iter().map(|&id| tok.token_text(id)).collect();
    assert_eq!(names, ["<|pad|>", "<|bos|>", "<|unk|>", "<|system|>", "<|user|>", "<|assistant|>"]);
    // the sampler's defaults, floats in their shortest form (0.8, not 0.800000011920929)
    let s = SampleConfig::default();
    assert_eq!(g["max_new_tokens"], s.max_tokens);
    assert_eq!(g["do_sample"], s.temperature > 0.0);
    let shortest = |x: f32| x.to_string().parse::<f64>().unwrap();
    assert_eq!(g["temperature"].as_f64(), Some(shortest(s.temperature)));
    assert_eq!(g["top_k"], s.top_k);
    assert_eq!(g["top_p"].as_f64(), Some(shortest(s.top_p)));
    // Kiln's own file read back is not an imported one: nothing to keep, no note
    let loaded = load_model(&files).unwrap();
    assert!(loaded.generation_config.is_none() && loaded.notes.is_empty(), "{:?}", loaded.notes);
    // nor is it once transformers has saved it again (adding its version)
    let mut resaved = g.clone();
    resaved["transformers_version"] = json!("5.25.0");
    assert!(load_with(&files, &serde_json::to_vec(&resaved).unwrap()).generation_config.is_none());
    // every way out of Kiln carries it: a folder and a .zip
    let dir = std::env::temp_dir().join(format!("kiln-genconfig-{}", std::process::id()));
    write_dir(&dir, &files).unwrap();
    assert_eq!(read_dir(&dir).unwrap()[GENERATION_CONFIG], files[GENERATION_CONFIG]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(from_zip(&to_zip(&files).unwrap()).unwrap()[GENERATION_CONFIG], files[GENERATION_CONFIG]);
}

/// A generation_config.json as another trainer might leave one: sampling settings of its
/// own, an unknown field, transformers' version.
fn theirs() -> Value {
    json!({
        "bos_token_id": 1,
        "eos_token_id": 2,
        "temperature": 0.6,
        "top_p": 0.9,
        "do_sample": true,
        "repetition_penalty": 1.3,
        "max_new_tokens": 7,
        "someones_extension": {"nested": [1, "x", null]},
        "transformers_version": "5.25.0"
    })
}

/// `theirs()` as Kiln writes it back: Kiln's stop ids added, `<|pad|>` as padding.
fn theirs_exported() -> Value {
    let mut v = theirs();
    v["eos_token_id"] = json!([2, 7]);
    v["pad_token_id"] = json!(0);
    v
}

fn export(session: &mut Session) -> Value {
    parse(&block_on(session.model_files()).unwrap(), GENERATION_CONFIG)
}

fn options(kind: StageKind) -> TrainConfig {
    TrainConfig { steps: 2, eval_every: 2, sample_every: 0, log_every: 1, batch_size: 2, ..kind.defaults() }
}

fn finish(session: &mut Session) {
    while !with_run!(session.run().unwrap(), r => r.done()) {
        with_run!(session.run_mut().unwrap(), r => block_on(r.train_one())).unwrap();
    }
}

#[test]
fn an_imported_generation_config_is_kept_through_import_and_export() {
    let (mut files, _) = folder();
    files.insert(GENERATION_CONFIG.into(), serde_json::to_vec(&theirs()).unwrap());
    // read bounded from a folder, as the CLI reads one
    let dir = std::env::temp_dir().join(format!("kiln-genconfig-import-{}", std::process::id()));
    write_dir(&dir, &files).unwrap();
    let files = read_dir(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let mut session = Session::new(None, BackendKind::Cpu);
    assert!(session.import(&files, None).unwrap().is_empty());
    assert_eq!(export(&mut session), theirs_exported(), "import → export");

    // fine-tuned, saved (the CLI's checkpoint folder, the page's autosave), restored
    let lang = Language::English;
    block_on(session.begin(StageKind::Sft, StageData { bytes: None, lang }, options(StageKind::Sft))).unwrap();
    finish(&mut session);
    assert_eq!(export(&mut session), theirs_exported(), "after SFT");
    let snapshot = block_on(session.snapshot()).unwrap().unwrap();
    assert_eq!(parse(&snapshot, GENERATION_CONFIG), theirs_exported(), "the snapshot");
    let mut restored = Session::new(None, BackendKind::Cpu);
    restored.restore(&from_zip(&to_zip(&snapshot).unwrap()).unwrap()).unwrap();
    assert_eq!(export(&mut restored), theirs_exported(), "restored from the snapshot");

    // a preference stage trains a new model built from the fine-tuned one: it keeps it too
    let rankings: Vec<Ranking> = instruction_set(lang, Split::Train, 4)
        .into_iter()
        .map(|c| Ranking {
            prompt: c[..1].to_vec(),
            answers: vec![format!("{}!", c[1].content), "no".into()],
            ranks: vec![1, 2],
            verdict: Verdict::Ranked,
            annotator: None,
        })
        .collect();
    let data = rankings_jsonl(&rankings).into_bytes();
    let data = StageData { bytes: Some(&data), lang };
    block_on(restored.begin(StageKind::Dpo, data, options(StageKind::Dpo))).unwrap();
    assert_eq!(export(&mut restored), theirs_exported(), "after DPO");

    // a new model is Kiln's own again
    let (cfg, train) = (tiny(restored.tokenizer.as_ref().unwrap().vocab_size()), options(StageKind::Pretrain));
    restored.set_corpus(default_corpus(lang, 20, 1));
    restored.create_model(cfg, train).unwrap();
    assert_eq!(export(&mut restored), kiln::checkpoint::kiln_generation_config(), "a new model");
}

/// The folder with `generation_config` as its generation_config.json, loaded.
fn load_with(files: &Files, generation_config: &[u8]) -> LoadedModel {
    let mut files = files.clone();
    files.insert(GENERATION_CONFIG.into(), generation_config.to_vec());
    load_model(&files).expect("a generation_config.json never breaks an import")
}

#[test]
fn a_malformed_generation_config_never_breaks_an_import() {
    let (files, tok) = folder();
    let vocab = tok.vocab_size();
    let nested = format!("{{\"x\": {}{}}}", "[".repeat(300), "]".repeat(300));
    let left_out: [(&str, &[u8]); 4] = [
        ("not JSON", b"{\"eos_token_id\": [2, 7"),
        ("a list", b"[2, 7]"),
        ("deeper than JSON parsing goes", nested.as_bytes()),
        ("not UTF-8", b"{\"temperature\": \xff}"),
    ];
    for (what, bytes) in left_out {
        let loaded = load_with(&files, bytes);
        println!("{what}: {:?}", loaded.notes);
        assert!(loaded.generation_config.is_none(), "{what}");
        assert_eq!(loaded.notes.len(), 1, "{what}");
        assert!(loaded.notes[0].contains(GENERATION_CONFIG), "{what}: {}", loaded.notes[0]);
        // and the export gets Kiln's own
        let cfg = loaded.config;
        let out = kiln::checkpoint::model_files_keeping(
            &cfg,
            &loaded.layout,
            &loaded.tokenizer,
            &loaded.params,
            loaded.generation_config.as_ref(),
        )
        .unwrap();
        assert_eq!(parse(&out, GENERATION_CONFIG), kiln::checkpoint::kiln_generation_config(), "{what}");
    }
    // a bad token-id field is dropped with a note; the rest is kept as it is
    let bad_ids = [json!("<|end|>"), json!(2.5), json!(-1), json!(vocab), json!([2, vocab + 5]), json!({"id": 2})];
    for bad in bad_ids {
        let given = json!({"eos_token_id": bad, "pad_token_id": 0, "temperature": "hot", "top_k": [1, 2]});
        let loaded = load_with(&files, &serde_json::to_vec(&given).unwrap());
        println!("eos_token_id {bad}: {:?}", loaded.notes);
        assert_eq!(loaded.notes.len(), 1, "{bad}");
        assert!(loaded.notes[0].contains("eos_token_id"), "{}", loaded.notes[0]);
        // fields Kiln does not know, or knows but never reads, are kept opaque, whatever they hold
        assert_eq!(loaded.generation_config, Some(json!({"pad_token_id": 0, "temperature": "hot", "top_k": [1, 2]})));
        let written = kiln::checkpoint::generation_config(loaded.generation_config.as_ref());
        assert_eq!(written["eos_token_id"], json!(TokenRoles::kiln().stop), "{bad}: Kiln's stops are written");
    }
    // larger than any generation config: refused by size before it is read, as every
    // checkpoint file over its cap is
    let mut big = files.clone();
    big.insert(GENERATION_CONFIG.into(), format!("{{\"x\": \"{}\"}}", "a".repeat(2 << 20)).into_bytes());
    let Err(err) = from_zip(&to_zip(&big).unwrap()) else { panic!("an oversized generation_config.json is read") };
    assert!(err.to_string().contains(GENERATION_CONFIG), "{err}");
}

/// A folder whose tokenizer lacks Kiln's special tokens (as transformers saves a GPT-2):
/// Kiln's tokenizer with the eight removed and every id moved down by 8.
fn foreign_folder(generation_config: &Value) -> Files {
    let kiln_tok = tokenizer();
    let mut tj: Value = serde_json::from_str(&kiln_tok.to_json().unwrap()).unwrap();
    let vocab = tj["model"]["vocab"].as_object_mut().unwrap();
    for s in SPECIAL_TOKENS {
        vocab.remove(s);
    }
    for id in vocab.values_mut() {
        *id = (id.as_u64().unwrap() - SPECIAL_TOKENS.len() as u64).into();
    }
    tj["added_tokens"] = json!([]);
    tj["post_processor"] = Value::Null;
    let cfg = tiny(kiln_tok.vocab_size() - SPECIAL_TOKENS.len());
    let layout = ParamLayout::new(&cfg);
    let mut files = model_files(&cfg, &layout, &kiln_tok, &layout.init(&cfg, 2)).unwrap();
    files.insert("tokenizer.json".into(), serde_json::to_vec(&tj).unwrap());
    files.insert(GENERATION_CONFIG.into(), serde_json::to_vec(generation_config).unwrap());
    files
}

#[test]
fn a_foreign_folders_token_ids_move_with_its_vocabulary() {
    let n = SPECIAL_TOKENS.len() as u64;
    let given = json!({
        "bos_token_id": 100,
        "eos_token_id": [100, 101],
        "suppress_tokens": [5],
        "decoder_start_token_id": null,
        "bad_words_ids": [[3, 4]],
        "temperature": 0.7
    });
    let loaded = load_model(&foreign_folder(&given)).unwrap();
    println!("notes: {:?}", loaded.notes);
    assert!(loaded.notes.iter().any(|n| n.contains("bad_words_ids")), "{:?}", loaded.notes);
    let kept = loaded.generation_config.clone().expect("kept");
    assert_eq!(
        kept,
        json!({
            "bos_token_id": 100 + n,
            "eos_token_id": [100 + n, 101 + n],
            "suppress_tokens": [5 + n],
            "decoder_start_token_id": null,
            "temperature": 0.7
        })
    );
    // the same tokens, by name, as before the move
    assert_eq!(loaded.tokenizer.token_text(100 + n as u32), tokenizer().token_text(100 + n as u32));
    let written = kiln::checkpoint::generation_config(Some(&kept));
    assert_eq!(written["eos_token_id"], json!([100 + n, 101 + n, 2, 7]));
    assert_eq!(written["pad_token_id"], json!(0));
}
