//! Thumbs up and down: a person's verdict on one answer, with no other answer to compare
//! it with — the cheapest label there is, and what KTO learns from. Files are TRL's
//! unpaired preference format, one answer a line:
//!   {"prompt": [messages], "completion": [assistant message], "label": true}
//! (prompt and completion may also be strings; an `annotator` field says who gave it, and
//! TRL's readers ignore it). A feedback file may also hold rankings or TRL pairs, read as
//! thumbs: a ranking's best answers up, its worst down (the middle ones say less, and are
//! left out), every answer of an "all bad" verdict down; a pair's chosen up, rejected down
//! (as TRL's `unpair_preference_dataset` does).

use serde_json::{json, Map, Value};

use crate::data::chat::{validate, Conversation, Message, Role};
use crate::data::jsonl::{conversation_of, list_errors, object_of_line, read_lines, LineError};
use crate::data::preference::{ranking_of, Ranking, Verdict};
use crate::error::{KilnError, Result};

/// Longest annotator name.
const MAX_ANNOTATOR: usize = 200;

/// One answer and the person's verdict on it.
#[derive(Clone, Debug, PartialEq)]
pub struct Thumb {
    /// The conversation so far, ending with the user's turn.
    pub prompt: Conversation,
    pub completion: String,
    /// Up (desirable) or down.
    pub label: bool,
    pub annotator: Option<String>,
}

impl Thumb {
    /// The thumb as a line of TRL's unpaired format.
    pub fn to_json(&self) -> Value {
        let mut line = json!({
            "prompt": self.prompt,
            "completion": [{ "role": "assistant", "content": self.completion }],
            "label": self.label,
        });
        if let Some(a) = &self.annotator {
            line["annotator"] = a.as_str().into();
        }
        line
    }
}

/// Thumbs as JSONL in TRL's unpaired format (round-trips through [`read_feedback`]).
pub fn thumbs_jsonl(thumbs: &[Thumb]) -> String {
    thumbs.iter().map(|t| t.to_json().to_string() + "\n").collect()
}

/// The thumbs a ranking implies: its best-ranked answers up and its worst down (a ranking
/// that ties every answer says nothing), every answer down when all are bad.
pub fn thumbs_of_ranking(r: &Ranking) -> Vec<Thumb> {
    let thumb = |i: usize, label: bool| Thumb {
        prompt: r.prompt.clone(),
        completion: r.answers[i].clone(),
        label,
        annotator: r.annotator.clone(),
    };
    match r.verdict {
        Verdict::Skipped => Vec::new(),
        Verdict::AllBad => (0..r.answers.len()).map(|i| thumb(i, false)).collect(),
        Verdict::Ranked => {
            let (best, worst) = (r.ranks.iter().min(), r.ranks.iter().max());
            if best == worst {
                return Vec::new();
            }
            let mut out = Vec::new();
            for (i, rank) in r.ranks.iter().enumerate() {
                if Some(rank) == best {
                    out.push(thumb(i, true));
                } else if Some(rank) == worst {
                    out.push(thumb(i, false));
                }
            }
            out
        }
    }
}

/// The thumbs read, and the lines skipped with why.
#[derive(Clone, Debug, PartialEq)]
pub struct Feedback {
    pub items: Vec<Thumb>,
    pub skipped: Vec<LineError>,
}

/// Reads thumbs (TRL's unpaired lines), rankings and pairs from JSONL, each as thumbs; bad
/// lines are recorded by number and skipped. A file without one thumb is an error.
pub fn read_feedback(bytes: &[u8]) -> Result<Feedback> {
    let (lists, skipped) = read_lines(bytes, "feedback", |raw| match object_of_line(raw)? {
        None => Ok(None),
        Some(object) if object.contains_key("label") => thumb_of(&object).map(|t| Some(vec![t])),
        Some(object) => ranking_of(&object).map(|r| Some(thumbs_of_ranking(&r))),
    })?;
    let items: Vec<Thumb> = lists.into_iter().flatten().collect();
    if items.is_empty() {
        let why = match skipped.is_empty() {
            true => "no line holds a thumb, a ranking that orders its answers, or a pair".to_string(),
            false => list_errors(&skipped),
        };
        return Err(KilnError::Data(format!("the file holds no usable feedback: {why}")));
    }
    Ok(Feedback { items, skipped })
}

