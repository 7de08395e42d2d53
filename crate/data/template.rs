//! Imported models' chat templates (Llama-3, Qwen2.5, SmolLM2 …), rendered by a real Jinja
//! engine exactly as transformers' `apply_chat_template` renders them, and the conversation's
//! tokens with a mask on what the assistant says, for SFT on an imported model.
//!
//! transformers renders with Jinja2 (`trim_blocks`, `lstrip_blocks`, no autoescape, loop
//! controls) and gives the template `messages`, `add_generation_prompt`, `tools` and
//! `documents` (both none here), the tokenizer's special-token strings (`bos_token`,
//! `eos_token` …), `raise_exception(msg)`, `strftime_now(fmt)` and a `tojson` that is Python's
//! `json.dumps`. Kiln does the same with minijinja, Python's string and dict methods from
//! minijinja-contrib, and Python's way of printing values (`None`, `True`, `[1, 'a']`).
//!
//! A template is someone else's file, so everything it can do is bounded: its size, the work
//! one render may do (minijinja's fuel), the rendered length and the nesting depth. It cannot
//! read files: there is no loader, so `{% include %}` and `{% import %}` find nothing.
//!
//! `{% generation %}…{% endgeneration %}` (transformers' marker of the assistant's text)
//! is not Jinja; Kiln renders its body as is and, where a template has it, takes the answer
//! spans from it as transformers' `return_assistant_tokens_mask` does. Elsewhere the answers
//! are found by rendering (see [`ChatTemplate::encode`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::ops::Range;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{context, AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior};

use crate::data::chat::{Message, Rendered, Role};
use crate::error::{KilnError, Result};
use crate::tokenizer::Tokenizer;

/// The largest template source Kiln reads (published ones are 0.3 to 20 KiB).
pub const MAX_TEMPLATE_BYTES: usize = 64 << 10;
/// minijinja fuel for one render: about one per instruction and one per 64 bytes of data made,
/// so it bounds both time and memory (about 128 MB). A long conversation takes a few thousand.
pub const RENDER_FUEL: u64 = 2_000_000;
/// The longest rendered conversation (about a million tokens).
pub const MAX_RENDERED_BYTES: usize = 4 << 20;
/// Nesting of loops, conditions, macros and includes (a template calling itself ends here).
pub const RECURSION_LIMIT: usize = 100;
/// Nesting of a value `tojson` or printing walks (values a template builds can nest deeply).
const MAX_VALUE_DEPTH: usize = 128;
/// The largest tokenizer_config.json read for its template and special tokens.
pub const MAX_TOKENIZER_CONFIG_BYTES: usize = 8 << 20;
/// The special-token names transformers passes to a template, when the tokenizer has them.
pub const SPECIAL_TOKEN_NAMES: [&str; 7] =
    ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

const NAME: &str = "chat_template";
/// What the template's own context holds; special tokens may not take these names.
const CONTEXT_NAMES: [&str; 4] = ["messages", "tools", "documents", "add_generation_prompt"];
/// Marks a raise_exception error, so its message reaches the person unchanged.
const RAISED: &str = "\u{1}raise_exception\u{1}";
/// `{% generation %}` becomes a filter block that wraps its output in two noncharacters
/// (never in text people exchange); they are found and removed after rendering.
const GENERATION_FILTER: &str = "kiln_generation";
const GENERATION_START: char = '\u{FDD0}';
const GENERATION_END: char = '\u{FDD1}';

/// A wall-clock time for `strftime_now`, in the local time zone as Python's `datetime.now()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// A chat template ready to render: the compiled source and the special-token strings it sees.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The source the environment compiled (generation marks taken out).
    source: String,
    special_tokens: BTreeMap<String, String>,
    generation: bool,
}

