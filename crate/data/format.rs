//! How a model's conversations become ids: Kiln's own template and special tokens, or an
//! imported model's template (its Jinja, rendered by `template.rs`) and its tokens' roles.

use std::sync::Arc;

use super::chat::{chat_prompt_by, check_turns, render, render_prompt, validate, Message, Rendered, Role};
use super::template::ChatTemplate;
use crate::error::{KilnError, Result};
use crate::tokenizer::{TokenRoles, Tokenizer, END};

/// How a model's conversations become ids, and which ids start, end and pad its rows:
/// Kiln's template and special tokens, or an imported model's own template and the roles
/// its files give its tokens. Every stage is built with its model's, so the same stage
/// code fine-tunes either.
#[derive(Clone)]
pub struct ChatFormat {
    pub roles: TokenRoles,
    /// An imported model's own template; None with `own`: it has none, so it cannot chat.
    template: Option<Arc<ChatTemplate>>,
    /// An imported model's: Kiln's template never renders for it (its ids mean other tokens).
    own: bool,
    /// The token that ends an assistant's turn (`<|end|>`, `<|im_end|>`, `<|eot_id|>` …).
    end_of_turn: u32,
}

impl ChatFormat {
    /// Kiln's template and eight special tokens.
    pub fn kiln() -> ChatFormat {
        ChatFormat { roles: TokenRoles::kiln(), template: None, own: false, end_of_turn: END }
    }

    /// A model's format: Kiln's for a Kiln tokenizer, else the imported model's `template`
    /// (None: it has none) with its `roles`. The end of a turn is the token the template
    /// supervises after an answer's content (what `encode` marks last), else the first stop.
    pub fn of(tokenizer: &Tokenizer, roles: TokenRoles, template: Option<Arc<ChatTemplate>>) -> ChatFormat {
        if !tokenizer.is_pretrained() {
            return ChatFormat { roles, ..ChatFormat::kiln() };
        }
        let probe = [
            Message { role: Role::User, content: "Hi".into() },
            Message { role: Role::Assistant, content: "Hello".into() },
        ];
        let marked = template.as_ref().and_then(|t| t.encode(tokenizer, &probe).ok()).and_then(|r| {
            let last = r.supervised.iter().rposition(|&s| s)?;
            Some(r.ids[last])
        });
        let end_of_turn = marked.unwrap_or_else(|| roles.end_of_text());
        ChatFormat { roles, template, own: true, end_of_turn }
    }

    /// The token that ends an assistant's turn: what answers in preference data end with.
    pub fn end_of_turn(&self) -> u32 {
        self.end_of_turn
    }

    /// Whether `id` ends a generation or a turn (what an answer shown as text leaves out).
    pub fn is_stop(&self, id: u32) -> bool {
        id == self.end_of_turn || self.roles.stop.contains(&id)
    }

    /// The template an imported model renders with; refused when it has none.
    fn own_template(&self) -> Result<Option<&ChatTemplate>> {
        match (&self.template, self.own) {
            (Some(t), _) => Ok(Some(t)),
            (None, false) => Ok(None),
            (None, true) => Err(KilnError::Config(
                "this model has no chat template (no chat_template.jinja nor tokenizer_config.json's chat_template), so its conversations cannot be rendered: import its instruct version, or pretrain it on text".into(),
            )),
        }
    }

    /// A conversation's ids and supervised flags ([`render`]; an imported model's
    /// template: what [`ChatTemplate::encode`] marks, each answer and its end of turn).
    pub fn render(&self, tok: &Tokenizer, conv: &[Message]) -> Result<Rendered> {
        let Some(template) = self.own_template()? else { return render(tok, conv) };
        validate(conv)?;
        let out = template.encode(tok, conv)?;
        if !out.supervised.contains(&true) {
            return Err(KilnError::Data("the conversation has no assistant token to learn from".into()));
        }
        Ok(out)
    }

    /// A conversation ending with the user's turn, as ids ready for the answer
    /// ([`render_prompt`]; an imported model's template with its generation prompt).
    pub fn render_prompt(&self, tok: &Tokenizer, conv: &[Message]) -> Result<Vec<u32>> {
        let Some(template) = self.own_template()? else { return render_prompt(tok, conv) };
        check_turns(conv, Role::User)?;
        template.encode_prompt(tok, conv)
    }

    /// [`chat_prompt`] in this format.
    pub fn chat_prompt(&self, tok: &Tokenizer, messages: &[Message], t: usize) -> Result<Vec<u32>> {
        chat_prompt_by(messages, t, |conv| self.render_prompt(tok, conv))
    }
}
