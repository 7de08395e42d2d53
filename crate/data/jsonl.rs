//! Instruction data as JSONL, in the formats Hugging Face TRL's SFTTrainer reads: one JSON
//! object per line, `{"prompt": str, "completion": str}`, the conversational
//! `{"prompt": [messages], "completion": [messages]}`, or `{"messages": [messages]}` with
//! messages `{"role": …, "content": …}`. A bad line is recorded and skipped, so one typo
//! does not cost the whole file, and the person learns which lines to fix.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::data::chat::{validate, Conversation, Message, Role};
use crate::error::{KilnError, Result};

/// Largest JSONL file read (32 MiB): it is held in memory, in the browser too.
pub const MAX_JSONL_BYTES: u64 = 32 << 20;

/// How many line errors the error for a file with no usable line lists.
const ERRORS_SHOWN: usize = 5;

/// A line that could not be used; `line` counts from 1.
#[derive(Clone, Debug, PartialEq)]
pub struct LineError {
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// The conversations read, and the lines skipped with why.
#[derive(Clone, Debug, PartialEq)]
pub struct Conversations {
    pub items: Vec<Conversation>,
    pub skipped: Vec<LineError>,
}

/// Reads JSONL: one object per line in any of the three formats. Blank lines are ignored;
/// a UTF-8 BOM is dropped; each bad line is recorded with its number and reason while the
/// rest load. Over MAX_JSONL_BYTES, or without a single usable line, it is an error.
pub fn read_conversations(bytes: &[u8]) -> Result<Conversations> {
    let (items, skipped) = read_lines(bytes, "instruction data", read_line)?;
    if items.is_empty() {
        return Err(KilnError::Data(no_conversations(&skipped)));
    }
    Ok(Conversations { items, skipped })
}

/// The items of a JSONL file, one per non-blank line, and the lines skipped with why.
/// A UTF-8 BOM is dropped; over MAX_JSONL_BYTES is an error (`what` names the data).
pub(crate) fn read_lines<T>(
    bytes: &[u8],
    what: &str,
    read: impl Fn(&[u8]) -> std::result::Result<Option<T>, String>,
) -> Result<(Vec<T>, Vec<LineError>)> {
    let bytes = super::text_bytes(bytes, MAX_JSONL_BYTES, what)?;
    let (mut items, mut skipped) = (Vec::new(), Vec::new());
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        match read(raw) {
            Ok(Some(item)) => items.push(item),
            Ok(None) => {}
            Err(reason) => skipped.push(LineError { line: i + 1, reason }),
        }
    }
    Ok((items, skipped))
}

fn no_conversations(skipped: &[LineError]) -> String {
    if skipped.is_empty() {
        return "the file holds no conversations (every line is blank)".into();
    }
    format!("no line of the file holds a usable conversation: {}", list_errors(skipped))
}

/// The first few line errors, and how many more there are.
pub(crate) fn list_errors(skipped: &[LineError]) -> String {
    let shown: Vec<String> = skipped.iter().take(ERRORS_SHOWN).map(LineError::to_string).collect();
    let more = match skipped.len().saturating_sub(ERRORS_SHOWN) {
        0 => String::new(),
        n => format!("; and {n} more"),
    };
    format!("{}{more}", shown.join("; "))
}

/// A line's JSON object, None for a blank line, or the reason it is not one.
pub(crate) fn object_of_line(raw: &[u8]) -> std::result::Result<Option<Map<String, Value>>, String> {
    let text = std::str::from_utf8(raw)
        .map_err(|e| format!("not UTF-8 text: the byte at column {} is invalid", e.valid_up_to() + 1))?;
    let text = text.trim(); // also drops the \r of Windows line ends
    if text.is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err("expected a JSON object".into());
    };
    Ok(Some(object))
}

/// One line → a conversation, None for a blank line, or the reason it is unusable.
fn read_line(raw: &[u8]) -> std::result::Result<Option<Conversation>, String> {
    let Some(object) = object_of_line(raw)? else { return Ok(None) };
    let conv = conversation_of(&object)?;
    validate(&conv).map_err(|e| match e {
        KilnError::Data(m) => m,
        other => other.to_string(),
    })?;
    Ok(Some(conv))
}

/// The object's turns, from whichever format it is in.
pub(crate) fn conversation_of(object: &Map<String, Value>) -> std::result::Result<Conversation, String> {
    let has = |key: &str| object.contains_key(key);
    if has("messages") {
        if has("prompt") || has("completion") {
            return Err("has both \"messages\" and \"prompt\"/\"completion\"; use one format per line".into());
        }
        return messages_of(&object["messages"], "messages");
    }
    match (object.get("prompt"), object.get("completion")) {
        (None, None) => Err("expected \"messages\", or \"prompt\" and \"completion\"".into()),
        (None, Some(_)) => Err("missing \"prompt\"".into()),
        (Some(_), None) => Err("missing \"completion\"".into()),
        (Some(prompt), Some(completion)) => prompt_completion(prompt, completion),
    }
}

fn prompt_completion(prompt: &Value, completion: &Value) -> std::result::Result<Conversation, String> {
    match (prompt, completion) {
        (Value::String(p), Value::String(c)) => Ok(vec![
            Message { role: Role::User, content: p.clone() },
            Message { role: Role::Assistant, content: c.clone() },
        ]),
        (Value::Array(_), Value::Array(_)) => {
            let mut conv = messages_of(prompt, "prompt")?;
            conv.extend(messages_of(completion, "completion")?);
            Ok(conv)
        }
        _ => Err("\"prompt\" and \"completion\" must both be strings or both be lists of messages".into()),
    }
}

/// A JSON list of `{"role", "content"}` objects under `key`.
pub(crate) fn messages_of(list: &Value, key: &str) -> std::result::Result<Conversation, String> {
    let Value::Array(items) = list else {
        return Err(format!("\"{key}\" must be a list of {{\"role\", \"content\"}} objects"));
    };
    let message = |(i, item): (usize, &Value)| message_of(item).map_err(|e| format!("{key}[{i}]: {e}"));
    items.iter().enumerate().map(message).collect()
}

fn message_of(item: &Value) -> std::result::Result<Message, String> {
    let Value::Object(object) = item else {
        return Err("a message must be a JSON object with \"role\" and \"content\"".into());
    };
    let role = match object.get("role") {
        None => return Err("missing \"role\"".into()),
        Some(Value::String(r)) => role_of(r)?,
        Some(_) => return Err("\"role\" must be a string".into()),
    };
    match object.get("content") {
        None => Err("missing \"content\"".into()),
        Some(Value::String(content)) => Ok(Message { role, content: content.clone() }),
        Some(_) => Err("\"content\" must be a string".into()),
    }
}

fn role_of(name: &str) -> std::result::Result<Role, String> {
    match name {
        "system" => Ok(Role::System),
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        _ => Err(format!("unknown role {name:?} (use system, user or assistant)")),
    }
}

/// Conversations back as JSONL in the `{"messages": …}` format (round-trips through
/// read_conversations), one line each, newline-terminated.
pub fn to_jsonl(convs: &[Conversation]) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        messages: &'a [Message],
    }
    convs.iter().map(|c| serde_json::to_string(&Line { messages: c }).expect("messages serialise") + "\n").collect()
}