impl ChatTemplate {
    /// Compiles `source` (a chat_template.jinja, or tokenizer_config.json's `chat_template`)
    /// with the special-token strings transformers would pass it, e.g.
    /// `[("bos_token", "<|begin_of_text|>"), ("eos_token", "<|eot_id|>")]`. Refuses a source
    /// over [`MAX_TEMPLATE_BYTES`] and one that is not Jinja (naming the line).
    pub fn new(source: &str, special_tokens: &[(&str, &str)]) -> Result<ChatTemplate> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(KilnError::Template(format!(
                "the template is {} bytes, over the {} KiB Kiln reads",
                source.len(),
                MAX_TEMPLATE_BYTES >> 10
            )));
        }
        let special_tokens = check_special_tokens(special_tokens)?;
        let (source, generation) = rewrite_generation_tags(source);
        let mut env = environment();
        env.add_template_owned(NAME, source.clone()).map_err(|e| template_error(&e))?;
        Ok(ChatTemplate { env, source, special_tokens, generation })
    }

    /// The template of a model folder: `chat_template_jinja` (recent transformers save it
    /// beside the config) or else tokenizer_config.json's `chat_template` (a string, or a list
    /// of named templates whose "default" transformers uses), with the config's special tokens.
    pub fn from_tokenizer_config(config_json: &str, chat_template_jinja: Option<&str>) -> Result<ChatTemplate> {
        let config = tokenizer_config(config_json)?;
        let source = match chat_template_jinja {
            Some(source) => source.to_string(),
            None => config_template(&config)?,
        };
        let special = special_tokens_of(&config);
        let pairs: Vec<(&str, &str)> = special.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ChatTemplate::new(&source, &pairs)
    }

    /// The same template with `strftime_now` reading `time` instead of the clock (for tests and
    /// reproducible data; Llama 3.2's template prints today's date).
    pub fn with_time(mut self, time: LocalTime) -> ChatTemplate {
        set_clock(&mut self.env, Some(time));
        self
    }

    /// The template's Jinja source as it runs (`{% generation %}` marks taken out): what a
    /// GGUF file carries as `tokenizer.chat_template`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The special-token strings the template sees.
    pub fn special_tokens(&self) -> &BTreeMap<String, String> {
        &self.special_tokens
    }

    /// Whether the template marks answers with `{% generation %}` (then [`ChatTemplate::encode`]
    /// takes the answer spans from the marks).
    pub fn has_generation_marks(&self) -> bool {
        self.generation
    }

    /// The conversation as transformers' `apply_chat_template(messages, tokenize=False,
    /// add_generation_prompt=…)` renders it.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        check_not_empty(messages)?;
        Ok(self.render_marked(messages, add_generation_prompt)?.0)
    }

    /// The conversation's tokens, as `apply_chat_template(messages, tokenize=True)` gives them,
    /// and for each whether it is something the assistant says: each assistant turn's content
    /// and the end-of-turn token after it (`<|im_end|>`, `<|eot_id|>` …), not the role header
    /// before it nor the newline after it. Where the template has no `{% generation %}` marks,
    /// an answer starts where the conversation before it, rendered with the generation prompt,
    /// ends (that must be the start of the conversation with the answer, and of the whole
    /// conversation), and ends after the first added token (special or not) after its content.
    /// The rendered text is tokenized once and the spans mapped to tokens through offsets: a
    /// token counts when its characters overlap an answer.
    pub fn encode(&self, tokenizer: &Tokenizer, messages: &[Message]) -> Result<Rendered> {
        self.encode_with(tokenizer, messages, false)
    }

    /// The tokens of a prompt for sampling: the conversation with the generation prompt.
    pub fn encode_prompt(&self, tokenizer: &Tokenizer, messages: &[Message]) -> Result<Vec<u32>> {
        Ok(self.encode_with(tokenizer, messages, true)?.ids)
    }

    /// [`ChatTemplate::encode`] with the generation prompt on or off (on: the answers before it
    /// are masked as usual; the prompt's header is not).
    pub fn encode_with(
        &self,
        tokenizer: &Tokenizer,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Rendered> {
        if !tokenizer.is_pretrained() {
            return Err(KilnError::Config(
                "a model's own chat template encodes with its own tokenizer (Tokenizer::from_pretrained); Kiln's tokenizers keep control-token strings as text"
                    .into(),
            ));
        }
        check_not_empty(messages)?;
        let (text, marked) = self.render_marked(messages, add_generation_prompt)?;
        let spans = if self.generation { marked } else { self.answer_spans(tokenizer, messages, &text)? };
        let (ids, offsets) = tokenizer.encode_with_offsets(&text)?;
        let supervised = offsets.iter().map(|&(a, b)| spans.iter().any(|s| a < s.end && b > s.start)).collect();
        Ok(Rendered { ids, supervised })
    }

    /// Byte spans of the answers in `text` (the whole conversation rendered), one per assistant
    /// message, found by rendering the conversation up to each.
    fn answer_spans(&self, tokenizer: &Tokenizer, messages: &[Message], text: &str) -> Result<Vec<Range<usize>>> {
        let added: Vec<String> =
            tokenizer.added_tokens().into_iter().map(|t| t.content).filter(|c| !c.is_empty()).collect();
        let mut spans = Vec::new();
        for (i, message) in messages.iter().enumerate().filter(|(_, m)| m.role == Role::Assistant) {
            let n = spans.len() + 1;
            let place = format!("the conversation up to answer {n}");
            let prefix = self.render_marked(&messages[..i], true).map_err(|e| e.at(&place))?.0;
            let with = self.render_marked(&messages[..=i], false).map_err(|e| e.at(&place))?.0;
            if !with.starts_with(&prefix) {
                return Err(KilnError::Template(format!(
                    "the conversation before answer {n}, rendered with the generation prompt, is not how the conversation with answer {n} starts, so Kiln cannot tell where the answer begins (a template that marks answers with {{% generation %}} avoids this)"
                )));
            }
            if !text.starts_with(&with) {
                return Err(KilnError::Template(format!(
                    "the template renders the conversation up to answer {n} differently from the start of the whole conversation (it changes earlier turns as later ones come), so Kiln cannot find answer {n} in it (a template that marks answers with {{% generation %}} avoids this)"
                )));
            }
            let start = prefix.len();
            let end = end_of_turn(&with, start, &message.content, &added).ok_or_else(|| {
                KilnError::Template(format!(
                    "the template puts no end-of-turn token (an added token such as <|im_end|>) after answer {n}, so Kiln cannot teach the model to stop"
                ))
            })?;
            spans.push(start..end);
        }
        Ok(spans)
    }

    /// Renders, bounded by fuel and [`MAX_RENDERED_BYTES`]; with `{% generation %}` marks
    /// also returns the byte spans they enclosed (removed from the text).
    fn render_marked(&self, messages: &[Message], add_generation_prompt: bool) -> Result<(String, Vec<Range<usize>>)> {
        if self.generation {
            check_no_marks(messages, &self.special_tokens)?;
        }
        let template = self.env.get_template(NAME).map_err(|e| template_error(&e))?;
        let mut out = Capped::default();
        let rendered = template.render_captured_to(self.context(messages, add_generation_prompt), &mut out);
        if out.over {
            return Err(KilnError::Template(format!(
                "the rendered conversation is over {} MiB, the most Kiln renders",
                MAX_RENDERED_BYTES >> 20
            )));
        }
        rendered.map_err(|e| template_error(&e))?;
        // every write is a whole &str, so the bytes are UTF-8
        let text = String::from_utf8(out.buf).map_err(|e| KilnError::Template(e.to_string()))?;
        if self.generation {
            strip_generation_marks(&text)
        } else {
            Ok((text, Vec::new()))
        }
    }

    /// What transformers passes to the template: its special tokens, then the conversation.
    fn context(&self, messages: &[Message], add_generation_prompt: bool) -> Value {
        let messages: Vec<Value> =
            messages.iter().map(|m| context! { role => role_name(m.role), content => m.content.clone() }).collect();
        context! {
            messages => messages,
            tools => (),
            documents => (),
            add_generation_prompt => add_generation_prompt,
            ..Value::from(self.special_tokens.clone())
        }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

fn check_not_empty(messages: &[Message]) -> Result<()> {
    if messages.is_empty() {
        return Err(KilnError::Data("the conversation is empty".into()));
    }
    Ok(())
}

/// Special-token names are template variables: they may not hide the conversation's own.
fn check_special_tokens(pairs: &[(&str, &str)]) -> Result<BTreeMap<String, String>> {
    let mut tokens = BTreeMap::new();
    for &(name, value) in pairs {
        let identifier = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !identifier || CONTEXT_NAMES.contains(&name) {
            return Err(KilnError::Config(format!("{name:?} cannot name a special token a chat template reads")));
        }
        tokens.insert(name.to_string(), value.to_string());
    }
    Ok(tokens)
}

/// The end of an answer's turn: after the first added token following its content (the
/// content skipped where the template printed it as is or trimmed, so a control-token string
/// inside an answer does not end it early). None when no added token follows.
fn end_of_turn(rendered: &str, start: usize, content: &str, added: &[String]) -> Option<usize> {
    let body = &rendered[start..];
    let skip = [content, content.trim(), content.trim_start(), content.trim_end()]
        .iter()
        .filter(|c| !c.is_empty() && body.starts_with(**c))
        .map(|c| c.len())
        .max()
        .unwrap_or(0);
    let rest = &body[skip..];
    added
        .iter()
        .filter_map(|token| rest.find(token.as_str()).map(|at| (at, token.len())))
        .min_by_key(|&(at, len)| (at, std::cmp::Reverse(len)))
        .map(|(at, len)| start + skip + at + len)
}

/// The template environment transformers builds, as minijinja can: Jinja2's whitespace
/// rules, no escaping, lenient undefined values, Python methods and printing, its globals,
/// and the bounds.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(false)
        .build()
        .expect("Jinja's default delimiters");
    env.set_syntax(syntax);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(python_formatter);
    env.set_fuel(Some(RENDER_FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.add_filter("tojson", tojson);
    env.add_function("raise_exception", raise_exception);
    env.add_filter(GENERATION_FILTER, |body: String| format!("{GENERATION_START}{body}{GENERATION_END}"));
    set_clock(&mut env, None);
    env
}

fn set_clock(env: &mut Environment<'static>, fixed: Option<LocalTime>) {
    env.add_function("strftime_now", move |format: String| strftime(&format, &fixed.unwrap_or_else(LocalTime::now)));
}

fn raise_exception(message: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, format!("{RAISED}{message}")))
}

/// A render error as Kiln's, worded for the person: the template's own message for
/// raise_exception, the line for syntax errors, the bound that stopped it.
fn template_error(e: &Error) -> KilnError {
    if let Some(message) = raised_message(e) {
        return KilnError::Template(format!("the template refuses this conversation: {message}"));
    }
    if e.kind() == ErrorKind::BadInclude {
        // what went wrong inside the included template (the template itself, by its own name)
        if let Some(inner) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<Error>()) {
            return template_error(inner);
        }
    }
    let detail = e.detail().unwrap_or_default();
    let line = e.line().map(|l| format!("line {l}: ")).unwrap_or_default();
    KilnError::Template(match e.kind() {
        ErrorKind::SyntaxError => match e.line() {
            Some(l) => format!("syntax error on line {l}: {detail}"),
            None => format!("syntax error: {detail}"),
        },
        ErrorKind::OutOfFuel => format!(
            "{line}rendering ran past the {RENDER_FUEL} steps Kiln allows a template (a loop that does not end, or far too much output)"
        ),
        ErrorKind::TemplateNotFound | ErrorKind::BadInclude => format!(
            "{line}the template includes or imports another template ({detail}); Kiln renders a chat template on its own and reads no other file"
        ),
        ErrorKind::InvalidOperation if detail.contains("recursion limit") => format!(
            "{line}the template nests or calls itself deeper than the {RECURSION_LIMIT} levels Kiln allows"
        ),
        kind => format!("{line}{kind}: {detail}"),
    })
}

