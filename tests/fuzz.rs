//! Fuzzing of the parsers that read strangers' files: checkpoint archives and folders,
//! tokenizer.json, and JSONL (instruction data, rankings). Each property starts from a
//! valid file, mutates it (bytes flipped, cut, inserted, copied within; numbers in JSON
//! replaced by extreme ones) and requires an answer, Ok or a KilnError, never a panic: in
//! the browser a panic is a wasm trap that ends the worker.
//!
//! `cargo test --test fuzz` runs 2,000 cases per property (about a second); `PROPTEST_CASES=N`
//! runs N each (the closing notes say how many were run, for how long).

use std::collections::HashMap;
use std::io::Write;
use std::sync::OnceLock;

use kiln::checkpoint::{from_zip, load_model, model_files, Files};
use kiln::data::corpus::{default_corpus, Language};
use kiln::data::documents;
use kiln::data::jsonl::read_conversations;
use kiln::data::preference::read_rankings;
use kiln::model::{GptConfig, ParamLayout};
use kiln::tokenizer::{Tokenizer, TokenizerKind};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
    /// copy `len` bytes from one place over another (repeats a header, a number …)
    Copy(usize, usize, usize),
    /// replace the digits at a place with one of the numbers that break size arithmetic
    Number(usize, usize),
}

const NUMBERS: [&str; 10] =
    ["0", "-1", "4294967295", "4294967296", "18446744073709551615", "1e308", "NaN", "65536", "1e-45", "99999999999"];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Flip(at, byte)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..12)).prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<usize>(), any::<usize>(), 1..64usize).prop_map(|(from, to, len)| Mutation::Copy(from, to, len)),
        (any::<usize>(), 0..NUMBERS.len()).prop_map(|(at, n)| Mutation::Number(at, n)),
    ]
}

fn mutate(seed: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for m in mutations {
        if data.is_empty() {
            break;
        }
        let n = data.len();
        match m {
            Mutation::Flip(at, byte) => data[at % n] ^= byte | 1,
            Mutation::Cut(at) => data.truncate(at % n),
            Mutation::Insert(at, bytes) => {
                data.splice(at % n..at % n, bytes.iter().copied());
            }
            Mutation::Copy(from, to, len) => {
                let (from, to) = (from % n, to % n);
                let len = (*len).min(n - from).min(n - to);
                data.copy_within(from..from + len, to);
            }
            Mutation::Number(at, k) => {
                // the run of digits at or after `at`, if any
                if let Some(start) = (at % n..n).find(|&i| data[i].is_ascii_digit()) {
                    let end = (start..n).find(|&i| !data[i].is_ascii_digit()).unwrap_or(n);
                    data.splice(start..end, NUMBERS[*k].bytes());
                }
            }
        }
    }
    data
}

/// A tiny model's folder with each tokenizer kind, and its files as stored and deflated zips.
struct Seeds {
    folders: Vec<Files>,
    zips: Vec<Vec<u8>>,
}

fn seeds() -> &'static Seeds {
    static SEEDS: OnceLock<Seeds> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let text = default_corpus(Language::English, 30, 2);
        let mut folders = Vec::new();
        for (kind, vocab) in [(TokenizerKind::Char, None), (TokenizerKind::Bpe, Some(300))] {
            let tok = Tokenizer::train(&documents(&text), kind, vocab).unwrap();
            let cfg = GptConfig::gpt2(tok.vocab_size(), 16, 1, 2, 16);
            let layout = ParamLayout::new(&cfg);
            folders.push(model_files(&cfg, &layout, &tok, &layout.init(&cfg, 3)).unwrap());
        }
        let mut zips = Vec::new();
        for files in &folders {
            for method in [zip::CompressionMethod::Stored, zip::CompressionMethod::Deflated] {
                let mut names: Vec<&String> = files.keys().collect();
                names.sort();
                let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
                let options = zip::write::SimpleFileOptions::default().compression_method(method);
                for name in names {
                    zip.start_file(name.as_str(), options).unwrap();
                    zip.write_all(&files[name]).unwrap();
                }
                zips.push(zip.finish().unwrap().into_inner());
            }
        }
        Seeds { folders, zips }
    })
}

/// PROPTEST_CASES when set, else `cases`.
fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig { failure_persistence: None, ..ProptestConfig::default() };
    if std::env::var("PROPTEST_CASES").is_err() {
        config.cases = cases;
    }
    config
}

const SFT_SEED: &str = r#"{"prompt": "What is 2 + 2?", "completion": "4"}
{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
{"prompt": [{"role": "user", "content": "Name a colour"}], "completion": [{"role": "assistant", "content": "Blue"}]}
{"instruction": "Say yes", "output": "yes"}
"#;

const RANKINGS_SEED: &str = r#"{"prompt": "Tell a story", "answers": ["Once", "A fox", "The end"], "ranks": [2, 1, 3]}
{"prompt": "Hi", "chosen": "Hello", "rejected": "Go away"}
{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello"}], "rejected": [{"role": "assistant", "content": "No"}]}
"#;

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn checkpoint_archives_never_panic(seed in 0..4usize, mutations in prop::collection::vec(mutation(), 1..6)) {
        let zip = mutate(&seeds().zips[seed], &mutations);
        let _ = from_zip(&zip).and_then(|files| load_model(&files));
    }

    #[test]
    fn checkpoint_files_never_panic(
        seed in 0..2usize,
        file in prop::sample::select(vec!["config.json", "tokenizer.json", "model.safetensors"]),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut files: HashMap<String, Vec<u8>> = seeds().folders[seed].clone();
        let mutated = mutate(&files[file], &mutations);
        files.insert(file.to_string(), mutated);
        let _ = load_model(&files);
    }

    #[test]
    fn tokenizer_json_never_panics(seed in 0..2usize, mutations in prop::collection::vec(mutation(), 1..6)) {
        let json = mutate(&seeds().folders[seed]["tokenizer.json"], &mutations);
        if let Ok(text) = std::str::from_utf8(&json) {
            if let Ok((tok, _)) = Tokenizer::from_json_adding_specials(text) {
                // a tokenizer that loads must also encode and decode without a panic
                if let Ok(ids) = tok.encode("Once upon a time, <|eos|> 一只狐狸") {
                    let _ = tok.decode(&ids);
                }
            }
        }
    }

    #[test]
    fn jsonl_never_panics(rankings in any::<bool>(), mutations in prop::collection::vec(mutation(), 1..8)) {
        let seed = if rankings { RANKINGS_SEED } else { SFT_SEED };
        let bytes = mutate(seed.as_bytes(), &mutations);
        let _ = read_conversations(&bytes);
        let _ = read_rankings(&bytes);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = from_zip(&bytes);
        let _ = read_conversations(&bytes);
        let _ = read_rankings(&bytes);
        let _ = kiln::data::text_from_bytes(&bytes);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = Tokenizer::from_json_adding_specials(text);
        }
    }
}
