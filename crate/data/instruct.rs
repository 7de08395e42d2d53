//! A built-in instruction set for SFT, generated like the default corpus and from its
//! story world: the user gives a three-sentence story and asks about it; the assistant
//! answers in a few words. The sentences follow the corpus's phrasing, so a model
//! pretrained on the corpus reads them easily, and every answer can be checked exactly.
//! Every conversation, rendered, fits a context of 64 tokens with a 512-token BPE trained
//! on the default corpus (tests/sft_data.rs checks it).
//!
//! Five kinds of question, equally often: who (the friend), where (the place), what (the
//! object found or lost), how someone felt, and yes/no about the place (half yes, half
//! no). Train and held-out stories are told apart by a hash of the story's text, so no
//! story is in both.

use serde::{Deserialize, Serialize};

use crate::data::chat::{Conversation, Message, Role};
use crate::data::corpus::{capitalise, cast, pick, Grammar, Language, CHINESE, ENGLISH};
use crate::rng::Rng;

/// Conversations a training run uses by default.
pub const DEFAULT_TRAIN: usize = 4000;
/// Conversations held out for evaluating answers.
pub const DEFAULT_HELD_OUT: usize = 200;

/// One held-out story in this many (by its text's hash).
const HELD_OUT_ONE_IN: u64 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    HeldOut,
}

/// The story's sentences, in the order told; `Place` opens every story.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Place,
    Object,
    Friend,
    Feeling,
}