/// The message a template passed to raise_exception, wherever in the error's chain it is.
fn raised_message(e: &Error) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(message) = err.downcast_ref::<Error>().and_then(|e| e.detail()?.strip_prefix(RAISED)) {
            return Some(message.to_string());
        }
        current = err.source();
    }
    None
}

/// An io::Write that refuses past [`MAX_RENDERED_BYTES`], stopping the render there.
#[derive(Default)]
struct Capped {
    buf: Vec<u8>,
    over: bool,
}

impl io::Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.len() + bytes.len() > MAX_RENDERED_BYTES {
            self.over = true;
            return Err(io::Error::other("the rendered text is too long"));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---- {% generation %} ----

/// The source with each `{% generation %}` / `{% endgeneration %}` tag made a filter block
/// (same delimiters and whitespace, so Jinja's whitespace rules and line numbers are kept),
/// and whether there was one.
fn rewrite_generation_tags(source: &str) -> (String, bool) {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    let mut found = false;
    while let Some(open) = rest.find("{%") {
        out.push_str(&rest[..open]);
        let tag = &rest[open..];
        match generation_tag(tag) {
            Some((len, replacement)) => {
                out.push_str(&replacement);
                rest = &tag[len..];
                found = true;
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    (out, found)
}

/// For a tag `{%- generation +%}` at the start of `tag`: its length and its replacement.
fn generation_tag(tag: &str) -> Option<(usize, String)> {
    let modifier = |s: &str| match s.chars().next() {
        Some(c @ ('-' | '+')) => (c.to_string(), s[1..].to_string()),
        _ => (String::new(), s.to_string()),
    };
    let (left, inner) = modifier(&tag[2..]);
    let word_at = inner.len() - inner.trim_start().len();
    let (space_before, inner) = inner.split_at(word_at);
    let (word, after) = if let Some(after) = inner.strip_prefix("endgeneration") {
        ("endfilter".to_string(), after)
    } else if let Some(after) = inner.strip_prefix("generation") {
        (format!("filter {GENERATION_FILTER}"), after)
    } else {
        return None;
    };
    if after.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
        return None; // another name, e.g. {% generations %}
    }
    let space_at = after.len() - after.trim_start().len();
    let (space_after, after) = after.split_at(space_at);
    let (right, after) = modifier(after);
    let rest = after.strip_prefix("%}")?;
    let pad = |s: &str| if s.is_empty() { " ".to_string() } else { s.to_string() };
    let replacement = format!("{{%{left}{}{word}{}{right}%}}", pad(space_before), pad(space_after));
    Some((tag.len() - rest.len(), replacement))
}

/// The noncharacters marking answers would be confused with ones in the conversation.
fn check_no_marks(messages: &[Message], special_tokens: &BTreeMap<String, String>) -> Result<()> {
    let marked = |s: &str| s.contains([GENERATION_START, GENERATION_END]);
    if messages.iter().any(|m| marked(&m.content)) || special_tokens.values().any(|v| marked(v)) {
        return Err(KilnError::Data(
            "the conversation holds U+FDD0 or U+FDD1, noncharacters Kiln uses to find the answers a template marks"
                .into(),
        ));
    }
    Ok(())
}

/// The text without the generation marks, and the byte spans they enclosed, in order.
fn strip_generation_marks(text: &str) -> Result<(String, Vec<Range<usize>>)> {
    let unpaired = || KilnError::Template("the template's {% generation %} blocks do not pair up".into());
    let mut out = String::with_capacity(text.len());
    let (mut open, mut spans) = (Vec::new(), Vec::new());
    for c in text.chars() {
        match c {
            GENERATION_START => open.push(out.len()),
            GENERATION_END => spans.push(open.pop().ok_or_else(unpaired)?..out.len()),
            c => out.push(c),
        }
    }
    if !open.is_empty() {
        return Err(unpaired());
    }
    spans.sort_by_key(|s| (s.start, s.end));
    Ok((out, spans))
}

// ---- Python's printing and json.dumps ----

/// `{{ value }}` as Python's str(): None, True, floats as repr, lists and dicts as repr.
fn python_formatter(out: &mut Output, _state: &mut State, value: &Value) -> std::result::Result<(), Error> {
    if matches!(value.kind(), ValueKind::String | ValueKind::Undefined) {
        return write!(out, "{value}").map_err(Error::from);
    }
    let mut text = String::new();
    py_str(&mut text, value, 0)?;
    out.write_str(&text).map_err(Error::from)
}

fn too_deep() -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("a value nested over {MAX_VALUE_DEPTH} deep"))
}

/// Printing or tojson of a value that refers to the same big one many times is refused at
/// the rendered-text cap (fuel pays only for values created, not for their printed copies).
fn check_len(out: &str) -> std::result::Result<(), Error> {
    if out.len() > MAX_RENDERED_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("a value prints to over {} MiB", MAX_RENDERED_BYTES >> 20),
        ));
    }
    Ok(())
}

