//! Imported models' chat templates: Kiln's Jinja rendering, ids and assistant mask equal
//! transformers' on the published SmolLM2, Qwen2.5 and Llama-3.2/3.3 templates
//! (tests/fixtures/chat_templates, made by tests/golden/make_chat_template_fixtures.py), and
//! a hostile template is stopped by its bounds with a clear error.

use std::path::PathBuf;

use kiln::data::chat::{Message, Role};
use kiln::data::template::{
    special_tokens_from_config, ChatTemplate, LocalTime, MAX_RENDERED_BYTES, MAX_TEMPLATE_BYTES,
};
use kiln::error::KilnError;
use kiln::tokenizer::{Tokenizer, TokenizerKind};
use serde::Deserialize;

const FIXTURES: [&str; 5] =
    ["smollm2-instruct", "qwen2.5-instruct", "llama-3.3-instruct", "llama-3.2-instruct", "chatml-generation"];

#[derive(Deserialize)]
struct Fixture {
    special_tokens: std::collections::BTreeMap<String, String>,
    date: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    messages: Vec<Message>,
    add_generation_prompt: bool,
    text: String,
    ids: Vec<u32>,
    mask: Vec<bool>,
}

fn folder(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates").join(name)
}

fn read(name: &str, file: &str) -> String {
    std::fs::read_to_string(folder(name).join(file)).unwrap()
}

/// "2026-03-05T14:07:09"
fn local_time(date: &str) -> LocalTime {
    let n = |range: std::ops::Range<usize>| date[range].parse::<u32>().unwrap();
    LocalTime {
        year: n(0..4) as i32,
        month: n(5..7),
        day: n(8..10),
        hour: n(11..13),
        minute: n(14..16),
        second: n(17..19),
    }
}

fn fixture(name: &str) -> (ChatTemplate, Tokenizer, Fixture) {
    let fixture: Fixture = serde_json::from_str(&read(name, "cases.json")).unwrap();
    let pairs: Vec<(&str, &str)> = fixture.special_tokens.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let template =
        ChatTemplate::new(&read(name, "chat_template.jinja"), &pairs).unwrap().with_time(local_time(&fixture.date));
    let tokenizer = Tokenizer::from_pretrained(&read(name, "tokenizer.json")).unwrap();
    (template, tokenizer, fixture)
}

#[test]
fn published_templates_render_encode_and_mask_as_transformers_does() {
    let mut total = 0;
    for name in FIXTURES {
        let (template, tokenizer, fixture) = fixture(name);
        assert_eq!(template.has_generation_marks(), name == "chatml-generation");
        for case in &fixture.cases {
            let what = format!("{name} / {}", case.name);
            let text = template.render(&case.messages, case.add_generation_prompt).unwrap();
            assert_eq!(text, case.text, "{what}: rendered text");
            let rendered = template.encode_with(&tokenizer, &case.messages, case.add_generation_prompt).unwrap();
            assert_eq!(rendered.ids, case.ids, "{what}: ids");
            assert_eq!(rendered.supervised, case.mask, "{what}: assistant mask");
            if case.add_generation_prompt {
                assert_eq!(template.encode_prompt(&tokenizer, &case.messages).unwrap(), case.ids, "{what}");
            } else {
                assert_eq!(template.encode(&tokenizer, &case.messages).unwrap(), rendered, "{what}");
            }
        }
        let masked: usize = fixture.cases.iter().map(|c| c.mask.iter().filter(|&&m| m).count()).sum();
        println!("{name}: {} cases equal transformers' (text, ids, mask; {masked} masked tokens)", fixture.cases.len());
        total += fixture.cases.len();
    }
    println!("{total} cases in {} templates", FIXTURES.len());
    assert!(total >= 30);
}

