//! Tokenizers trained on text: round trips in English and Chinese, fixed special ids,
//! tokenizer.json round trip, and clear errors for vocabularies the text cannot support.

use kiln::data::corpus::{default_corpus, Language};
use kiln::data::documents;
use kiln::error::KilnError;
use kiln::tokenizer::{Tokenizer, TokenizerKind, BOS, EOS, MIN_BPE_VOCAB, PAD};

fn corpus(language: Language) -> String {
    default_corpus(language, 300, 3)
}

#[test]
fn byte_level_bpe_round_trips_english_and_chinese() {
    for language in [Language::English, Language::Chinese] {
        let text = corpus(language);
        let tok = Tokenizer::train(&documents(&text), TokenizerKind::Bpe, Some(400)).unwrap();
        assert_eq!(tok.vocab_size(), 400);
        let sample = documents(&text)[0];
        let ids = tok.encode(sample).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), sample);
        // compression: BPE merges make far fewer tokens than bytes
        println!("{language:?}: {} bytes -> {} tokens", sample.len(), ids.len());
        assert!(ids.len() * 2 < sample.len());
        // text it never saw still round-trips, byte by byte
        let unseen = "Zebra 斑马 🦓 naïve — ok?";
        assert_eq!(tok.decode(&tok.encode(unseen).unwrap()).unwrap(), unseen);
    }
}