/// Appends Python's str() of `value`.
fn py_str(out: &mut String, value: &Value, depth: usize) -> std::result::Result<(), Error> {
    if depth > MAX_VALUE_DEPTH {
        return Err(too_deep());
    }
    match value.kind() {
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number if !value.is_integer() => match f64::try_from(value.clone()) {
            Ok(f) if f.is_nan() => out.push_str("nan"),
            Ok(f) if f.is_infinite() => out.push_str(if f > 0.0 { "inf" } else { "-inf" }),
            Ok(f) => out.push_str(&py_float(f)),
            Err(_) => out.push_str(&value.to_string()),
        },
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, item) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(out, &item, depth + 1)?;
                check_len(out)?;
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(out, &key, depth + 1)?;
                out.push_str(": ");
                py_repr(out, &value.get_item(&key)?, depth + 1)?;
                check_len(out)?;
            }
            out.push('}');
        }
        _ => out.push_str(&value.to_string()),
    }
    check_len(out)
}

/// Appends Python's repr() of `value` (strings quoted, the rest as str()).
fn py_repr(out: &mut String, value: &Value, depth: usize) -> std::result::Result<(), Error> {
    match value.as_str() {
        Some(s) if value.kind() == ValueKind::String => {
            out.push_str(&py_repr_str(s));
            check_len(out)
        }
        _ => py_str(out, value, depth),
    }
}