fn thumb_of(object: &Map<String, Value>) -> std::result::Result<Thumb, String> {
    let label = match object.get("label") {
        Some(Value::Bool(b)) => *b,
        _ => return Err("\"label\" must be true (desirable) or false (undesirable)".into()),
    };
    let annotator = match object.get("annotator") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) if a.chars().count() <= MAX_ANNOTATOR => Some(a.clone()),
        Some(_) => return Err(format!("\"annotator\" must be a name of at most {MAX_ANNOTATOR} characters")),
    };
    let mut conv = conversation_of(object)?;
    validate(&conv).map_err(|e| e.to_string())?;
    let completion = match conv.pop() {
        Some(Message { role: Role::Assistant, content }) => content,
        _ => return Err("\"completion\" must be one assistant message".into()),
    };
    if conv.last().map(|m| m.role) != Some(Role::User) {
        return Err("the prompt must end with the user's turn".into());
    }
    Ok(Thumb { prompt: conv, completion, label, annotator })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(q: &str) -> Conversation {
        vec![Message { role: Role::User, content: q.into() }]
    }

    #[test]
    fn thumbs_round_trip_as_trl_lines() {
        let thumbs = vec![
            Thumb { prompt: user("Who?"), completion: "Tom!".into(), label: true, annotator: Some("ana".into()) },
            Thumb { prompt: user("Where?"), completion: "Home".into(), label: false, annotator: None },
        ];
        let text = thumbs_jsonl(&thumbs);
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["completion"][0]["role"], "assistant");
        assert_eq!(first["label"], true);
        assert_eq!(read_feedback(text.as_bytes()).unwrap().items, thumbs);
        // strings, as TRL's standard (not conversational) format writes them
        let plain = br#"{"prompt": "Who?", "completion": "Tom!", "label": false}"#;
        let read = read_feedback(plain).unwrap().items;
        assert_eq!((read[0].completion.as_str(), read[0].label), ("Tom!", false));
    }

    #[test]
    fn rankings_and_pairs_are_read_as_thumbs() {
        let text = concat!(
            r#"{"prompt": "Q", "answers": ["a", "b", "c"], "ranks": [2, 1, 3]}"#,
            "\n",
            r#"{"prompt": "R", "answers": ["x", "y"], "ranks": [1, 1], "verdict": "all_bad"}"#,
            "\n",
            r#"{"prompt": "S", "chosen": "good", "rejected": "bad"}"#,
            "\n",
            r#"{"prompt": "T", "answers": ["x", "y"], "ranks": [1, 1]}"#,
            "\n",
            r#"{"prompt": "U", "completion": "z", "label": "yes"}"#,
            "\n",
        );
        let read = read_feedback(text.as_bytes()).unwrap();
        let got: Vec<(&str, bool)> = read.items.iter().map(|t| (t.completion.as_str(), t.label)).collect();
        // the middle answer "a" says less and is left out; a tie of all says nothing
        assert_eq!(got, [("b", true), ("c", false), ("x", false), ("y", false), ("good", true), ("bad", false)]);
        assert_eq!(read.skipped.len(), 1);
        assert!(read.skipped[0].reason.contains("label"), "{}", read.skipped[0]);
        let none = read_feedback(b"{\"prompt\": \"T\", \"answers\": [\"x\", \"y\"], \"ranks\": [1, 1]}\n").unwrap_err();
        assert!(none.to_string().contains("no usable feedback"), "{none}");
    }
}
