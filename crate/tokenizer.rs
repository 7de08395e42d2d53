//! Tokenizers trained on the user's own text: byte-level BPE (GPT-2's scheme, any UTF-8
//! including Chinese) or characters. Both are Hugging Face `tokenizers` objects, saved and
//! loaded as `tokenizer.json`, so transformers' PreTrainedTokenizerFast reads them.
//!
//! Special tokens hold fixed ids 0..8, the same in every Kiln vocabulary: padding,
//! document boundaries, unknown characters, and the chat template SFT uses.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::AddedToken;

use crate::error::{KilnError, Result};

pub const SPECIAL_TOKENS: [&str; 8] =
    ["<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"];
pub const PAD: u32 = 0;
pub const BOS: u32 = 1;
pub const EOS: u32 = 2;
pub const UNK: u32 = 3;
pub const SYSTEM: u32 = 4;
pub const USER: u32 = 5;
pub const ASSISTANT: u32 = 6;
pub const END: u32 = 7;

/// The ids that play a part in generation. Kiln's own vocabularies have them at fixed ids
/// ([`TokenRoles::kiln`]); an imported model names its own (tokenizer_config.json's
/// bos/eos/pad tokens, config.json's and generation_config.json's eos ids).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRoles {
    /// Fed first when a prompt is empty (None: the model has no such token).
    pub bos: Option<u32>,
    /// What fills a batch past a sequence's end.
    pub pad: u32,
    /// Tokens that end a generation: the end of a text, the end of a chat turn.
    pub stop: Vec<u32>,
    /// Tokens generation never picks (markers only the data pipeline places).
    pub never: Vec<u32>,
}

impl TokenRoles {
    /// Kiln's eight special tokens' roles.
    pub fn kiln() -> TokenRoles {
        TokenRoles {
            bos: Some(BOS),
            pad: PAD,
            stop: vec![EOS, END],
            never: vec![PAD, BOS, UNK, SYSTEM, USER, ASSISTANT],
        }
    }

    /// The token that ends a document (Kiln's `<|eos|>`; an imported model's first stop).
    pub fn end_of_text(&self) -> u32 {
        self.stop.first().copied().unwrap_or(self.pad)
    }

    /// The token a generation starts from when its prompt is empty.
    pub fn start(&self) -> u32 {
        self.bos.or(self.stop.first().copied()).unwrap_or(self.pad)
    }
}

/// The smallest byte-level BPE vocabulary: 256 bytes and the special tokens.
pub const MIN_BPE_VOCAB: usize = 256 + SPECIAL_TOKENS.len();
pub const MAX_VOCAB: usize = 8192;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// Byte-level BPE: every byte is a token, merges learned from the text.
    Bpe,
    /// One token per character (the most frequent ones if the vocabulary is capped).
    Char,
}

/// The largest imported tokenizer.json Kiln reads (Llama-3's is 9 MB, Gemma-3's 33 MB).
pub const MAX_PRETRAINED_JSON_BYTES: usize = 64 << 20;
/// The largest imported vocabulary: every id below it (Gemma-3's 262,144 is the biggest in use).
pub const MAX_PRETRAINED_VOCAB: usize = 262_144;

/// Each token's byte range in the text it was encoded from.
pub type Offsets = Vec<(usize, usize)>;

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Imported exactly as it came ([`Tokenizer::from_pretrained`]): none of Kiln's special
    /// tokens, and its own control-token strings in text become those tokens, as in
    /// transformers.
    pretrained: bool,
}

/// An added token of a tokenizer (its control tokens, and extra words such as Qwen's
/// `<tool_call>`), as tokenizer.json's `added_tokens` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedTokenInfo {
    pub id: u32,
    pub content: String,
    /// A control token: decoding skips it.
    pub special: bool,
}

fn err(e: impl std::fmt::Display) -> KilnError {
    KilnError::Tokenizer(e.to_string())
}

fn special_tokens() -> Vec<AddedToken> {
    SPECIAL_TOKENS.iter().map(|s| AddedToken::from(s.to_string(), true)).collect()
}