/// Python's repr of a string: single quotes unless it holds one and no double quote;
/// backslash escapes for the quote, backslashes and characters that do not print.
fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !prints(c) => {
                let code = c as u32;
                let _ = match code {
                    0..=0xFF => write!(out, "\\x{code:02x}"),
                    0x100..=0xFFFF => write!(out, "\\u{code:04x}"),
                    _ => write!(out, "\\U{code:08x}"),
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's str.isprintable, near enough: control and format characters and separators
/// other than the space are escaped by repr.
fn prints(c: char) -> bool {
    c == ' '
        || !(c.is_control()
            || c.is_whitespace()
            || matches!(c, '\u{AD}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'))
}

/// Python's repr of a finite float: the shortest digits that read back, in positional
/// notation for exponents -4..16 and scientific (two-digit exponent at least) outside.
fn py_float(f: f64) -> String {
    let sci = format!("{f:e}"); // shortest round-trip digits: "-1.2345e-7", "3e0"
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e}'s exponent is a number");
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        if point <= 0 {
            format!("{sign}0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{sign}{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!("{sign}{}.{}", &digits[..point as usize], &digits[point as usize..])
        }
    } else {
        let fraction = if digits.len() > 1 { format!(".{}", &digits[1..]) } else { String::new() };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{}{fraction}e{exp_sign}{:02}", &digits[..1], exp.abs())
    }
}

/// transformers' tojson: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, the same positional order and keywords.
fn tojson(
    value: &Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> std::result::Result<Value, Error> {
    let ensure_ascii = kwargs.get::<Option<Value>>("ensure_ascii")?.or(ensure_ascii).is_some_and(|v| v.is_true());
    let indent = match kwargs.get::<Option<Value>>("indent")?.or(indent).filter(|v| !v.is_none()) {
        None => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.to_string()),
        Some(v) => match v.as_i64() {
            Some(n) => Some(" ".repeat(n.clamp(0, 64) as usize)),
            None => return Err(Error::new(ErrorKind::InvalidOperation, "tojson's indent is a number or a string")),
        },
    };
    let separators = match kwargs.get::<Option<Value>>("separators")?.filter(|v| !v.is_none()) {
        None => None,
        Some(v) => {
            let parts: Vec<String> = v.try_iter()?.map(|p| p.to_string()).collect();
            match <[String; 2]>::try_from(parts) {
                Ok([item, key]) => Some((item, key)),
                Err(_) => return Err(Error::new(ErrorKind::InvalidOperation, "tojson's separators are two strings")),
            }
        }
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let (item_sep, key_sep) = separators.unwrap_or_else(|| {
        let item = if indent.is_some() { "," } else { ", " };
        (item.to_string(), ": ".to_string())
    });
    let json = Json { ensure_ascii, indent, item_sep, key_sep, sort_keys };
    let mut out = String::new();
    json.write(&mut out, value, 0)?;
    check_len(&out)?;
    Ok(Value::from(out))
}

/// Python's json.dumps settings.
struct Json {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

impl Json {
    fn write(&self, out: &mut String, value: &Value, depth: usize) -> std::result::Result<(), Error> {
        if depth > MAX_VALUE_DEPTH {
            return Err(too_deep());
        }
        match value.kind() {
            ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => out.push_str(&json_number(value)),
            ValueKind::String => self.write_str(out, value.as_str().unwrap_or_default()),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                self.write_container(out, '[', ']', items.len(), depth, |out, i| {
                    self.write(out, &items[i], depth + 1)
                })?;
            }
            ValueKind::Map => {
                let mut entries = Vec::new();
                for key in value.try_iter()? {
                    entries.push((json_key(&key)?, value.get_item(&key)?));
                }
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.write_container(out, '{', '}', entries.len(), depth, |out, i| {
                    self.write_str(out, &entries[i].0);
                    out.push_str(&self.key_sep);
                    self.write(out, &entries[i].1, depth + 1)
                })?;
            }
            kind => {
                let kind = if kind == ValueKind::Undefined { "Undefined".to_string() } else { kind.to_string() };
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("Object of type {kind} is not JSON serializable"),
                ));
            }
        }
        Ok(())
    }

    /// `[a, b]`, or with an indent each item on its own line, the closer back one level.
    fn write_container(
        &self,
        out: &mut String,
        open: char,
        close: char,
        len: usize,
        depth: usize,
        mut item: impl FnMut(&mut String, usize) -> std::result::Result<(), Error>,
    ) -> std::result::Result<(), Error> {
        out.push(open);
        if len == 0 {
            out.push(close);
            return Ok(());
        }
        let newline = |level: usize| self.indent.as_ref().map(|unit| format!("\n{}", unit.repeat(level)));
        for i in 0..len {
            if i > 0 {
                out.push_str(&self.item_sep);
            }
            if let Some(nl) = newline(depth + 1) {
                out.push_str(&nl);
            }
            item(out, i)?;
            check_len(out)?;
        }
        if let Some(nl) = newline(depth) {
            out.push_str(&nl);
        }
        out.push(close);
        Ok(())
    }

    fn write_str(&self, out: &mut String, s: &str) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && (c as u32) > 0x7E) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        let _ = write!(out, "\\u{unit:04x}");
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