/// Who and what one story is about, and which wording each sentence takes.
struct Facts {
    name: &'static str,
    pron: &'static str,
    /// (name, kind of animal, pronoun)
    friend: (&'static str, &'static str, &'static str),
    place: &'static str,
    object: &'static str,
    feeling: &'static str,
    /// found the object (else lost it)
    found: bool,
    /// asked the friend for help (else the friend came to play)
    asked: bool,
}

/// What the question asks about; a yes/no question names a place, the story's own (yes)
/// or another (no).
#[derive(Clone, Copy)]
enum Ask {
    Who,
    Where,
    What,
    Feel,
    YesNo { place: &'static str, yes: bool },
}

fn grammar(language: Language) -> &'static Grammar {
    match language {
        Language::English => &ENGLISH,
        Language::Chinese => &CHINESE,
    }
}

fn draw_facts(rng: &mut Rng, g: &'static Grammar) -> Facts {
    let c = cast(rng, g);
    let feeling = *pick(rng, g.feelings);
    let (found, asked) = (rng.below(2) == 0, rng.below(2) == 0);
    Facts { name: c.name, pron: c.pron, friend: c.friend, place: c.place, object: c.object, feeling, found, asked }
}

/// A place of the grammar other than `not`.
fn other_place(rng: &mut Rng, g: &'static Grammar, not: &str) -> &'static str {
    loop {
        let place = *pick(rng, g.places);
        if place != not {
            return place;
        }
    }
}

/// The `i`th question: the five kinds in turn, and yes/no answers alternating, so both
/// are exactly balanced.
fn draw_ask(rng: &mut Rng, g: &'static Grammar, f: &Facts, i: usize) -> Ask {
    match i % 5 {
        0 => Ask::Who,
        1 => Ask::Where,
        2 => Ask::What,
        3 => Ask::Feel,
        _ => {
            let yes = (i / 5) % 2 == 0;
            Ask::YesNo { place: if yes { f.place } else { other_place(rng, g, f.place) }, yes }
        }
    }
}

/// The sentence that holds the answer.
fn needed(ask: Ask) -> Part {
    match ask {
        Ask::Who => Part::Friend,
        Ask::What => Part::Object,
        Ask::Feel => Part::Feeling,
        Ask::Where | Ask::YesNo { .. } => Part::Place,
    }
}

/// The three sentences told: the place first, then two of the other three, one of them
/// `needed`. (A fourth would not fit a context of 64 in Chinese with the 512-token BPE.)
fn parts(rng: &mut Rng, needed: Part) -> Vec<Part> {
    let droppable: Vec<Part> =
        [Part::Object, Part::Friend, Part::Feeling].into_iter().filter(|&p| p != needed).collect();
    let drop = *pick(rng, &droppable);
    [Part::Place, Part::Object, Part::Friend, Part::Feeling].into_iter().filter(|&p| p != drop).collect()
}

/// The corpus's sentences, trimmed to fit: no time of day, no "In the end".
fn english_sentence(f: &Facts, part: Part) -> String {
    let (name, friend) = (f.name, f.friend);
    match part {
        Part::Place => format!("{name} went to {}.", f.place),
        Part::Object if f.found => format!("There, {} found {}.", f.pron, f.object),
        Part::Object => format!("{} lost {} on the way.", capitalise(f.pron), f.object),
        Part::Friend if f.asked => format!("{name} asked {} the {} for help.", friend.0, friend.1),
        Part::Friend => format!("Soon {} the {} came to play.", friend.0, friend.1),
        Part::Feeling => format!("{name} felt {}.", f.feeling),
    }
}

/// The corpus's sentences, trimmed harder than in English: byte-level BPE spends up to
/// three tokens on a Chinese character it has not merged.
fn chinese_sentence(f: &Facts, part: Part) -> String {
    let name = f.name;
    match part {
        Part::Place => format!("{name}去了{}。", f.place),
        Part::Object if f.found => format!("{}发现了{}。", f.pron, f.object),
        Part::Object => format!("{}在路上丢了{}。", f.pron, f.object),
        Part::Friend if f.asked => format!("{name}请{}帮忙。", f.friend.0),
        Part::Friend => format!("{}来一起玩。", f.friend.0),
        Part::Feeling => format!("{name}感到很{}。", f.feeling),
    }
}

/// (question, answer) in English.
fn english_question(f: &Facts, ask: Ask) -> (String, String) {
    let name = f.name;
    match ask {
        Ask::Who if f.asked => (format!("Who helped {name}?"), format!("{}.", f.friend.0)),
        Ask::Who => ("Who came to play?".into(), format!("{}.", f.friend.0)),
        Ask::Where => (format!("Where did {name} go?"), format!("{}.", capitalise(f.place))),
        Ask::What => {
            let verb = if f.found { "find" } else { "lose" };
            (format!("What did {name} {verb}?"), format!("{}.", capitalise(f.object)))
        }
        Ask::Feel => (format!("How did {name} feel?"), format!("{}.", capitalise(f.feeling))),
        Ask::YesNo { place, yes } => (format!("Did {name} go to {place}?"), if yes { "Yes." } else { "No." }.into()),
    }
}

/// The thing itself, without its number and measure word: 一把闪亮的钥匙 → 钥匙, 一条小船 → 小船.
fn chinese_noun(object: &str) -> &str {
    match object.rsplit_once('的') {
        Some((_, noun)) => noun,
        None => object.char_indices().nth(2).map_or(object, |(at, _)| &object[at..]),
    }
}

/// (question, answer) in Chinese; short answers, as a person would give them.
fn chinese_question(f: &Facts, ask: Ask) -> (String, String) {
    let name = f.name;
    match ask {
        Ask::Who if f.asked => (format!("{name}请谁帮忙？"), format!("{}。", f.friend.0)),
        Ask::Who => ("谁来一起玩了？".into(), format!("{}。", f.friend.0)),
        Ask::Where => (format!("{name}去了哪里？"), format!("{}。", f.place)),
        Ask::What => {
            let verb = if f.found { "发现了" } else { "丢了" };
            (format!("{name}{verb}什么？"), format!("{}。", chinese_noun(f.object)))
        }
        Ask::Feel => (format!("{name}感到怎么样？"), format!("{}。", f.feeling)),
        Ask::YesNo { place, yes } => (format!("{name}去了{place}吗？"), if yes { "是。" } else { "否。" }.into()),
    }
}

/// The `i`th (story, question, answer) drawn.
fn example(language: Language, rng: &mut Rng, i: usize) -> (String, String, String) {
    let g = grammar(language);
    let f = draw_facts(rng, g);
    let ask = draw_ask(rng, g, &f, i);
    let told = parts(rng, needed(ask));
    let (story, (question, answer)) = match language {
        Language::English => {
            let s: Vec<String> = told.iter().map(|&p| english_sentence(&f, p)).collect();
            (s.join(" "), english_question(&f, ask))
        }
        Language::Chinese => {
            let s: Vec<String> = told.iter().map(|&p| chinese_sentence(&f, p)).collect();
            (s.concat(), chinese_question(&f, ask))
        }
    };
    let answer = if exclaims(&story, &question) { with_exclamation(&answer) } else { answer };
    (story, question, answer)
}

/// One answer in four ends with an exclamation mark instead of a full stop, by a hash of
/// the story and question: a style the fine-tuned model then samples about a quarter of
/// the time — the scripted ranker's preference in the RLHF tests (see [`ranker_score`]).
fn exclaims(story: &str, question: &str) -> bool {
    fnv1a(&format!("{question}\n{story}")) % 4 == 1
}

/// The answer with "!" for its final mark ("!" in Chinese too: the full-width "！" costs
/// three byte-level tokens the 512-token BPE never merged, past the context of 64).
fn with_exclamation(answer: &str) -> String {
    let base = answer.strip_suffix('.').or_else(|| answer.strip_suffix('。')).unwrap_or(answer);
    format!("{base}!")
}

/// The answer carries the exclamation style.
pub fn has_style(answer: &str) -> bool {
    let t = answer.trim();
    t.ends_with('!') || t.ends_with('！')
}

/// The scripted ranker's score of an answer, standing in for a person in tests and
/// benchmarks: correct and exclaimed (3) over correct (2) over exclaimed (1) over
/// neither (0); equal scores are ties. Its rule — correct and exclaimed — is what the
/// preference stages should make more likely.
pub fn ranker_score(expected: &str, answer: &str) -> u32 {
    2 * answer_matches(expected, answer) as u32 + has_style(answer) as u32
}

/// Ranks (1 best, ties equal) of `answers` by [`ranker_score`].
pub fn scripted_ranks(expected: &str, answers: &[String]) -> Vec<u32> {
    let scores: Vec<u32> = answers.iter().map(|a| ranker_score(expected, a)).collect();
    scores.iter().map(|s| 1 + scores.iter().filter(|&&o| o > *s).count() as u32).collect()
}

/// FNV-1a: a fixed hash of the story's text, the same on every platform.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

fn split_of(story: &str) -> Split {
    if fnv1a(story) % HELD_OUT_ONE_IN == 0 {
        Split::HeldOut
    } else {
        Split::Train
    }
}

fn seed(language: Language, split: Split) -> u64 {
    let l = match language {
        Language::English => 0,
        Language::Chinese => 1,
    };
    0x5F7_0000 + 2 * l + (split == Split::HeldOut) as u64
}

/// n conversations: user turn = a short story + a question about it; assistant turn = the
/// exact short answer. Deterministic. Train and HeldOut use disjoint stories.
pub fn instruction_set(language: Language, split: Split, n: usize) -> Vec<Conversation> {
    let mut rng = Rng::new(seed(language, split));
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let (story, question, answer) = example(language, &mut rng, out.len());
        if split_of(&story) == split {
            out.push(vec![
                Message { role: Role::User, content: format!("{story}\n{question}") },
                Message { role: Role::Assistant, content: answer },
            ]);
        }
    }
    out
}

/// Drops what an exact answer may differ by: surrounding space, a final period or
/// exclamation mark, case.
fn normalise(answer: &str) -> String {
    let t = answer.trim();
    let t = ['.', '。', '!', '！'].iter().find_map(|&m| t.strip_suffix(m)).unwrap_or(t);
    t.trim().to_lowercase()
}

/// Exact-match comparison of a generated answer with the expected one (trim, ignore case
/// and a final . 。 ! or ！).
pub fn answer_matches(expected: &str, got: &str) -> bool {
    normalise(expected) == normalise(got)
}
