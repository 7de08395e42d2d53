//! The chat template SFT trains on: `<|bos|>`, then every turn as `ROLE content <|end|>`
//! with the role markers `<|system|>`, `<|user|>`, `<|assistant|>` (special ids, never
//! produced by encoding text). The loss falls only on what the assistant says: each
//! assistant turn's content and its `<|end|>`, so the model learns to answer and to stop.

use serde::{Deserialize, Serialize};

use crate::error::{KilnError, Result};
use crate::tokenizer::{Tokenizer, ASSISTANT, BOS, END, SPECIAL_TOKENS, SYSTEM, USER};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// The special token that opens this role's turn.
    fn marker_id(self) -> u32 {
        match self {
            Role::System => SYSTEM,
            Role::User => USER,
            Role::Assistant => ASSISTANT,
        }
    }

    fn marker(self) -> &'static str {
        SPECIAL_TOKENS[self.marker_id() as usize]
    }

    fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    /// "a user", "an assistant" (for error messages).
    fn a(self) -> &'static str {
        match self {
            Role::System => "a system",
            Role::User => "a user",
            Role::Assistant => "an assistant",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

pub type Conversation = Vec<Message>;

/// ids and, for each id, whether it is a supervised target (loss weight 1).
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    pub ids: Vec<u32>,
    pub supervised: Vec<bool>,
}

/// Jinja2 chat template (Hugging Face tokenizer_config.json "chat_template") producing
/// [`render_text`]'s string; rendered with `bos_token='<|bos|>'`.
pub const CHAT_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";

fn bad(message: String) -> KilnError {
    KilnError::Data(message)
}

/// The turn order both `validate` and `render_prompt` accept: an optional system message
/// first, then user and assistant alternating from the user, ending with `last`.
pub(crate) fn check_turns(conv: &[Message], last: Role) -> Result<()> {
    if conv.is_empty() {
        return Err(bad("the conversation is empty".into()));
    }
    let start = usize::from(conv[0].role == Role::System);
    if start == conv.len() {
        return Err(bad("the conversation holds only a system message".into()));
    }
    for (i, m) in conv.iter().enumerate().skip(start) {
        let expected = if (i - start) % 2 == 0 { Role::User } else { Role::Assistant };
        if m.role != expected {
            return Err(bad(out_of_order(i, m.role, expected, i == start)));
        }
        if m.role == Role::Assistant && m.content.trim().is_empty() {
            return Err(bad(format!("message {}: the assistant's content is empty", i + 1)));
        }
    }
    let end = conv[conv.len() - 1].role;
    if end != last {
        return Err(bad(format!(
            "the conversation ends with {} message; it must end with the {}'s",
            end.a(),
            last.name()
        )));
    }
    Ok(())
}

/// Message `i` (0-based) has the wrong role; `first` marks the first turn after any system.
fn out_of_order(i: usize, got: Role, expected: Role, first: bool) -> String {
    let why = match got {
        Role::System => "a system message may only come first",
        _ if first => "turns must start with the user",
        _ => "user and assistant turns must alternate",
    };
    format!("message {}: expected {} message, found {} message ({why})", i + 1, expected.a(), got.a())
}

/// Checks the shape: optional system first, then user/assistant turns alternating,
/// starting with user, ending with assistant, no empty assistant content.
pub fn validate(conv: &[Message]) -> Result<()> {
    check_turns(conv, Role::Assistant)
}

/// Appends one turn, `marker content <|end|>`, flagging its tokens as `supervised`
/// (all but the marker) or not.
fn push_turn(tok: &Tokenizer, m: &Message, out: &mut Rendered) -> Result<()> {
    let supervised = m.role == Role::Assistant;
    let content = tok.encode(&m.content)?;
    out.ids.push(m.role.marker_id());
    out.supervised.push(false);
    out.supervised.extend(std::iter::repeat_n(supervised, content.len() + 1));
    out.ids.extend(content);
    out.ids.push(END);
    Ok(())
}

fn render_turns(tok: &Tokenizer, conv: &[Message]) -> Result<Rendered> {
    let mut out = Rendered { ids: vec![BOS], supervised: vec![false] };
    for m in conv {
        push_turn(tok, m, &mut out)?;
    }
    Ok(out)
}

/// Full conversation → ids + supervised flags (calls validate).
pub fn render(tok: &Tokenizer, conv: &[Message]) -> Result<Rendered> {
    validate(conv)?;
    let out = render_turns(tok, conv)?;
    if !out.supervised.contains(&true) {
        return Err(bad("the conversation has no assistant token to learn from".into()));
    }
    Ok(out)
}

/// A conversation whose last turn is the user's → ids ending in `<|assistant|>`, ready
/// for generation (what `add_generation_prompt=True` gives).
pub fn render_prompt(tok: &Tokenizer, conv: &[Message]) -> Result<Vec<u32>> {
    check_turns(conv, Role::User)?;
    let mut ids = render_turns(tok, conv)?.ids;
    ids.push(ASSISTANT);
    Ok(ids)
}

/// The same rendering as a string with the special tokens written out (for comparison
/// with Jinja).
pub fn render_text(conv: &[Message], add_generation_prompt: bool) -> String {
    let mut text = SPECIAL_TOKENS[BOS as usize].to_string();
    for m in conv {
        text += m.role.marker();
        text += &m.content;
        text += SPECIAL_TOKENS[END as usize];
    }
    if add_generation_prompt {
        text += Role::Assistant.marker();
    }
    text
}

/// A chat's prompt ids ending in `<|assistant|>`, the oldest exchanges dropped (the system
/// turn kept) until it leaves room for an answer in the context of `t` tokens.
pub fn chat_prompt(tokenizer: &Tokenizer, messages: &[Message], t: usize) -> Result<Vec<u32>> {
    chat_prompt_by(messages, t, |conv| render_prompt(tokenizer, conv))
}

/// [`chat_prompt`] with the prompt ids of a conversation given by `render` (an imported
/// model's own template, say).
pub fn chat_prompt_by(
    messages: &[Message],
    t: usize,
    render: impl Fn(&[Message]) -> Result<Vec<u32>>,
) -> Result<Vec<u32>> {
    let room = (t / 4).clamp(1, 32);
    let system = messages.first().filter(|m| m.role == Role::System).cloned();
    let mut turns: Vec<_> = messages.iter().filter(|m| m.role != Role::System).cloned().collect();
    loop {
        let conv: Vec<_> = system.iter().cloned().chain(turns.iter().cloned()).collect();
        let mut ids = render(&conv)?;
        if ids.len() + room <= t {
            return Ok(ids);
        }
        if turns.len() <= 1 {
            // one turn longer than the context: its start goes (the first token, <|bos|>,
            // stays), so that an answer still has room; else every position would be prompt
            ids.drain(1..ids.len() + room - t.max(room + 1) + 1);
            return Ok(ids);
        }
        turns.drain(..2.min(turns.len() - 1));
    }
}