fn json_number(value: &Value) -> String {
    if value.is_integer() {
        return value.to_string();
    }
    match f64::try_from(value.clone()) {
        Ok(f) if f.is_nan() => "NaN".into(),
        Ok(f) if f.is_infinite() => if f > 0.0 { "Infinity" } else { "-Infinity" }.into(),
        Ok(f) => py_float(f),
        Err(_) => value.to_string(),
    }
}

/// Python's json keys: strings, and numbers, booleans and None written as JSON would.
fn json_key(key: &Value) -> std::result::Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_string()),
        ValueKind::Number => Ok(json_number(key)),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.into()),
        ValueKind::None => Ok("null".into()),
        kind => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("keys must be str, int, float, bool or None, not {kind}"),
        )),
    }
}

// ---- strftime_now ----

impl LocalTime {
    /// Now, in the local time zone (the browser's on the web).
    #[cfg(target_arch = "wasm32")]
    pub fn now() -> LocalTime {
        let d = js_sys::Date::new_0();
        LocalTime {
            year: d.get_full_year() as i32,
            month: d.get_month() + 1,
            day: d.get_date(),
            hour: d.get_hours(),
            minute: d.get_minutes(),
            second: d.get_seconds(),
        }
    }

    /// Now, in the local time zone.
    #[cfg(all(unix, not(target_arch = "wasm32")))]
    pub fn now() -> LocalTime {
        // SAFETY: time(NULL) only returns the time; localtime_r writes the zeroed tm we own
        // and reads nothing else of ours.
        let tm = unsafe {
            let t = libc::time(std::ptr::null_mut());
            let mut tm: libc::tm = std::mem::zeroed();
            if libc::localtime_r(&t, &mut tm).is_null() {
                return LocalTime::utc_now();
            }
            tm
        };
        LocalTime {
            year: tm.tm_year + 1900,
            month: tm.tm_mon as u32 + 1,
            day: tm.tm_mday as u32,
            hour: tm.tm_hour as u32,
            minute: tm.tm_min as u32,
            second: tm.tm_sec.min(59) as u32,
        }
    }