#[test]
fn the_mask_covers_each_answer_and_its_end_token_only() {
    let (template, tokenizer, _) = fixture("smollm2-instruct");
    let im_end = tokenizer.token_to_id("<|im_end|>").unwrap();
    let messages = [msg(Role::User, "Hi"), msg(Role::Assistant, "Hello there")];
    let rendered = template.encode(&tokenizer, &messages).unwrap();
    let masked: Vec<u32> =
        rendered.ids.iter().zip(&rendered.supervised).filter(|(_, &m)| m).map(|(&id, _)| id).collect();
    assert_eq!(tokenizer.decode(&masked[..masked.len() - 1]).unwrap(), "Hello there");
    assert_eq!(*masked.last().unwrap(), im_end);
    // the newline after <|im_end|> closes the turn but is not the assistant's to say
    assert_eq!(rendered.supervised.last(), Some(&false));
}

#[test]
fn a_control_token_string_inside_an_answer_does_not_end_it_early() {
    // transformers turns the string into the control token; the answer still runs to the real end
    let (template, tokenizer, _) = fixture("qwen2.5-instruct");
    let im_end = tokenizer.token_to_id("<|im_end|>").unwrap();
    let messages = [msg(Role::User, "How do turns end?"), msg(Role::Assistant, "With <|im_end|> and a newline.")];
    let rendered = template.encode(&tokenizer, &messages).unwrap();
    let ends: Vec<usize> = rendered.ids.iter().enumerate().filter(|(_, &id)| id == im_end).map(|(i, _)| i).collect();
    assert_eq!(ends.len(), 4, "system, user, inside the answer, after it");
    assert!(rendered.supervised[ends[2]] && rendered.supervised[ends[3]]);
    assert!(rendered.supervised[ends[2]..=ends[3]].iter().all(|&m| m));
    assert_eq!(tokenizer.control_token_in("With <|im_end|>"), Some("<|im_end|>".into()));
}

#[test]
fn special_tokens_and_template_come_from_a_tokenizer_config() {
    let config = r#"{"bos_token": {"content": "<|begin_of_text|>", "special": true}, "eos_token": "<|eot_id|>",
        "pad_token": null, "chat_template": [{"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"}]}"#;
    let pairs = special_tokens_from_config(config).unwrap();
    assert_eq!(pairs, [("bos_token".into(), "<|begin_of_text|>".into()), ("eos_token".into(), "<|eot_id|>".into())]);
    let template = ChatTemplate::from_tokenizer_config(config, None).unwrap();
    assert_eq!(template.render(&[msg(Role::User, "hi")], false).unwrap(), "<|begin_of_text|>hi<|eot_id|>");
    let template = ChatTemplate::from_tokenizer_config(config, Some("{{ eos_token }}")).unwrap();
    assert_eq!(template.render(&[msg(Role::User, "hi")], false).unwrap(), "<|eot_id|>");
    let err = ChatTemplate::from_tokenizer_config(r#"{"eos_token": "</s>"}"#, None).err().unwrap();
    assert!(matches!(err, KilnError::Template(ref m) if m.contains("no chat template")), "{err}");
}

