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