#[test]
fn token_text_names_special_tokens_and_shows_the_bytes_of_part_characters() {
    let tok = Tokenizer::train(&documents(&corpus(Language::Chinese)), TokenizerKind::Bpe, Some(300)).unwrap();
    assert_eq!(tok.token_text(BOS), "<|bos|>");
    // a rare character falls apart into byte tokens: each shows its bytes, and together
    // they are the character's UTF-8
    let ids = tok.encode("龘").unwrap();
    let shown: Vec<String> = ids.iter().map(|&id| tok.token_text(id)).collect();
    println!("龘 -> {ids:?} -> {shown:?}");
    assert!(shown.iter().all(|t| !t.contains('\u{FFFD}')), "{shown:?}");
    let hex: String = "龘".bytes().map(|b| format!("<0x{b:02X}>")).collect();
    assert_eq!(shown.concat(), hex);
    // a story's tokens, shown one by one, hold its bytes exactly: whole characters as text
    let story = documents(&corpus(Language::Chinese))[0].to_string();
    let mut bytes = Vec::new();
    for id in tok.encode(&story).unwrap() {
        let text = tok.token_text(id);
        let mut rest = text.as_str();
        while !rest.is_empty() {
            match rest.strip_prefix("<0x").filter(|r| r.get(2..3) == Some(">")) {
                Some(r) => {
                    bytes.push(u8::from_str_radix(&r[..2], 16).unwrap());
                    rest = &r[3..];
                }
                None => {
                    let c = rest.chars().next().unwrap();
                    bytes.extend(c.to_string().as_bytes());
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
    }
    assert_eq!(String::from_utf8(bytes).unwrap(), story);
}

#[test]
fn character_vocabulary_round_trips_and_caps() {
    let text = corpus(Language::Chinese);
    let tok = Tokenizer::train(&documents(&text), TokenizerKind::Char, None).unwrap();
    let sample = documents(&text)[1];
    let ids = tok.encode(sample).unwrap();
    assert_eq!(ids.len(), sample.chars().count());
    assert_eq!(tok.decode(&ids).unwrap(), sample);
    // capped: rare characters become <|unk|>
    let capped = Tokenizer::train(&documents(&text), TokenizerKind::Char, Some(40)).unwrap();
    assert_eq!(capped.vocab_size(), 40);
    assert!(capped.encode(sample).unwrap().contains(&kiln::tokenizer::UNK));
}

#[test]
fn special_tokens_have_fixed_ids_and_text_cannot_inject_them() {
    let text = corpus(Language::English);
    let tok = Tokenizer::train(&documents(&text), TokenizerKind::Bpe, Some(300)).unwrap();
    let ids = tok.encode("a <|eos|> b <|user|>").unwrap();
    assert!(
        !ids.contains(&EOS) && !ids.contains(&kiln::tokenizer::USER),
        "special strings in text must stay text: {ids:?}"
    );
    assert_eq!(tok.decode(&[BOS, PAD]).unwrap(), "");
}

#[test]
fn tokenizer_json_round_trips() {
    let text = corpus(Language::English);
    for kind in [TokenizerKind::Bpe, TokenizerKind::Char] {
        let size = if kind == TokenizerKind::Bpe { Some(300) } else { None };
        let tok = Tokenizer::train(&documents(&text), kind, size).unwrap();
        let back = Tokenizer::from_json(&tok.to_json().unwrap()).unwrap();
        assert_eq!(back.kind(), kind);
        assert_eq!(back.vocab_size(), tok.vocab_size());
        let s = documents(&text)[2];
        assert_eq!(back.encode(s).unwrap(), tok.encode(s).unwrap());
    }
    assert!(matches!(Tokenizer::from_json("{not json"), Err(KilnError::Tokenizer(_))));
}

#[test]
fn vocabularies_the_text_cannot_support_are_refused_clearly() {
    let docs = ["abc abc abd"];
    let err = Tokenizer::train(&docs, TokenizerKind::Bpe, Some(4000)).err().unwrap();
    println!("{err}");
    assert!(err.to_string().contains("supports only"), "{err}");
    let err = Tokenizer::train(&docs, TokenizerKind::Bpe, Some(100)).err().unwrap();
    assert!(err.to_string().contains(&MIN_BPE_VOCAB.to_string()), "{err}");
    let err = Tokenizer::train(&docs, TokenizerKind::Char, Some(50)).err().unwrap();
    assert!(err.to_string().contains("distinct characters"), "{err}");
    let err = Tokenizer::train(&[" ", ""], TokenizerKind::Bpe, Some(300)).err().unwrap();
    assert!(err.to_string().contains("empty"), "{err}");
    let err = Tokenizer::train(&docs, TokenizerKind::Bpe, Some(9000)).err().unwrap();
    assert!(err.to_string().contains("8192"), "{err}");
}

/// A tokenizer.json without Kiln's special tokens (a Hugging Face GPT-2's) gets them at
/// ids 0..8, and keeps them there through its own tokenizer.json: a model imported from
/// elsewhere, saved (export, autosave) and loaded again has the same ids.
#[test]
fn special_tokens_added_to_a_foreign_tokenizer_keep_their_ids_after_saving() {
    let kiln = Tokenizer::train(&documents(&corpus(Language::English)), TokenizerKind::Bpe, Some(300)).unwrap();
    // the same vocabulary as GPT-2 ships one: no Kiln specials, ids from 0, one added token
    let mut foreign: serde_json::Value = serde_json::from_str(&kiln.to_json().unwrap()).unwrap();
    let vocab = foreign["model"]["vocab"].as_object_mut().unwrap();
    vocab.retain(|token, _| !token.starts_with("<|"));
    vocab.values_mut().for_each(|id| *id = (id.as_u64().unwrap() - 8).into());
    vocab.insert("<|endoftext|>".into(), 292.into());
    foreign["added_tokens"] = serde_json::json!([{"id": 292, "content": "<|endoftext|>", "single_word": false,
        "lstrip": false, "rstrip": false, "normalized": false, "special": true}]);
    foreign["post_processor"] = serde_json::Value::Null;
    let (imported, added) = Tokenizer::from_json_adding_specials(&foreign.to_string()).unwrap();
    assert_eq!((added, imported.vocab_size()), (8, 301));
    let saved = imported.to_json().unwrap();
    let again = Tokenizer::from_json(&saved).expect("Kiln reads its own save of an imported tokenizer");
    let ids: serde_json::Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(ids["model"]["vocab"]["<|pad|>"], 0);
    assert_eq!(ids["model"]["vocab"]["<|end|>"], 7);
    let text = "Once upon a time";
    assert_eq!(again.encode(text).unwrap(), imported.encode(text).unwrap());
    assert!(imported.encode(text).unwrap().iter().all(|&id| id >= 8), "the old ids moved up by 8");
    // its own control token is shown by name and known as special (the page's views do not
    // offer it as text to append); an ordinary token is not
    let eot = ids["model"]["vocab"]["<|endoftext|>"].as_u64().unwrap() as u32;
    assert_eq!((again.token_text(eot).as_str(), again.is_special(eot)), ("<|endoftext|>", true));
    assert_eq!(
        (again.token_text(kiln::tokenizer::EOS).as_str(), again.is_special(kiln::tokenizer::EOS)),
        ("<|eos|>", true)
    );
    let once = again.encode("Once").unwrap()[0];
    assert!(!again.is_special(once));
}

/// An imported model's tokenizer.json (a small Llama-3-shaped one from the chat-template
/// fixtures: Llama-3's split regex and ByteLevel, its 11 control tokens after the merges).
fn llama3_json() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/chat_templates/llama-3.3-instruct/tokenizer.json"
    ))
    .unwrap()
}

