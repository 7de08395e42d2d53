//! Preference data: a person's ranking of the answers sampled for one prompt, the pairs
//! it implies, and JSONL in and out. A ranking of K answers gives its K(K−1)/2 ordered
//! pairs minus ties and minus pairs of one text (InstructGPT); every pair of one prompt is
//! scored in the same batch, so each answer runs once per step.
//!
//! Files: one ranking per line,
//!   {"prompt": [messages], "answers": [str], "ranks": [int], "verdict": "ranked"}
//! with rank 1 best and equal ranks tied; and, for other tools, the pairs in TRL's
//! conversational preference format,
//!   {"prompt": [messages], "chosen": [assistant message], "rejected": [assistant message]}.
//! Reading takes either kind of line (a pair is a ranking of two answers), with prompt,
//! chosen and rejected as strings or as message lists. Either kind may name who ranked it,
//! `"annotator": str` (several people's rankings are compared in `data::agreement`); TRL's
//! readers ignore the extra field.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::data::chat::{check_turns, Conversation, Message, Role};
use crate::data::jsonl::{list_errors, messages_of, object_of_line, read_lines, LineError};
use crate::data::Row;
use crate::error::{KilnError, Result};

/// Most answers ranked for one prompt.
pub const MAX_ANSWERS: usize = 6;

/// Longest annotator name, in characters: a name, not a document.
pub const MAX_ANNOTATOR_CHARS: usize = 200;

/// What the person made of a prompt's answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Ordered (ties allowed).
    #[default]
    Ranked,
    /// Passed over: no pairs.
    Skipped,
    /// Every answer is bad: no pairs (none is preferred).
    AllBad,
}

/// One prompt, its answers and their ranks (1 best; equal ranks are ties).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranking {
    /// The conversation so far, ending with the user's turn.
    pub prompt: Conversation,
    pub answers: Vec<String>,
    pub ranks: Vec<u32>,
    #[serde(default)]
    pub verdict: Verdict,
    /// Who ranked it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotator: Option<String>,
}

impl Ranking {
    /// (chosen, rejected) answer indices: every pair with a strictly better rank first,
    /// except one text ranked apart from itself; none when skipped or all bad.
    pub fn pairs(&self) -> Vec<(usize, usize)> {
        if self.verdict != Verdict::Ranked {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, &ri) in self.ranks.iter().enumerate() {
            for (j, &rj) in self.ranks.iter().enumerate() {
                // the same text ranked apart (a small model often repeats an answer) says
                // nothing about what the person prefers, and no model can score it either way
                if ri < rj && self.answers[i].trim() != self.answers[j].trim() {
                    out.push((i, j));
                }
            }
        }
        out
    }

    /// The question shown for this prompt (the user's last turn).
    pub fn question(&self) -> &str {
        self.prompt.last().map_or("", |m| m.content.as_str())
    }

    fn check(&self) -> std::result::Result<(), String> {
        let k = self.answers.len();
        if !(2..=MAX_ANSWERS).contains(&k) {
            return Err(format!("a ranking needs 2 to {MAX_ANSWERS} answers, not {k}"));
        }
        if self.ranks.len() != k {
            return Err(format!("{k} answers but {} ranks", self.ranks.len()));
        }
        if self.ranks.iter().any(|&r| r == 0 || r as usize > k) {
            return Err(format!("ranks must lie between 1 and {k}"));
        }
        if self.prompt.last().map(|m| m.role) != Some(Role::User) {
            return Err("the prompt must end with the user's turn".into());
        }
        // the prompt's turns in order; the answers are the model's, and a barely trained
        // model's may be empty: ranked, they must read back as they were kept
        check_turns(&self.prompt, Role::User).map_err(|e| e.to_string())?;
        self.annotator.as_deref().map_or(Ok(()), check_annotator)
    }
}

/// An annotator's name: 1 to MAX_ANNOTATOR_CHARS characters, no control characters (it is
/// printed in tables).
fn check_annotator(name: &str) -> std::result::Result<(), String> {
    let chars = name.chars().count();
    if !(1..=MAX_ANNOTATOR_CHARS).contains(&chars) {
        return Err(format!("\"annotator\" must be 1 to {MAX_ANNOTATOR_CHARS} characters, not {chars}"));
    }
    if name.chars().any(char::is_control) {
        return Err("\"annotator\" must not hold control characters".into());
    }
    Ok(())
}

/// Every pair of every ranking, as (ranking index, chosen, rejected).
pub fn all_pairs(rankings: &[Ranking]) -> Vec<(usize, usize, usize)> {
    rankings.iter().enumerate().flat_map(|(i, r)| r.pairs().into_iter().map(move |(c, j)| (i, c, j))).collect()
}

