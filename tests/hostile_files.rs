//! Model files from strangers: each hostile case is refused with a message that names the
//! problem, without a panic, and without allocating more than the model it claims to be
//! needs. The allocations are counted per thread by the allocator below, so tests running
//! side by side do not disturb each other's figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;

use kiln::checkpoint::{from_zip, load_model, model_files, Files};
use kiln::data::corpus::{default_corpus, Language};
use kiln::data::documents;
use kiln::error::KilnError;
use kiln::model::{GptConfig, ParamLayout};
use kiln::rng::Rng;
use kiln::sample::{sample_logits, SampleConfig};
use kiln::tokenizer::{TokenRoles, Tokenizer, TokenizerKind};

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|live| {
            live.set(live.get() + layout.size());
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
        });
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(layout.size())));
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most bytes this thread held at once while `f` ran, beyond what it held before.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, PEAK.with(Cell::get) - base)
}

const MIB: usize = 1 << 20;

/// A tiny model's folder: 2 layers × 32 wide, a character vocabulary of the stories.
fn model() -> (GptConfig, Files) {
    let text = default_corpus(Language::English, 40, 3);
    let tok = Tokenizer::train(&documents(&text), TokenizerKind::Char, None).unwrap();
    let cfg = GptConfig::gpt2(tok.vocab_size(), 32, 2, 2, 32);
    let layout = ParamLayout::new(&cfg);
    let files = model_files(&cfg, &layout, &tok, &layout.init(&cfg, 1)).unwrap();
    (cfg, files)
}

/// Imports `zip` as the page does; the error's message must contain `needle`, and the
/// attempt may hold at most `budget` bytes at once.
fn refused(case: &str, zip: &[u8], needle: &str, budget: usize) {
    let (result, peak) = peak_during(|| from_zip(zip).and_then(|files| load_model(&files)));
    let err = match result {
        Ok(_) => panic!("{case}: imported, should be refused (expected {needle:?})"),
        Err(e) => e.to_string(),
    };
    println!("{case}: {} bytes, peak {:.2} MiB: {err}", zip.len(), peak as f64 / MIB as f64);
    assert!(err.contains(needle), "{case}: {err:?} should mention {needle:?}");
    assert!(peak <= budget, "{case}: held {peak} bytes at once, over {budget}");
}