#[test]
fn a_pretrained_tokenizer_stays_exactly_as_it_came() {
    let json = llama3_json();
    let file: serde_json::Value = serde_json::from_str(&json).unwrap();
    let tok = Tokenizer::from_pretrained(&json).unwrap();
    assert!(tok.is_pretrained());
    let in_file = file["model"]["vocab"].as_object().unwrap().len() + file["added_tokens"].as_array().unwrap().len();
    assert_eq!(tok.vocab_size(), in_file, "nothing added");
    assert_eq!(tok.token_to_id("<|bos|>"), None, "no Kiln specials");
    assert!((0..8).all(|id| !tok.is_special(id)), "ids 0..8 are ordinary tokens here");
    let eot = tok.token_to_id("<|eot_id|>").unwrap();
    assert_eq!(tok.id_to_token(eot).as_deref(), Some("<|eot_id|>"));
    assert!(tok.is_special(eot));
    let added = tok.added_tokens();
    assert_eq!(added.len(), 11);
    assert_eq!((added[9].content.as_str(), added[9].id, added[9].special), ("<|eot_id|>", eot, true));
    // its control tokens are matched in text, as transformers' tokenizer(text, add_special_tokens=False)
    // does; no <|begin_of_text|> is added (the post-processor adds it only when asked)
    let (ids, offsets) = tok.encode_with_offsets("Hello<|eot_id|>").unwrap();
    assert_eq!(*ids.last().unwrap(), eot);
    assert_eq!(*offsets.last().unwrap(), (5, 15));
    assert_ne!(ids[0], tok.token_to_id("<|begin_of_text|>").unwrap());
    assert_eq!(tok.control_token_in("a <|start_header_id|> b"), Some("<|start_header_id|>".into()));
    assert_eq!(tok.control_token_in("plain text"), None);
    // saved and read again, it encodes the same
    let again = Tokenizer::from_pretrained(&tok.to_json().unwrap()).unwrap();
    let text = "你好！ The capital of France is Paris.<|eot_id|>";
    assert_eq!(again.encode(text).unwrap(), tok.encode(text).unwrap());
    assert_eq!(tok.decode(&tok.encode("naïve café 12345").unwrap()).unwrap(), "naïve café 12345");
    // Kiln's own reader still wants Kiln's specials
    assert!(Tokenizer::from_json(&json).is_err());
}

#[test]
fn a_pretrained_tokenizer_drops_saved_truncation_and_padding() {
    let mut file: serde_json::Value = serde_json::from_str(&llama3_json()).unwrap();
    file["truncation"] =
        serde_json::json!({"direction": "Right", "max_length": 3, "strategy": "LongestFirst", "stride": 0});
    file["padding"] = serde_json::json!({"strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": null,
        "pad_id": 0, "pad_type_id": 0, "pad_token": "!"});
    let tok = Tokenizer::from_pretrained(&file.to_string()).unwrap();
    let ids = tok.encode("The quick brown fox jumps over the lazy dog.").unwrap();
    assert!(ids.len() > 3 && ids.len() < 64, "{ids:?}");
}

#[test]
fn hostile_pretrained_tokenizers_are_refused_clearly() {
    let base: serde_json::Value = serde_json::from_str(&llama3_json()).unwrap();
    let refused = |edit: &dyn Fn(&mut serde_json::Value), want: &str| {
        let mut file = base.clone();
        edit(&mut file);
        let err = Tokenizer::from_pretrained(&file.to_string()).err().expect(want);
        assert!(matches!(err, KilnError::Tokenizer(ref m) if m.contains(want)), "{err}");
    };
    refused(&|f| f["model"]["vocab"]["far"] = 262_144.into(), "past the 262144 tokens");
    refused(&|f| f["added_tokens"][0]["id"] = 262_200.into(), "past the 262144 tokens");
    refused(&|f| f["model"]["vocab"]["again"] = 5.into(), "gives id 5 to both");
    refused(&|f| f["added_tokens"][1]["id"] = 0.into(), "gives id 0 to both");
    refused(&|f| f["model"]["type"] = "WordPiece".into(), "WordPiece model");
    refused(
        &|f| f["post_processor"] = serde_json::json!({"type": "RobertaProcessing"}),
        "RobertaProcessing post-processor",
    );
    refused(
        &|f| f["post_processor"] = serde_json::json!({"type": "Sequence", "processors": [{"type": "BertProcessing"}]}),
        "BertProcessing post-processor",
    );
    refused(&|f| f["model"]["vocab"]["x"] = "7".into(), "not a whole number");
    let huge = format!("{}{}", " ".repeat(kiln::tokenizer::MAX_PRETRAINED_JSON_BYTES), base);
    let err = Tokenizer::from_pretrained(&huge).err().unwrap();
    assert!(err.to_string().contains("over the 64 MiB"), "{err}");
    assert!(Tokenizer::from_pretrained("{\"model\": ").is_err());
}