#[test]
fn python_printing_methods_and_tojson_match_jinja2_in_transformers() {
    // expected strings from transformers' own Jinja2 environment (5.25, Jinja2 3.1.6)
    let cases = [
        (
            r#"{{ {'b': 1, 'a': [1.5, 'é"\n', none, true, 1e-05, 100000000000000000.0]} | tojson }}"#,
            "{\"b\": 1, \"a\": [1.5, \"é\\\"\\n\", null, true, 1e-05, 1e+17]}",
        ),
        ("{{ {'b': {'x': []}, 'a': [1, {}]} | tojson(indent=2) }}", "{\n  \"b\": {\n    \"x\": []\n  },\n  \"a\": [\n    1,\n    {}\n  ]\n}"),
        ("{{ {'b': 1, 'a': 2} | tojson(sort_keys=true, separators=(',', ':')) }}", "{\"a\":2,\"b\":1}"),
        ("{{ 'ü\\t\\u2028' | tojson(ensure_ascii=true) }}|{{ 'ü' | tojson }}", "\"\\u00fc\\t\\u2028\"|\"ü\""),
        (
            r#"{{ none }}|{{ true }}|{{ [1, 'a', none, "it's"] }}|{{ {'k': 2.0, 'n': false} }}|{{ 0.1 + 0.2 }}"#,
            "None|True|[1, 'a', None, \"it's\"]|{'k': 2.0, 'n': False}|0.30000000000000004",
        ),
        (
            "{{ '  hi '.strip() }}|{{ 'abc'.startswith('a') }}|{% for k, v in {'x': 1}.items() %}{{ k }}={{ v }}{% endfor %}|{{ 'a,b'.split(',') }}",
            "hi|True|x=1|['a', 'b']",
        ),
        ("{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}", "02"),
        ("{%- set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}", "3"),
        ("  {% if true %}\n  x\n  {% endif %}\ny\n", "  x\ny"),
    ];
    for (source, want) in cases {
        let template = ChatTemplate::new(source, &[]).unwrap();
        assert_eq!(template.render(&[msg(Role::User, "hi")], false).unwrap(), want, "{source}");
    }
}

#[test]
fn strftime_now_reads_the_injected_date_or_the_clock() {
    let template = ChatTemplate::new("{{ strftime_now('%d %b %Y') }}", &[]).unwrap();
    let today = template.render(&[msg(Role::User, "hi")], false).unwrap();
    assert_eq!(today.len(), 11, "{today}");
    let fixed = template.with_time(LocalTime { year: 2024, month: 7, day: 26, hour: 9, minute: 0, second: 0 });
    assert_eq!(fixed.render(&[msg(Role::User, "hi")], false).unwrap(), "26 Jul 2024");
}

// ---- hostile templates ----

fn template_error(source: &str) -> String {
    let messages = [msg(Role::User, "hi")];
    let err = match ChatTemplate::new(source, &[]) {
        Ok(template) => template.render(&messages, true).expect_err("the template should fail"),
        Err(e) => e,
    };
    println!("{source:.60}… -> {err}");
    match err {
        KilnError::Template(m) => m,
        other => panic!("not a template error: {other:?}"),
    }
}

#[test]
fn an_endless_loop_is_stopped_by_fuel() {
    let started = std::time::Instant::now();
    let m = template_error("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}");
    assert!(m.contains("steps Kiln allows"), "{m}");
    let m = template_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
    assert!(m.contains("calls itself deeper than the 100 levels"), "{m}");
    println!("stopped in {:?}", started.elapsed());
    assert!(started.elapsed().as_secs() < 20);
}

#[test]
fn output_past_the_cap_is_refused() {
    let m = template_error(&format!("{{{{ 'x' * {} }}}}", MAX_RENDERED_BYTES + 1));
    assert!(m.contains("MiB, the most Kiln renders"), "{m}");
    let m = template_error("{% for i in range(100000) %}{{ 'y' * 100 }}{% endfor %}");
    assert!(m.contains("MiB, the most Kiln renders"), "{m}");
    // one big value referred to many times: printed and tojson copies are bounded too
    let many = "{% set a = 'x' * 100000 %}{% set ns = namespace(b=[]) %}{% for i in range(100) %}{% set ns.b = ns.b + [a] %}{% endfor %}";
    for print in ["{{ ns.b }}", "{% set j = ns.b | tojson %}", "{% set j = ns.b | tojson(indent=2) %}"] {
        let m = template_error(&format!("{many}{print}"));
        assert!(m.contains("a value prints to over 4 MiB"), "{m}");
    }
    // just under the cap renders
    let template = ChatTemplate::new(&format!("{{{{ 'x' * {} }}}}", MAX_RENDERED_BYTES), &[]).unwrap();
    assert_eq!(template.render(&[msg(Role::User, "hi")], false).unwrap().len(), MAX_RENDERED_BYTES);
}