/// A .zip of (name, bytes) entries, stored or deflated, in this order.
fn zip_of(entries: &[(&str, &[u8])], deflate: bool) -> Vec<u8> {
    let method = if deflate { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
    let options = zip::write::SimpleFileOptions::default().compression_method(method).large_file(true);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Rewrites the uncompressed size every header of `zip` declares for entry `name` (the
/// local header and the central directory's), as a hostile archive would.
fn declare_size(zip: &mut [u8], name: &str, size: u32) {
    let mut patched = 0;
    for i in 0..zip.len().saturating_sub(46) {
        let (local, central) = (zip[i..].starts_with(b"PK\x03\x04"), zip[i..].starts_with(b"PK\x01\x02"));
        // (where the name starts, where its length is, where the uncompressed size is)
        let (name_at, len_at, size_at) = match (local, central) {
            (true, _) => (30, 26, 22),
            (_, true) => (46, 28, 24),
            _ => continue,
        };
        let name_len = u16::from_le_bytes([zip[i + len_at], zip[i + len_at + 1]]) as usize;
        if &zip[i + name_at..i + name_at + name_len] == name.as_bytes() {
            zip[i + size_at..i + size_at + 4].copy_from_slice(&size.to_le_bytes());
            patched += 1;
        }
    }
    assert_eq!(patched, 2, "both headers of {name}");
}

fn config_json(fields: &str) -> Vec<u8> {
    format!(r#"{{"model_type": "gpt2", {fields}}}"#).into_bytes()
}

#[test]
fn an_archive_that_lies_about_its_sizes_is_refused_before_allocating() {
    // 200 bytes that declare a 2 GiB config.json
    let mut zip = zip_of(&[("config.json", br#"{"model_type":"gpt2"}"#)], false);
    declare_size(&mut zip, "config.json", u32::MAX / 2 + 1);
    assert!(zip.len() <= 200, "{} bytes", zip.len());
    refused("a 200-byte zip declaring 2 GiB", &zip, "config.json declares 2048.0 MiB, over the 64.0 MiB", MIB);

    // a model.safetensors declaring 2 GiB beside the tiny model's config
    let (_, files) = model();
    let mut zip = zip_of(
        &[
            ("config.json", &files["config.json"]),
            ("tokenizer.json", &files["tokenizer.json"]),
            ("model.safetensors", b"x"),
        ],
        false,
    );
    declare_size(&mut zip, "model.safetensors", u32::MAX / 2 + 1);
    refused("weights declaring 2 GiB", &zip, "model.safetensors declares 2048.0 MiB, over the", 2 * MIB);
}

#[test]
fn a_deflate_bomb_is_refused_before_it_is_inflated() {
    let (cfg, files) = model();
    // 256 MiB of zeros deflate to a quarter of a MiB
    let bomb = {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        for name in ["config.json", "tokenizer.json"] {
            zip.start_file(name, options).unwrap();
            zip.write_all(&files[name]).unwrap();
        }
        zip.start_file("model.safetensors", options).unwrap();
        let zeros = vec![0u8; MIB];
        for _ in 0..256 {
            zip.write_all(&zeros).unwrap();
        }
        zip.finish().unwrap().into_inner()
    };
    assert!(bomb.len() < MIB, "{} bytes", bomb.len());
    let model_bytes = cfg.num_params() * 4;
    // honest about its size: refused by the declaration, nothing inflated
    refused("a deflate bomb (256 MiB of zeros)", &bomb, "model.safetensors declares 256.0 MiB", 2 * MIB);
    // lying about its size: inflation stops one byte past the declaration
    let mut lying = bomb.clone();
    declare_size(&mut lying, "model.safetensors", model_bytes as u32);
    refused(
        "a deflate bomb declaring the model's size",
        &lying,
        "larger than its declared uncompressed size",
        2 * MIB + 2 * model_bytes,
    );
}

#[test]
fn configs_past_the_limits_are_refused_by_their_size() {
    let (_, files) = model();
    let with_config = |config: Vec<u8>| {
        let mut zip_files: Vec<(&str, &[u8])> = vec![("config.json", &config)];
        zip_files.push(("tokenizer.json", &files["tokenizer.json"]));
        zip_files.push(("model.safetensors", &files["model.safetensors"]));
        zip_of(&zip_files, true)
    };
    let deep = config_json(r#""vocab_size": 100, "n_positions": 1024, "n_layer": 256, "n_head": 128, "n_embd": 16384"#);
    assert!(deep.len() < 1024);
    refused(
        "a 1 KB config with 256 layers × 16384 width",
        &with_config(deep),
        "far beyond what a browser can train",
        MIB,
    );
    // every size within its bound, the total is not: 1 layer would be 3.2 billion parameters
    let wide =
        config_json(r#""vocab_size": 262144, "n_positions": 8192, "n_layer": 128, "n_head": 64, "n_embd": 8192"#);
    refused("128 layers × 8192 wide", &with_config(wide), "billion parameters; Kiln trains at most 256 million", MIB);
    // products of heads and positions past 32 bits (16384 × 16384 × 16384)
    let heads =
        config_json(r#""vocab_size": 100, "n_positions": 16384, "n_layer": 1, "n_head": 16384, "n_embd": 16384"#);
    refused("heads × positions past 32 bits", &with_config(heads), "far beyond", MIB);
}

#[test]
fn tensors_that_break_their_promises_are_refused() {
    let (cfg, files) = model();
    let zip_with = |name: &str, bytes: &[u8]| {
        let mut entries: Vec<(&str, &[u8])> =
            files.iter().filter(|(n, _)| *n != name).map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        entries.sort();
        entries.push((name, bytes));
        zip_of(&entries, true)
    };
    let budget = 8 * MIB;
    // shorter than the header declares: 100 bytes cut off the end
    let st = &files["model.safetensors"];
    refused("tensors shorter than declared", &zip_with("model.safetensors", &st[..st.len() - 100]), "corrupt", budget);
    // a third of the bytes the config's model needs: short even for bf16 weights
    refused(
        "a safetensors file a third of the model's size",
        &zip_with("model.safetensors", &st[..st.len() / 3]),
        &format!("needs at least {} for its weights alone", cfg.num_params() * 2),
        budget,
    );
    // NaN and 1e30 weights
    let tok = Tokenizer::from_json(std::str::from_utf8(&files["tokenizer.json"]).unwrap()).unwrap();
    let layout = ParamLayout::new(&cfg);
    for (value, needle) in [(f32::NAN, "holds NaN at element 5"), (1e30, "holds 1e30 at element 5, past the ±1e5")] {
        let mut params = layout.init(&cfg, 1);
        params[layout.get("h.0.attn.c_attn.weight").unwrap().offset + 5] = value;
        let bad = model_files(&cfg, &layout, &tok, &params).unwrap();
        refused(
            &format!("a weight of {value}"),
            &zip_with("model.safetensors", &bad["model.safetensors"]),
            needle,
            budget,
        );
    }
    // two entries named model.safetensors in different folders
    let mut entries: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    entries.sort();
    entries.push(("copy/model.safetensors", st));
    refused("duplicate entries", &zip_of(&entries, true), "holds model.safetensors twice", budget);
}

#[test]
fn hostile_tokenizers_are_refused() {
    let (_, files) = model();
    let tokenizer: serde_json::Value = serde_json::from_slice(&files["tokenizer.json"]).unwrap();
    let zip_with = |json: &serde_json::Value| {
        let bytes = serde_json::to_vec(json).unwrap();
        let mut entries: Vec<(&str, &[u8])> =
            files.iter().filter(|(n, _)| *n != "tokenizer.json").map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        entries.sort();
        entries.push(("tokenizer.json", &bytes));
        zip_of(&entries, true)
    };
    // an id far past the vocabulary (the embedding has no such row)
    let mut past = tokenizer.clone();
    let token = past["model"]["vocab"].as_object().unwrap().keys().next_back().unwrap().clone();
    past["model"]["vocab"][&token] = 999_999.into();
    refused("a token id past the vocabulary", &zip_with(&past), "id 999999, past its", 4 * MIB);
    // "<|eos|>" typed as text mapped to the control id by a non-special added token
    let mut eos = tokenizer.clone();
    for added in eos["added_tokens"].as_array_mut().unwrap() {
        if added["content"] == "<|eos|>" {
            added["special"] = false.into();
        }
    }
    refused(
        "<|eos|> typed as text maps to the control id",
        &zip_with(&eos),
        "turns the text <|eos|> into the control token <|eos|>",
        4 * MIB,
    );
    // another kind of tokenizer (WordPiece) and a normalizer
    let mut other = tokenizer.clone();
    other["model"]["type"] = "WordPiece".into();
    refused("a WordPiece tokenizer", &zip_with(&other), "is not a BPE model", 4 * MIB);
    let mut normalized = tokenizer.clone();
    normalized["normalizer"] = serde_json::json!({"type": "Lowercase"});
    refused("a normalizer", &zip_with(&normalized), "has a normalizer", 4 * MIB);
}

#[test]
fn huge_finite_logits_do_not_crash_sampling() {
    let v = 50;
    let cfg = SampleConfig { temperature: 0.8, ..SampleConfig::default() };
    let mut rng = Rng::new(1);
    let never = TokenRoles::kiln().never;
    let mut logits = vec![f32::NAN; v];
    let err = sample_logits(&logits, &cfg, &never, &mut rng).unwrap_err();
    assert!(matches!(err, KilnError::Model(_)), "{err}");
    println!("all-NaN logits: {err}");
    logits[20] = f32::INFINITY;
    assert!(sample_logits(&logits, &SampleConfig { temperature: 0.0, ..cfg.clone() }, &never, &mut rng).is_err());
    logits[30] = 3e38;
    assert_eq!(sample_logits(&logits, &cfg, &never, &mut rng).unwrap(), 30, "the one finite logit");
    assert_eq!(sample_logits(&logits, &SampleConfig { temperature: 0.0, ..cfg }, &never, &mut rng).unwrap(), 30);
}