impl Tokenizer {
    /// Special-token strings in encoded text stay text (the setting is not saved in
    /// tokenizer.json, so every way in sets it). The post-processor puts `<|bos|>` first,
    /// as Kiln starts every text: Kiln encodes without it (`add_special_tokens` false)
    /// and adds `<|bos|>` itself, while transformers' plain `tokenizer(text)` gets it
    /// from the exported tokenizer.json, so both feed the model the same ids.
    fn wrap(mut inner: tokenizers::Tokenizer) -> Result<Tokenizer> {
        inner.set_encode_special_tokens(true);
        let bos = SPECIAL_TOKENS[BOS as usize];
        let template = TemplateProcessing::builder()
            .try_single(format!("{bos} $A"))
            .and_then(|b| b.try_pair(format!("{bos} $A $B:1")))
            .map_err(err)?
            .special_tokens(vec![(bos, BOS)])
            .build()
            .map_err(err)?;
        inner.with_post_processor(Some(template));
        Ok(Tokenizer { inner, pretrained: false })
    }

    /// An imported model's `tokenizer.json` (Llama-3, Qwen2.5, SmolLM2 …), kept exactly as it
    /// came: no Kiln special tokens, its vocabulary and ids untouched, its own control tokens
    /// matched in text. Encoding gives the ids transformers' `tokenizer(text,
    /// add_special_tokens=False)` gives, which is how `apply_chat_template` tokenizes. Refused:
    /// files over 64 MiB, models other than BPE, ids past 262,144 or given twice, and
    /// post-processors other than ByteLevel and TemplateProcessing (which add nothing without
    /// special tokens, so they cannot change the ids). Truncation and padding saved in the file
    /// are dropped: transformers sets them per call, and Kiln encodes whole texts.
    pub fn from_pretrained(json: &str) -> Result<Tokenizer> {
        check_pretrained_shape(json)?;
        let mut inner = parse(json)?;
        inner.with_truncation(None).map_err(err)?;
        inner.with_padding(None);
        Ok(Tokenizer { inner, pretrained: true })
    }

    /// Imported by [`Tokenizer::from_pretrained`].
    pub fn is_pretrained(&self) -> bool {
        self.pretrained
    }