    /// Now, in UTC (where the local zone cannot be read).
    #[cfg(not(all(unix, not(target_arch = "wasm32"))))]
    #[cfg(not(target_arch = "wasm32"))]
    pub fn now() -> LocalTime {
        LocalTime::utc_now()
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn utc_now() -> LocalTime {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let s = secs.rem_euclid(86_400) as u32;
        LocalTime { year, month, day, hour: s / 3600, minute: s / 60 % 60, second: s % 60 }
    }

    /// 0 for Monday … 6 for Sunday.
    fn weekday(&self) -> u32 {
        (days_from_civil(self.year, self.month, self.day) + 3).rem_euclid(7) as u32
    }

    /// 1 for 1 January.
    fn day_of_year(&self) -> u32 {
        (days_from_civil(self.year, self.month, self.day) - days_from_civil(self.year, 1, 1) + 1) as u32
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = year as i64 - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(not(target_arch = "wasm32"))]
fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    ((yoe + era * 400 + i64::from(month <= 2)) as i32, month, day)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// C's strftime in the C locale, as Python's datetime.strftime calls it on Linux: the usual
/// directives, glibc's `-` flag (no padding), unknown directives kept as written.
pub fn strftime(format: &str, t: &LocalTime) -> String {
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = chars.next();
        let unpadded = spec == Some('-');
        if unpadded {
            spec = chars.next();
        }
        let num = |n: u32, width: usize| if unpadded { n.to_string() } else { format!("{n:0width$}") };
        let hour12 = if t.hour % 12 == 0 { 12 } else { t.hour % 12 };
        let piece = match spec {
            Some('a') => WEEKDAYS[t.weekday() as usize][..3].to_string(),
            Some('A') => WEEKDAYS[t.weekday() as usize].to_string(),
            Some('b' | 'h') => MONTHS[t.month as usize - 1][..3].to_string(),
            Some('B') => MONTHS[t.month as usize - 1].to_string(),
            Some('d') => num(t.day, 2),
            Some('e') => format!("{:2}", t.day),
            Some('m') => num(t.month, 2),
            Some('y') => num(t.year.rem_euclid(100) as u32, 2),
            Some('Y') => t.year.to_string(),
            Some('H') => num(t.hour, 2),
            Some('I') => num(hour12, 2),
            Some('M') => num(t.minute, 2),
            Some('S') => num(t.second, 2),
            Some('p') => if t.hour < 12 { "AM" } else { "PM" }.to_string(),
            Some('j') => num(t.day_of_year(), 3),
            Some('u') => (t.weekday() + 1).to_string(),
            Some('w') => ((t.weekday() + 1) % 7).to_string(),
            Some('D' | 'x') => strftime("%m/%d/%y", t),
            Some('F') => strftime("%Y-%m-%d", t),
            Some('T' | 'X') => strftime("%H:%M:%S", t),
            Some('R') => strftime("%H:%M", t),
            Some('c') => strftime("%a %b %e %H:%M:%S %Y", t),
            Some('z' | 'Z') => String::new(), // a naive datetime has no zone
            Some('n') => "\n".into(),
            Some('t') => "\t".into(),
            Some('%') => "%".into(),
            Some(other) => format!("%{}{other}", if unpadded { "-" } else { "" }),
            None => format!("%{}", if unpadded { "-" } else { "" }),
        };
        out.push_str(&piece);
    }
    out
}

// ---- tokenizer_config.json ----

fn tokenizer_config(json: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
    if json.len() > MAX_TOKENIZER_CONFIG_BYTES {
        return Err(KilnError::Tokenizer(format!(
            "tokenizer_config.json is over the {} MiB Kiln reads",
            MAX_TOKENIZER_CONFIG_BYTES >> 20
        )));
    }
    match serde_json::from_str(json) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(KilnError::Tokenizer("tokenizer_config.json is not a JSON object".into())),
        Err(e) => Err(KilnError::Tokenizer(format!("tokenizer_config.json is not JSON: {e}"))),
    }
}