#[test]
fn a_template_over_the_size_cap_is_refused() {
    let source = format!("{{# {} #}}", "x".repeat(MAX_TEMPLATE_BYTES));
    let m = template_error(&source);
    assert!(m.contains("bytes, over the 64 KiB Kiln reads"), "{m}");
    // deeply nested expressions stop the parser, not the stack
    let nested = format!("{{{{ {}1{} }}}}", "(".repeat(20_000), ")".repeat(20_000));
    let m = template_error(&nested);
    assert!(m.contains("syntax error"), "{m}");
}

#[test]
fn include_and_import_read_nothing() {
    for source in [
        "{% include '/etc/passwd' %}",
        "{% include 'tokenizer_config.json' %}",
        "{% import 'macros.jinja' as m %}{{ m.x() }}",
        "{% from '../secrets' import key %}{{ key }}",
        "{% extends 'base.html' %}",
    ] {
        let m = template_error(source);
        assert!(m.contains("reads no other file"), "{source}: {m}");
    }
    // the template's own name leads back to itself, which the recursion limit stops
    let m = template_error("{% include 'chat_template' %}");
    assert!(m.contains("calls itself deeper than the 100 levels"), "{m}");
}

#[test]
fn raise_exception_surfaces_the_templates_message() {
    let source = "{% if messages[0]['role'] == 'user' %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}";
    let m = template_error(source);
    assert_eq!(
        m,
        "the template refuses this conversation: Conversation roles must alternate user/assistant/user/assistant/..."
    );
}

#[test]
fn a_syntax_error_names_its_line() {
    let m = template_error("{{ bos_token }}\n{% for m in messages %}\n{{ m.content }\n{% endfor %}");
    assert!(m.starts_with("syntax error on line 3"), "{m}");
    let m = template_error("{% if true %}\nno end");
    assert!(m.starts_with("syntax error on line"), "{m}");
    let m = template_error("ok\n{{ nope(1) }}");
    assert!(m.starts_with("line 2:"), "{m}");
}

#[test]
fn an_answer_kiln_cannot_place_is_refused_clearly() {
    let (_, tokenizer, _) = fixture("smollm2-instruct");
    let messages = [msg(Role::User, "Hi"), msg(Role::Assistant, "Hello")];
    // a generation prompt that is not how the answer's turn starts
    let odd = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>bot\n{% endif %}";
    let err = ChatTemplate::new(odd, &[]).unwrap().encode(&tokenizer, &messages).unwrap_err();
    assert!(matches!(err, KilnError::Template(ref m) if m.contains("cannot tell where the answer begins")), "{err}");
    // no end-of-turn token after the answer
    let bare = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}";
    let err = ChatTemplate::new(bare, &[]).unwrap().encode(&tokenizer, &messages).unwrap_err();
    assert!(matches!(err, KilnError::Template(ref m) if m.contains("no end-of-turn token")), "{err}");
    // Kiln's own tokenizers keep control tokens as text: refused
    let kiln = Tokenizer::train(&["some text to learn from, some text"], TokenizerKind::Char, None).unwrap();
    let err = ChatTemplate::new(odd, &[]).unwrap().encode(&kiln, &messages).unwrap_err();
    assert!(matches!(err, KilnError::Config(_)), "{err}");
    // an empty conversation, as transformers refuses it
    let err = ChatTemplate::new(odd, &[]).unwrap().render(&[], false).unwrap_err();
    assert!(matches!(err, KilnError::Data(_)), "{err}");
}

#[test]
fn special_tokens_may_not_hide_the_conversation() {
    let err = ChatTemplate::new("{{ messages }}", &[("messages", "x")]).err().unwrap();
    assert!(matches!(err, KilnError::Config(_)), "{err}");
}

fn msg(role: Role, content: &str) -> Message {
    Message { role, content: content.into() }
}
