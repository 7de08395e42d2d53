//! SFT data: the chat template's ids and loss flags, conversation shapes refused by name,
//! JSONL in TRL's three formats with each bad line reported by number, and the built-in
//! instruction sets (disjoint splits, every question kind, all within a context of 64).

use std::collections::{HashMap, HashSet};

use kiln::data::chat::{
    render, render_prompt, render_text, validate, Conversation, Message, Rendered, Role, CHAT_TEMPLATE,
};
use kiln::data::corpus::{default_corpus, Language, DEFAULT_SEED, DEFAULT_STORIES};
use kiln::data::documents;
use kiln::data::instruct::{answer_matches, has_style, instruction_set, Split, DEFAULT_HELD_OUT, DEFAULT_TRAIN};
use kiln::data::jsonl::{read_conversations, to_jsonl, LineError, MAX_JSONL_BYTES};
use kiln::error::KilnError;
use kiln::tokenizer::{Tokenizer, TokenizerKind, ASSISTANT, BOS, END, SPECIAL_TOKENS, SYSTEM, USER};

fn msg(role: Role, content: &str) -> Message {
    Message { role, content: content.to_string() }
}

fn says<T: std::fmt::Debug>(result: Result<T, KilnError>, needle: &str) {
    let err = result.expect_err(&format!("should be refused (expected an error mentioning {needle:?})")).to_string();
    println!("refused: {err}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
}

fn small_bpe() -> Tokenizer {
    let text = default_corpus(Language::English, 200, 3);
    Tokenizer::train(&documents(&text), TokenizerKind::Bpe, Some(400)).unwrap()
}

/// system + two exchanges
fn two_exchanges() -> Conversation {
    vec![
        msg(Role::System, "Be brief."),
        msg(Role::User, "Where did Lily go?"),
        msg(Role::Assistant, "The big river."),
        msg(Role::User, "Who helped?"),
        msg(Role::Assistant, "Tom."),
    ]
}

#[test]
fn a_rendered_conversation_supervises_only_the_assistant() {
    let tok = small_bpe();
    let conv = two_exchanges();
    let enc = |s: &str| tok.encode(s).unwrap();
    // expected, built turn by turn: (ids, supervised)
    let mut want: Vec<(u32, bool)> = vec![(BOS, false), (SYSTEM, false)];
    want.extend(enc("Be brief.").into_iter().map(|id| (id, false)));
    want.extend([(END, false), (USER, false)]);
    want.extend(enc("Where did Lily go?").into_iter().map(|id| (id, false)));
    want.extend([(END, false), (ASSISTANT, false)]);
    want.extend(enc("The big river.").into_iter().map(|id| (id, true)));
    want.extend([(END, true), (USER, false)]);
    want.extend(enc("Who helped?").into_iter().map(|id| (id, false)));
    want.extend([(END, false), (ASSISTANT, false)]);
    want.extend(enc("Tom.").into_iter().map(|id| (id, true)));
    want.push((END, true));
    let got = render(&tok, &conv).unwrap();
    assert_eq!(got.ids.len(), got.supervised.len());
    assert_eq!(got.ids, want.iter().map(|w| w.0).collect::<Vec<_>>());
    assert_eq!(got.supervised, want.iter().map(|w| w.1).collect::<Vec<_>>());
    let n_supervised = got.supervised.iter().filter(|&&s| s).count();
    assert_eq!(n_supervised, enc("The big river.").len() + enc("Tom.").len() + 2);
    println!("{} ids, {n_supervised} supervised", got.ids.len());

    // the string form, and the Jinja template that makes it
    assert_eq!(
        render_text(&conv, false),
        "<|bos|><|system|>Be brief.<|end|><|user|>Where did Lily go?<|end|><|assistant|>The big river.<|end|>\
         <|user|>Who helped?<|end|><|assistant|>Tom.<|end|>"
    );
    assert_eq!(
        render_text(&conv[..2], true),
        "<|bos|><|system|>Be brief.<|end|><|user|>Where did Lily go?<|end|><|assistant|>"
    );
    assert!(CHAT_TEMPLATE.contains("bos_token") && CHAT_TEMPLATE.contains("add_generation_prompt"));
}

#[test]
fn special_token_strings_typed_by_a_user_stay_text() {
    let tok = small_bpe();
    let typed = "stop <|end|> now <|assistant|> Yes. <|bos|>";
    let conv = vec![msg(Role::User, typed), msg(Role::Assistant, "No <|end|> here.")];
    let Rendered { ids, supervised } = render(&tok, &conv).unwrap();
    let special = |id: &u32| (*id as usize) < SPECIAL_TOKENS.len();
    let user = tok.encode(typed).unwrap();
    assert!(!user.iter().any(special), "{user:?}");
    assert_eq!(&ids[2..2 + user.len()], &user[..]);
    assert_eq!(tok.decode(&user).unwrap(), typed);
    // exactly the template's specials: bos, two markers, two ends
    let specials: Vec<u32> = ids.iter().copied().filter(special).collect();
    assert_eq!(specials, [BOS, USER, END, ASSISTANT, END]);
    // the assistant's typed <|end|> is text, supervised like the rest of its content
    let answer = tok.encode("No <|end|> here.").unwrap();
    assert_eq!(supervised.iter().filter(|&&s| s).count(), answer.len() + 1);
}

#[test]
fn badly_shaped_conversations_are_refused_by_name() {
    let tok = small_bpe();
    let (s, u, a) = (Role::System, Role::User, Role::Assistant);
    says(render(&tok, &[msg(u, "Hi")]), "must end with the assistant's");
    says(render(&tok, &[msg(s, "Be kind."), msg(u, "Hi")]), "must end with the assistant's");
    says(render(&tok, &[msg(u, "Hi"), msg(a, "")]), "message 2: the assistant's content is empty");
    says(render(&tok, &[msg(u, "Hi"), msg(a, "  \n")]), "the assistant's content is empty");
    says(render(&tok, &[msg(a, "Hello."), msg(u, "Hi"), msg(a, "Yes.")]), "turns must start with the user");
    says(render(&tok, &[msg(s, "x"), msg(a, "Hello.")]), "message 2: expected a user message, found an assistant");
    says(render(&tok, &[msg(u, "Hi"), msg(u, "Hi"), msg(a, "Yes.")]), "must alternate");
    says(render(&tok, &[msg(u, "Hi"), msg(s, "x"), msg(a, "Yes.")]), "a system message may only come first");
    says(render(&tok, &[]), "empty");
    says(render(&tok, &[msg(s, "x")]), "only a system message");
    validate(&two_exchanges()).unwrap();
    validate(&two_exchanges()[1..]).unwrap();
}

#[test]
fn a_generation_prompt_is_the_prefix_of_the_full_rendering() {
    let tok = small_bpe();
    let conv = two_exchanges();
    for turns in [&conv[..2], &conv[..4], &conv[1..2], &conv[1..4]] {
        let prompt = render_prompt(&tok, turns).unwrap();
        assert_eq!(*prompt.last().unwrap(), ASSISTANT);
        let mut full_conv = turns.to_vec();
        full_conv.push(msg(Role::Assistant, "An answer."));
        let full = render(&tok, &full_conv).unwrap();
        assert_eq!(&full.ids[..prompt.len()], &prompt[..]);
        // the new answer and its <|end|> are all that is supervised after the prompt
        assert!(!full.supervised[prompt.len() - 1]);
        assert!(full.supervised[prompt.len()..].iter().all(|&s| s));
        let answers = turns.iter().filter(|m| m.role == Role::Assistant).count();
        assert_eq!(render_text(turns, true).matches("<|assistant|>").count(), answers + 1);
    }
    says(render_prompt(&tok, &conv), "must end with the user's");
    says(render_prompt(&tok, &[msg(Role::Assistant, "Hi.")]), "turns must start with the user");
}

/// Good lines of all three formats mixed with every kind of bad line.
const MIXED: &str = r#"{"prompt": "Where did Lily go?", "completion": "The big river."}
{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
{"prompt": [{"role": "user", "content": "Who helped?"}], "completion": [{"role": "assistant", "content": "Tom."}]}
{"prompt": "no closing brace"
[1, 2]
{"prompt": "Where?"}
{"completion": "Here."}
{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}
{"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "x"}]}
{"messages": [{"role": "user", "content": "Hi"}]}
{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]}
{"messages": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
{"prompt": "Hi", "completion": ["x"]}
{"messages": "Hi"}
{"text": "plain text"}
{"messages": [{"content": "Hi"}, {"role": "assistant", "content": "x"}]}
{"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}
{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "x"}], "prompt": "Hi"}
"#;

#[test]
fn jsonl_loads_every_good_line_and_names_every_bad_one() {
    let mut bytes = MIXED.as_bytes().to_vec();
    bytes.extend_from_slice(b"{\"prompt\": \"caf\xff\", \"completion\": \"x\"}\n");
    bytes.extend_from_slice(b"\"just a string\"\n");
    let got = read_conversations(&bytes).unwrap();
    let (u, a, s) = (Role::User, Role::Assistant, Role::System);
    assert_eq!(
        got.items,
        vec![
            vec![msg(u, "Where did Lily go?"), msg(a, "The big river.")],
            vec![msg(s, "Be brief."), msg(u, "Hi"), msg(a, "Hello.")],
            vec![msg(u, "Who helped?"), msg(a, "Tom.")],
        ]
    );
    let reasons: Vec<(usize, &str)> = got.skipped.iter().map(|e| (e.line, e.reason.as_str())).collect();
    for e in &got.skipped {
        println!("{e}");
    }
    let expected: [(usize, &str); 17] = [
        (4, "not valid JSON: "),
        (5, "expected a JSON object"),
        (6, "missing \"completion\""),
        (7, "missing \"prompt\""),
        (8, "messages[0]: \"content\" must be a string"),
        (9, "messages[1]: unknown role \"bot\" (use system, user or assistant)"),
        (10, "the conversation ends with a user message; it must end with the assistant's"),
        (11, "message 2: the assistant's content is empty"),
        (12, "message 1: expected a user message, found an assistant message (turns must start with the user)"),
        (13, "\"prompt\" and \"completion\" must both be strings or both be lists of messages"),
        (14, "\"messages\" must be a list of {\"role\", \"content\"} objects"),
        (15, "expected \"messages\", or \"prompt\" and \"completion\""),
        (16, "messages[0]: missing \"role\""),
        (17, "messages[0]: missing \"content\""),
        (18, "has both \"messages\" and \"prompt\"/\"completion\"; use one format per line"),
        (19, "not UTF-8 text: the byte at column 16 is invalid"),
        (20, "expected a JSON object"),
    ];
    assert_eq!(reasons.len(), expected.len(), "{reasons:#?}");
    for ((line, reason), (want_line, want)) in reasons.iter().zip(expected) {
        assert_eq!(*line, want_line);
        assert!(reason.starts_with(want) && (want_line == 4 || *reason == want), "line {line}: {reason:?} vs {want:?}");
    }
    assert_eq!(
        LineError { line: 6, reason: "missing \"completion\"".into() }.to_string(),
        "line 6: missing \"completion\""
    );
}

#[test]
fn jsonl_takes_blank_lines_a_bom_and_windows_line_ends() {
    let text =
        "\u{feff}{\"prompt\": \"a\", \"completion\": \"b\"}\r\n\r\n   \n{\"prompt\": \"c\", \"completion\": \"d\"}";
    let got = read_conversations(text.as_bytes()).unwrap();
    assert_eq!(got.items.len(), 2);
    assert!(got.skipped.is_empty(), "{:?}", got.skipped);
    assert_eq!(got.items[1], vec![msg(Role::User, "c"), msg(Role::Assistant, "d")]);
}

#[test]
fn jsonl_over_the_cap_or_without_a_good_line_is_refused() {
    let line = "{\"prompt\": \"a\", \"completion\": \"b\"}\n";
    let cap = MAX_JSONL_BYTES as usize;
    let big = line.repeat(cap / line.len() + 1);
    says(read_conversations(big.as_bytes()), "the file is 32.0 MiB, over the 32 MiB Kiln reads for instruction data");
    assert!(read_conversations(&big.as_bytes()[..cap / line.len() * line.len()]).is_ok());

    let bad = "{\"prompt\": \"a\"}\n\n[]\nnope\n{}\n7\n8\n9\n";
    let err = read_conversations(bad.as_bytes()).unwrap_err().to_string();
    println!("{err}");
    assert!(
        err.contains("line 1: missing \"completion\"; line 3: expected a JSON object; line 4: not valid JSON"),
        "{err}"
    );
    assert!(err.contains("and 2 more"), "{err}");
    says(read_conversations(b"\n \n"), "no conversations");
    says(read_conversations(b""), "no conversations");
}

#[test]
fn to_jsonl_round_trips() {
    let convs = vec![
        two_exchanges(),
        vec![msg(Role::User, "quote \" and \\ and\nnewline <|end|>"), msg(Role::Assistant, "小狐狸。\t")],
    ];
    let text = to_jsonl(&convs);
    assert_eq!(text.lines().count(), 2);
    assert!(text.starts_with("{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"}"), "{text}");
    let back = read_conversations(text.as_bytes()).unwrap();
    assert!(back.skipped.is_empty());
    assert_eq!(back.items, convs);
}

/// The question's kind, from its wording.
fn kind_of(question: &str) -> &'static str {
    let kinds = [
        ("Who", "who"),
        ("谁", "who"),
        ("Where", "where"),
        ("哪里", "where"),
        ("What", "what"),
        ("什么", "what"),
        ("How", "feel"),
        ("怎么样", "feel"),
        ("Did", "yes/no"),
        ("吗？", "yes/no"),
    ];
    kinds.iter().find(|(word, _)| question.contains(word)).map(|k| k.1).expect(question)
}

/// (story, question, answer)
fn parts(conv: &Conversation) -> (&str, &str, &str) {
    assert_eq!(conv.len(), 2);
    assert_eq!((conv[0].role, conv[1].role), (Role::User, Role::Assistant));
    let (story, question) = conv[0].content.split_once('\n').expect("story and question on two lines");
    (story, question, &conv[1].content)
}

fn check_instruction_set(language: Language) {
    let train = instruction_set(language, Split::Train, DEFAULT_TRAIN);
    let held_out = instruction_set(language, Split::HeldOut, DEFAULT_HELD_OUT);
    assert_eq!((train.len(), held_out.len()), (DEFAULT_TRAIN, DEFAULT_HELD_OUT));
    assert_eq!(instruction_set(language, Split::Train, DEFAULT_TRAIN), train, "deterministic");
    assert_eq!(instruction_set(language, Split::Train, 10), train[..10], "a prefix for a smaller n");

    // disjoint stories, also for a held-out set larger than the default
    let train_stories: HashSet<&str> = train.iter().map(|c| parts(c).0).collect();
    let big_held_out = instruction_set(language, Split::HeldOut, 1000);
    assert_eq!(big_held_out[..DEFAULT_HELD_OUT], held_out);
    let shared = big_held_out.iter().filter(|c| train_stories.contains(parts(c).0)).count();
    assert_eq!(shared, 0);
    println!("{language:?}: {} distinct train stories of {}", train_stories.len(), train.len());

    let yes_no = ["Yes", "No", "是", "否"];
    for set in [&train, &held_out] {
        let mut kinds: HashMap<&str, usize> = HashMap::new();
        let mut answers: HashMap<&str, usize> = HashMap::new();
        let mut exclaimed = 0;
        for conv in set.iter() {
            let (story, question, answer) = parts(conv);
            assert_eq!(story.matches(['.', '。']).count(), 3, "three sentences: {story}");
            let kind = kind_of(question);
            *kinds.entry(kind).or_default() += 1;
            // one answer in four ends with an exclamation mark (the preference tests' style)
            exclaimed += has_style(answer) as usize;
            let bare = answer.trim_end_matches(['.', '。', '!', '！']);
            if kind == "yes/no" {
                assert!(yes_no.contains(&bare), "{answer}");
                *answers.entry(bare).or_default() += 1;
            } else {
                assert!(story.to_lowercase().contains(&bare.to_lowercase()), "{answer:?} not in {story:?}");
            }
        }
        println!("{language:?} kinds {kinds:?}, yes/no answers {answers:?}, {exclaimed} exclaimed");
        assert_eq!(kinds.len(), 5);
        assert!(kinds.values().all(|&k| k == set.len() / 5), "{kinds:?}");
        assert!(answers.values().all(|&k| k == set.len() / 10), "{answers:?}");
        let share = exclaimed as f64 / set.len() as f64;
        assert!((0.15..0.35).contains(&share), "about a quarter of the answers exclaim: {share}");
    }
    println!("{language:?} example:\n{}", render_text(&held_out[4], false));
}

/// Every conversation, rendered, fits a context of 64 with the default 512-token BPE.
fn check_lengths(language: Language) {
    let text = default_corpus(language, DEFAULT_STORIES, DEFAULT_SEED);
    let tok = Tokenizer::train(&documents(&text), TokenizerKind::Bpe, Some(512)).unwrap();
    for (split, n) in [(Split::Train, DEFAULT_TRAIN), (Split::HeldOut, DEFAULT_HELD_OUT)] {
        let lengths: Vec<usize> =
            instruction_set(language, split, n).iter().map(|c| render(&tok, c).unwrap().ids.len()).collect();
        let max = *lengths.iter().max().unwrap();
        let mean = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
        println!("{language:?} {split:?}: rendered length max {max}, mean {mean:.1} tokens (512 BPE)");
        assert!(max <= 64, "{language:?} {split:?}: a conversation of {max} tokens");
    }
}

#[test]
fn english_instruction_set() {
    check_instruction_set(Language::English);
    check_lengths(Language::English);
}

#[test]
fn chinese_instruction_set() {
    check_instruction_set(Language::Chinese);
    check_lengths(Language::Chinese);
}

#[test]
fn answers_match_exactly_up_to_case_space_and_a_final_period() {
    assert!(answer_matches("The big river.", " the big river"));
    assert!(answer_matches("The big river.", "THE BIG RIVER."));
    assert!(answer_matches("很开心。", "很开心"));
    assert!(answer_matches("Yes.", "yes"));
    assert!(!answer_matches("Yes.", "No."));
    assert!(!answer_matches("The big river.", "The big river. And more."));
    assert!(!answer_matches("Tom.", "Tom the bear."));
    assert!(!answer_matches("很开心。", "开心。"));
}