/// tokenizer_config.json's `chat_template`: a string, or `[{name, template}]` whose
/// "default" transformers renders when no tools are given.
fn config_template(config: &serde_json::Map<String, serde_json::Value>) -> Result<String> {
    let named = |list: &Vec<serde_json::Value>| {
        list.iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_string))
    };
    match config.get("chat_template") {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(serde_json::Value::Array(list)) => named(list).ok_or_else(|| {
            KilnError::Template("tokenizer_config.json lists chat templates but none named \"default\"".into())
        }),
        _ => Err(KilnError::Template(
            "the model has no chat template (no chat_template.jinja, nor chat_template in tokenizer_config.json)"
                .into(),
        )),
    }
}

/// The special-token strings transformers passes to a template (its `special_tokens_map`):
/// each of [`SPECIAL_TOKEN_NAMES`] the config sets, as a string or an AddedToken's content.
pub fn special_tokens_from_config(config_json: &str) -> Result<Vec<(String, String)>> {
    Ok(special_tokens_of(&tokenizer_config(config_json)?))
}

fn special_tokens_of(config: &serde_json::Map<String, serde_json::Value>) -> Vec<(String, String)> {
    SPECIAL_TOKEN_NAMES
        .iter()
        .filter_map(|&name| {
            let value = config.get(name)?;
            let content = value.as_str().or_else(|| value.get("content")?.as_str())?;
            Some((name.to_string(), content.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (1.5e-7, "1.5e-07"),
            (0.00625, "0.00625"),
        ];
        for (f, want) in cases {
            assert_eq!(py_float(f), want, "{f}");
        }
    }

    #[test]
    fn dates_and_weekdays() {
        let t = LocalTime { year: 2026, month: 3, day: 5, hour: 14, minute: 7, second: 9 };
        assert_eq!(strftime("%d %b %Y", &t), "05 Mar 2026");
        assert_eq!(
            strftime("%A %-d %B %y, %I:%M:%S %p, day %j, %%", &t),
            "Thursday 5 March 26, 02:07:09 PM, day 064, %"
        );
        assert_eq!(strftime("%F %T %q", &t), "2026-03-05 14:07:09 %q");
        #[cfg(not(target_arch = "wasm32"))]
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn generation_tags_become_filter_blocks_keeping_whitespace_control() {
        let (src, found) = rewrite_generation_tags("a{%- generation %}b{% endgeneration -%}c{% generations %}");
        assert!(found);
        assert_eq!(src, "a{%- filter kiln_generation %}b{% endfilter -%}c{% generations %}");
        assert_eq!(
            rewrite_generation_tags("{%generation%}x{%endgeneration%}").0,
            "{% filter kiln_generation %}x{% endfilter %}"
        );
        assert!(!rewrite_generation_tags("{% if x %}{% endif %}").1);
    }
}