/// The rankings as JSONL, one per line (round-trips through [`read_rankings`]).
pub fn rankings_jsonl(rankings: &[Ranking]) -> String {
    rankings.iter().map(|r| serde_json::to_string(r).expect("a ranking serialises") + "\n").collect()
}

/// The pairs in TRL's conversational preference format, one per line (with the ranking's
/// annotator, when known).
pub fn pairs_jsonl(rankings: &[Ranking]) -> String {
    let assistant = |text: &str| json!([{ "role": "assistant", "content": text }]);
    all_pairs(rankings)
        .into_iter()
        .map(|(i, c, j)| {
            let r = &rankings[i];
            let mut line =
                json!({ "prompt": r.prompt, "chosen": assistant(&r.answers[c]), "rejected": assistant(&r.answers[j]) });
            if let Some(name) = &r.annotator {
                line["annotator"] = json!(name);
            }
            line.to_string() + "\n"
        })
        .collect()
}

/// The rankings read, and the lines skipped with why.
#[derive(Clone, Debug, PartialEq)]
pub struct Rankings {
    pub items: Vec<Ranking>,
    pub skipped: Vec<LineError>,
}

/// Reads rankings (or TRL pairs) from JSONL; bad lines are recorded by number and skipped.
/// A file without one usable line is an error.
pub fn read_rankings(bytes: &[u8]) -> Result<Rankings> {
    let (items, skipped) = read_lines(bytes, "rankings", |raw| match object_of_line(raw)? {
        None => Ok(None),
        Some(object) => ranking_of(&object).map(Some),
    })?;
    if items.is_empty() {
        let why = match (bytes.is_empty(), skipped.is_empty()) {
            (true, _) => "the file is empty".to_string(),
            (false, true) => "every line is blank".to_string(),
            (false, false) => list_errors(&skipped),
        };
        return Err(KilnError::Data(format!("the file holds no usable ranking: {why}")));
    }
    Ok(Rankings { items, skipped })
}

pub(crate) fn ranking_of(object: &Map<String, Value>) -> std::result::Result<Ranking, String> {
    let ranking = if object.contains_key("answers") {
        let mut full = object.clone();
        if let Some(p @ Value::String(_)) = full.get("prompt").cloned() {
            full.insert("prompt".into(), json!([{ "role": "user", "content": p }]));
        }
        serde_json::from_value(Value::Object(full)).map_err(|e| format!("not a ranking: {e}"))?
    } else if object.contains_key("chosen") || object.contains_key("rejected") {
        let field = |key: &str| object.get(key).ok_or_else(|| format!("missing \"{key}\""));
        let prompt = match field("prompt")? {
            Value::String(p) => vec![Message { role: Role::User, content: p.clone() }],
            list => messages_of(list, "prompt")?,
        };
        let answer = |key: &str| -> std::result::Result<String, String> {
            match field(key)? {
                Value::String(text) => Ok(text.clone()),
                list => {
                    let messages = messages_of(list, key)?;
                    match messages.as_slice() {
                        [m] if m.role == Role::Assistant => Ok(m.content.clone()),
                        _ => Err(format!("\"{key}\" must be one assistant message")),
                    }
                }
            }
        };
        let annotator = match object.get("annotator") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name.clone()),
            Some(_) => return Err("\"annotator\" must be a string".into()),
        };
        Ranking {
            prompt,
            answers: vec![answer("chosen")?, answer("rejected")?],
            ranks: vec![1, 2],
            verdict: Verdict::Ranked,
            annotator,
        }
    } else {
        return Err(
            "expected a ranking (\"prompt\", \"answers\", \"ranks\") or a pair (\"prompt\", \"chosen\", \"rejected\")"
                .into(),
        );
    };
    ranking.check()?;
    Ok(ranking)
}

/// The row `prompt + answer + pad` (Kiln's `<|pad|>`, an imported model's own), the answer
/// cut to fit T + 1 tokens: the padding token makes the answer's last token an input (where
/// a reward is read); the answer's tokens are the supervised targets.
pub fn answer_row(prompt: &[u32], answer: &[u32], t: usize, pad: u32) -> Row {
    let mut ids = prompt.to_vec();
    ids.extend(answer.iter().take((t + 1).saturating_sub(prompt.len() + 1)));
    ids.push(pad);
    let supervised = (0..ids.len()).map(|i| i >= prompt.len() && i + 1 < ids.len()).collect();
    Row { ids, supervised }
}

/// Where a row's answer lies in a (B, T) batch: its first and last answer positions and
/// the position of `<|end|>` as input.
pub fn answer_span(row: &Row) -> (usize, usize, usize) {
    let first = row.supervised.iter().position(|&s| s).expect("an answer row") - 1;
    let end_input = row.ids.len() - 2;
    (first, end_input - 1, end_input)
}