    /// The id of a token given by its string (`"<|im_end|>"`, `"<|eot_id|>"` …).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The string of a token as the vocabulary stores it (byte-level tokens in GPT-2's alphabet).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Every added token, by id.
    pub fn added_tokens(&self) -> Vec<AddedTokenInfo> {
        let mut tokens: Vec<AddedTokenInfo> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, t)| AddedTokenInfo { id, content: t.content, special: t.special })
            .collect();
        tokens.sort_by_key(|t| t.id);
        tokens
    }

    /// The first control-token string found in `text` (an imported tokenizer turns it into that
    /// token, as transformers does): for callers that refuse or flag such text in a user's data.
    pub fn control_token_in(&self, text: &str) -> Option<String> {
        self.added_tokens()
            .into_iter()
            .filter(|t| t.special && !t.content.is_empty())
            .find_map(|t| text.contains(&t.content).then_some(t.content))
    }

    /// Trains a tokenizer on `documents`. For BPE `vocab_size` is the exact size wanted
    /// (MIN_BPE_VOCAB..=8192); for characters it caps the vocabulary (None: every
    /// character that occurs).
    pub fn train(documents: &[&str], kind: TokenizerKind, vocab_size: Option<usize>) -> Result<Tokenizer> {
        if documents.iter().all(|d| d.trim().is_empty()) {
            return Err(KilnError::Data("the text is empty: a tokenizer needs text to learn from".into()));
        }
        if let Some(v) = vocab_size {
            if v > MAX_VOCAB {
                return Err(KilnError::Config(format!("a vocabulary of {v} is over Kiln's maximum of {MAX_VOCAB}")));
            }
        }
        match kind {
            TokenizerKind::Bpe => Self::train_bpe(documents, vocab_size.unwrap_or(1024)),
            TokenizerKind::Char => Self::train_char(documents, vocab_size),
        }
    }

    fn train_bpe(documents: &[&str], vocab_size: usize) -> Result<Tokenizer> {
        if vocab_size < MIN_BPE_VOCAB {
            return Err(KilnError::Config(format!(
                "a byte-level BPE vocabulary needs at least {MIN_BPE_VOCAB} tokens (256 bytes + {} special), not {vocab_size}",
                SPECIAL_TOKENS.len()
            )));
        }
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(special_tokens())
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        let mut inner = tokenizers::Tokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
        inner.train(&mut trainer, documents.iter().copied()).map_err(err)?;
        inner.add_special_tokens(special_tokens()).map_err(err)?;
        let got = inner.get_vocab_size(true);
        if got < vocab_size {
            return Err(KilnError::Tokenizer(format!(
                "this text supports only {got} BPE tokens (no pair repeats often enough for more); choose a vocabulary of at most {got}, or give more text"
            )));
        }
        Tokenizer::wrap(inner)
    }

    fn train_char(documents: &[&str], vocab_size: Option<usize>) -> Result<Tokenizer> {
        let mut counts: HashMap<char, u64> = HashMap::new();
        for d in documents {
            for ch in d.chars() {
                *counts.entry(ch).or_default() += 1;
            }
        }
        let mut chars: Vec<(char, u64)> = counts.into_iter().collect();
        chars.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0))); // most frequent first, ties by code point
        let available = SPECIAL_TOKENS.len() + chars.len();
        let size = match vocab_size {
            Some(v) if v > available => {
                return Err(KilnError::Tokenizer(format!(
                    "this text has {} distinct characters, so a character vocabulary holds at most {available} tokens (with {} special), not {v}",
                    chars.len(),
                    SPECIAL_TOKENS.len()
                )))
            }
            Some(v) if v <= SPECIAL_TOKENS.len() => {
                return Err(KilnError::Config(format!("a vocabulary of {v} leaves no room for characters")))
            }
            Some(v) => v,
            None => available,
        };
        let mut vocab: HashMap<String, u32> = HashMap::new();
        for (i, s) in SPECIAL_TOKENS.iter().enumerate() {
            vocab.insert(s.to_string(), i as u32);
        }
        for (ch, _) in chars.iter().take(size - SPECIAL_TOKENS.len()) {
            let id = vocab.len() as u32;
            vocab.insert(ch.to_string(), id);
        }
        let model = BPE::builder()
            .vocab_and_merges(vocab.into_iter().collect::<tokenizers::models::bpe::Vocab>(), vec![])
            .unk_token(SPECIAL_TOKENS[UNK as usize].to_string())
            .build()
            .map_err(err)?;
        let mut inner = tokenizers::Tokenizer::new(model);
        inner.with_decoder(Some(Fuse::new()));
        inner.add_special_tokens(special_tokens()).map_err(err)?;
        Tokenizer::wrap(inner)
    }

    /// Reads a `tokenizer.json`, checking that it has Kiln's special tokens at their ids.
    pub fn from_json(json: &str) -> Result<Tokenizer> {
        check_shape(json)?;
        Tokenizer::with_kiln_specials(parse(json)?)
    }

    /// A parsed tokenizer.json that must hold Kiln's special tokens at their ids.
    fn with_kiln_specials(inner: tokenizers::Tokenizer) -> Result<Tokenizer> {
        if let Some((i, s)) = SPECIAL_TOKENS.iter().enumerate().find(|(i, s)| inner.token_to_id(s) != Some(*i as u32)) {
            return Err(KilnError::Tokenizer(format!("tokenizer.json lacks Kiln's special token {s} at id {i}")));
        }
        let tokenizer = Tokenizer::wrap(inner)?;
        tokenizer.check_specials_stay_text()?;
        Ok(tokenizer)
    }

    /// Typed text never becomes a control token: each special token's string, encoded as
    /// text, must give ordinary tokens (or `<|unk|>` for characters the vocabulary lacks).
    /// A vocabulary that merges "<|eos|>" into id 2 would let a prompt end a document.
    fn check_specials_stay_text(&self) -> Result<()> {
        for s in SPECIAL_TOKENS {
            let ids = self.encode(s)?;
            if let Some(id) = ids.iter().find(|&&id| (id as usize) < SPECIAL_TOKENS.len() && id != UNK) {
                return Err(KilnError::Tokenizer(format!(
                    "tokenizer.json turns the text {s} into the control token {} (id {id}); typed text must stay text",
                    SPECIAL_TOKENS[*id as usize]
                )));
            }
        }
        Ok(())
    }

    /// Reads a `tokenizer.json`; one without Kiln's special tokens (a Hugging Face GPT-2
    /// tokenizer, say) gets them at ids 0..8, every other id moving up by 8. Returns the
    /// tokenizer and, when ids moved, how many were added.
    pub fn from_json_adding_specials(json: &str) -> Result<(Tokenizer, usize)> {
        check_shape(json)?;
        let parsed = parse(json)?;
        if SPECIAL_TOKENS.iter().any(|s| parsed.token_to_id(s).is_some()) {
            return Ok((Tokenizer::with_kiln_specials(parsed)?, 0)); // Kiln's (or refused for misplacing them)
        }
        let mut v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| KilnError::Tokenizer(format!("tokenizer.json is not JSON: {e}")))?;
        let shift = SPECIAL_TOKENS.len() as u64;
        let vocab = v
            .pointer_mut("/model/vocab")
            .and_then(|x| x.as_object_mut())
            .ok_or_else(|| KilnError::Tokenizer("tokenizer.json has no model vocabulary (model.vocab)".into()))?;
        if SPECIAL_TOKENS.iter().any(|s| vocab.contains_key(*s)) {
            return Err(KilnError::Tokenizer("tokenizer.json has Kiln's special tokens at other ids".into()));
        }
        for id in vocab.values_mut() {
            let old = id.as_u64().ok_or_else(|| KilnError::Tokenizer("a vocabulary id is not a number".into()))?;
            *id = (old + shift).into();
        }
        // in the model's vocabulary too, as Kiln's trained tokenizers have them: an added
        // token whose id the model lacks is renumbered past the vocabulary on load
        for (i, s) in SPECIAL_TOKENS.iter().enumerate() {
            vocab.insert(s.to_string(), (i as u64).into());
        }
        let mut added: Vec<serde_json::Value> = SPECIAL_TOKENS
            .iter()
            .enumerate()
            .map(|(i, s)| {
                serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": true})
            })
            .collect();
        if let Some(old) = v.get("added_tokens").and_then(|x| x.as_array()) {
            for token in old {
                let mut token = token.clone();
                let id = token.get("id").and_then(|x| x.as_u64()).unwrap_or(0);
                token["id"] = (id + shift).into();
                added.push(token);
            }
        }
        v["added_tokens"] = added.into();
        v["post_processor"] = serde_json::Value::Null; // Kiln's own is set by wrap
        let inner = parse(&serde_json::to_string(&v).expect("JSON"))?;
        let tokenizer = Tokenizer::wrap(inner)?;
        tokenizer.check_specials_stay_text()?;
        Ok((tokenizer, SPECIAL_TOKENS.len()))
    }

    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(true).map_err(err)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`. With Kiln's own tokenizers special-token strings in the text are
    /// ordinary text: a user's document cannot inject a `<|eos|>` or a chat turn. An imported
    /// tokenizer ([`Tokenizer::from_pretrained`]) encodes as transformers does, its control
    /// tokens' strings becoming those tokens ([`Tokenizer::control_token_in`] finds them).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, false).map_err(err)?.get_ids().to_vec())
    }

    /// As [`Tokenizer::encode`], with each token's byte range in `text` (a token holding part
    /// of a character covers the whole character).
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Offsets)> {
        let encoding = self.inner.encode(text, false).map_err(err)?;
        Ok((encoding.get_ids().to_vec(), encoding.get_offsets().to_vec()))
    }

    /// Text of `ids`, without special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(err)
    }

    /// The token's text (for showing a split): a special token by its name, `<|bos|>`; a
    /// byte-level token that holds part of a character shows those bytes, `<0xE5>`, where
    /// decoding alone would give U+FFFD.
    pub fn token_text(&self, id: u32) -> String {
        if self.is_special(id) {
            return self.inner.id_to_token(id).unwrap_or_default();
        }
        let text = self.decode(&[id]).unwrap_or_default();
        if !text.contains('\u{FFFD}') || self.kind() != TokenizerKind::Bpe {
            return text;
        }
        let stored = self.inner.id_to_token(id).unwrap_or_default();
        let Some(bytes) = stored.chars().map(byte_of).collect::<Option<Vec<u8>>>() else { return text };
        let mut out = String::new();
        for chunk in bytes.utf8_chunks() {
            out.push_str(chunk.valid());
            for b in chunk.invalid() {
                out.push_str(&format!("<0x{b:02X}>"));
            }
        }
        out
    }

    /// A control token (Kiln's `<|bos|>` …, or an imported tokenizer's own, such as GPT-2's
    /// `<|endoftext|>`): decoding skips it, and with Kiln's tokenizers typed text never
    /// becomes it. An imported tokenizer's ids 0..8 are ordinary tokens.
    pub fn is_special(&self, id: u32) -> bool {
        (!self.pretrained && (id as usize) < SPECIAL_TOKENS.len())
            || self.inner.get_added_tokens_decoder().get(&id).is_some_and(|token| token.special)
    }

    pub fn kind(&self) -> TokenizerKind {
        if self.inner.get_pre_tokenizer().is_some() {
            TokenizerKind::Bpe
        } else {
            TokenizerKind::Char
        }
    }
}

/// The byte a character of a byte-level BPE vocabulary stands for (GPT-2's alphabet:
/// printable bytes are themselves, the other 68 are moved to U+0100 onwards, in order).
fn byte_of(c: char) -> Option<u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    match u32::from(c) {
        code @ 0..=255 if printable(code as u8) => Some(code as u8),
        code => (0..=255u8).filter(|&b| !printable(b)).nth(code.checked_sub(256)? as usize),
    }
}

fn parse(json: &str) -> Result<tokenizers::Tokenizer> {
    json.parse().map_err(|e| KilnError::Tokenizer(format!("not a valid tokenizer.json: {e}")))
}

/// A tokenizer.json must have one of the two shapes Kiln makes and runs (and Hugging Face
/// GPT-2's, which is the first): byte-level BPE (ByteLevel pre-tokenizer and decoder), or
/// characters (a BPE model without merges or pre-tokenizer, Fuse decoder); no normalizer.
/// Its ids (vocabulary and added tokens) are distinct and dense, 0..n, so every id the
/// tokenizer can produce has an embedding row.
fn check_shape(json: &str) -> Result<()> {
    let bad = |m: String| Err(KilnError::Tokenizer(format!("tokenizer.json {m}")));
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| KilnError::Tokenizer(format!("tokenizer.json is not JSON: {e}")))?;
    let kind = |key: &str| match v.get(key) {
        None | Some(serde_json::Value::Null) => Some(None),
        Some(x) => x.get("type").and_then(|t| t.as_str()).map(Some),
    };
    if v.pointer("/model/type").and_then(|t| t.as_str()) != Some("BPE") {
        return bad("is not a BPE model (Kiln reads byte-level BPE and character tokenizers)".into());
    }
    if kind("normalizer") != Some(None) {
        return bad("has a normalizer; Kiln's tokenizers have none".into());
    }
    let merges = v.pointer("/model/merges").and_then(|m| m.as_array()).map_or(0, Vec::len);
    match (kind("pre_tokenizer"), kind("decoder")) {
        (Some(Some("ByteLevel")), Some(Some("ByteLevel"))) => {}
        (Some(None), Some(Some("Fuse"))) if merges == 0 => {}
        _ => {
            return bad(
                "is neither of Kiln's shapes: byte-level BPE (ByteLevel pre-tokenizer and decoder) or characters (no pre-tokenizer, Fuse decoder, no merges)"
                    .into(),
            )
        }
    }
    let vocab = v
        .pointer("/model/vocab")
        .and_then(|x| x.as_object())
        .ok_or_else(|| KilnError::Tokenizer("tokenizer.json has no model vocabulary (model.vocab)".into()))?;
    let mut ids = std::collections::BTreeMap::new();
    for (token, id) in vocab {
        let id = id.as_u64().ok_or_else(|| {
            KilnError::Tokenizer(format!("tokenizer.json: the id of {token:?} is not a whole number"))
        })?;
        if let Some(other) = ids.insert(id, token.as_str()) {
            return bad(format!("gives id {id} to both {other:?} and {token:?}"));
        }
    }
    for added in v.get("added_tokens").and_then(|a| a.as_array()).into_iter().flatten() {
        let (Some(id), Some(content)) =
            (added.get("id").and_then(|x| x.as_u64()), added.get("content").and_then(|x| x.as_str()))
        else {
            return bad("has an added token without a whole-number id and a content string".into());
        };
        match ids.insert(id, content) {
            Some(other) if other != content => return bad(format!("gives id {id} to both {other:?} and {content:?}")),
            _ => {}
        }
    }
    let n = ids.len() as u64;
    if let Some((&id, token)) = ids.iter().next_back().filter(|(&id, _)| id >= n) {
        return bad(format!("gives {token:?} id {id}, past its {n} tokens (ids must run 0..{n})"));
    }
    Ok(())
}

/// An imported tokenizer.json, checked before the library builds it: its size, a BPE model,
/// every id (vocabulary and added tokens) below [`MAX_PRETRAINED_VOCAB`] and given to one
/// token only, and a post-processor that adds nothing when special tokens are not asked for.
fn check_pretrained_shape(json: &str) -> Result<()> {
    let bad = |m: String| Err(KilnError::Tokenizer(format!("tokenizer.json {m}")));
    if json.len() > MAX_PRETRAINED_JSON_BYTES {
        return bad(format!(
            "is {:.1} MiB, over the {} MiB Kiln reads",
            json.len() as f64 / (1 << 20) as f64,
            MAX_PRETRAINED_JSON_BYTES >> 20
        ));
    }
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| KilnError::Tokenizer(format!("tokenizer.json is not JSON: {e}")))?;
    match v.pointer("/model/type").and_then(|t| t.as_str()) {
        Some("BPE") => {}
        other => {
            return bad(format!(
                "has a {} model; Kiln imports BPE tokenizers (Llama, Qwen, SmolLM2, Mistral, GPT-2)",
                other.unwrap_or("missing")
            ))
        }
    }
    check_post_processor(v.get("post_processor"))?;
    let vocab = v
        .pointer("/model/vocab")
        .and_then(|x| x.as_object())
        .ok_or_else(|| KilnError::Tokenizer("tokenizer.json has no model vocabulary (model.vocab)".into()))?;
    let mut ids: HashMap<u64, &str> = HashMap::with_capacity(vocab.len());
    for (token, id) in vocab {
        claim_id(&mut ids, id.as_u64(), token, false)?;
    }
    for added in v.get("added_tokens").and_then(|a| a.as_array()).into_iter().flatten() {
        let content = added.get("content").and_then(|x| x.as_str()).unwrap_or("");
        if content.is_empty() {
            return bad("has an added token without content".into());
        }
        claim_id(&mut ids, added.get("id").and_then(|x| x.as_u64()), content, true)?;
    }
    Ok(())
}

/// Gives `id` to `token`, refusing a missing id, one past [`MAX_PRETRAINED_VOCAB`] and one
/// already given to another token (an added token may repeat its own vocabulary entry).
fn claim_id<'a>(ids: &mut HashMap<u64, &'a str>, id: Option<u64>, token: &'a str, added: bool) -> Result<()> {
    let Some(id) = id else {
        return Err(KilnError::Tokenizer(format!("tokenizer.json: the id of {token:?} is not a whole number")));
    };
    if id >= MAX_PRETRAINED_VOCAB as u64 {
        return Err(KilnError::Tokenizer(format!(
            "tokenizer.json gives {token:?} id {id}, past the {MAX_PRETRAINED_VOCAB} tokens Kiln imports"
        )));
    }
    match ids.insert(id, token) {
        Some(other) if !(added && other == token) => {
            Err(KilnError::Tokenizer(format!("tokenizer.json gives id {id} to both {other:?} and {token:?}")))
        }
        _ => Ok(()),
    }
}

/// Post-processors that add tokens only when asked for special tokens, which Kiln (like
/// transformers' apply_chat_template) never asks for: ByteLevel (offsets only) and
/// TemplateProcessing, alone or in a Sequence.
fn check_post_processor(processor: Option<&serde_json::Value>) -> Result<()> {
    let Some(p) = processor.filter(|p| !p.is_null()) else { return Ok(()) };
    match p.get("type").and_then(|t| t.as_str()) {
        Some("ByteLevel" | "TemplateProcessing") => Ok(()),
        Some("Sequence") => {
            let parts = p.get("processors").and_then(|x| x.as_array()).ok_or_else(|| {
                KilnError::Tokenizer("tokenizer.json has a Sequence post-processor without processors".into())
            })?;
            parts.iter().try_for_each(|part| check_post_processor(Some(part)))
        }
        other => Err(KilnError::Tokenizer(format!(
            "tokenizer.json has a {} post-processor; Kiln imports ByteLevel and TemplateProcessing ones",
            other.unwrap_or("untyped")
        ))),
    }
}
