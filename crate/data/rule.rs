//! Rules as rewards: checks a person states without writing code, each with a weight, that
//! score an answer (RLOO and GRPO learn from them with no reward model and no human label).
//! An answer's score is Σ weight · [check holds]. Written as JSON, a list of checks:
//!   [{"check": "endsWith", "text": "!"},
//!    {"check": "equalsReference", "weight": 2},
//!    {"check": "matches", "pattern": "^[A-Z]"},
//!    {"check": "maxWords", "words": 12},
//!    {"check": "rewardModel", "weight": 0.5}]
//! (`rewardModel` adds a trained reward model's score of the answer, times its weight.)
//! The file is a stranger's: its size, the number of checks, each text and pattern are
//! bounded, and patterns run on a regular-expression engine without backtracking (time
//! linear in the answer, however the pattern nests), its compiled size capped.

use serde::{Deserialize, Serialize};

use crate::data::instruct::answer_matches;
use crate::error::{KilnError, Result};

/// Most checks in a rule.
pub const MAX_CHECKS: usize = 32;
/// Longest text or pattern a check holds, in characters.
pub const MAX_TEXT: usize = 500;
/// Largest rule file, in bytes.
pub const MAX_RULE_BYTES: usize = 64 * 1024;
/// Most memory one compiled pattern (and its lazy automaton) may take.
const REGEX_BYTES: usize = 1 << 20;

/// One checkable property of an answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    /// The answer contains the text.
    Contains { text: String },
    /// The answer does not contain the text.
    NotContains { text: String },
    /// The answer (trimmed) ends with the text.
    EndsWith { text: String },
    /// The pattern (Rust's regex syntax) matches somewhere in the answer.
    Matches { pattern: String },
    /// The answer has at most this many words (split on white space).
    MaxWords { words: usize },
    /// The answer is the data's reference answer (case, surrounding space and a final
    /// . 。 ! ！ ignored): a JSONL's completion, or the built-in question's answer.
    EqualsReference,
    /// The trained reward model's score of the answer (times the weight), not a yes or no.
    RewardModel,
}

/// A check with its weight (1 when the file gives none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Written", into = "Written")]
pub struct Weighted {
    pub check: Check,
    pub weight: f64,
}

/// A check as the file writes it: its kind, the one field that kind takes, its weight.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    check: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    words: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weight: Option<f64>,
}

const KINDS: &str = "contains, notContains, endsWith, matches, maxWords, equalsReference or rewardModel";

impl TryFrom<Written> for Weighted {
    type Error = String;

    fn try_from(w: Written) -> std::result::Result<Weighted, String> {
        let kind = w.check.as_str();
        let (needs, check) = match kind {
            "contains" | "notContains" | "endsWith" => {
                let text = w.text.clone().ok_or(format!("{kind} needs \"text\""))?;
                let check = match kind {
                    "contains" => Check::Contains { text },
                    "notContains" => Check::NotContains { text },
                    _ => Check::EndsWith { text },
                };
                ("text", check)
            }
            "matches" => ("pattern", Check::Matches { pattern: w.pattern.clone().ok_or("matches needs \"pattern\"")? }),
            "maxWords" => ("words", Check::MaxWords { words: w.words.ok_or("maxWords needs \"words\"")? }),
            "equalsReference" => ("", Check::EqualsReference),
            "rewardModel" => ("", Check::RewardModel),
            other => return Err(format!("unknown check {other:?}: choose {KINDS}")),
        };
        let given = [("text", w.text.is_some()), ("pattern", w.pattern.is_some()), ("words", w.words.is_some())];
        if let Some((extra, _)) = given.iter().find(|(name, set)| *set && *name != needs) {
            return Err(format!("{kind} takes no \"{extra}\""));
        }
        Ok(Weighted { check, weight: w.weight.unwrap_or(1.0) })
    }
}

impl From<Weighted> for Written {
    fn from(w: Weighted) -> Written {
        let weight = (w.weight != 1.0).then_some(w.weight);
        let (check, text, pattern, words) = match w.check {
            Check::Contains { text } => ("contains", Some(text), None, None),
            Check::NotContains { text } => ("notContains", Some(text), None, None),
            Check::EndsWith { text } => ("endsWith", Some(text), None, None),
            Check::Matches { pattern } => ("matches", None, Some(pattern), None),
            Check::MaxWords { words } => ("maxWords", None, None, Some(words)),
            Check::EqualsReference => ("equalsReference", None, None, None),
            Check::RewardModel => ("rewardModel", None, None, None),
        };
        Written { check: check.into(), text, pattern, words, weight }
    }
}

/// A rule: its checks, read and compiled.
#[derive(Clone, Debug)]
pub struct Rule {
    pub checks: Vec<Weighted>,
    /// The compiled pattern of each `Matches` check, by index.
    patterns: Vec<Option<regex::Regex>>,
}

impl PartialEq for Rule {
    fn eq(&self, other: &Rule) -> bool {
        self.checks == other.checks
    }
}

impl Rule {
    /// The rule in `text` (JSON: a list of checks, or `{"checks": [...]}`), checked.
    pub fn parse(text: &str) -> Result<Rule> {
        let bad = |m: String| KilnError::Config(format!("the rule: {m}"));
        if text.len() > MAX_RULE_BYTES {
            return Err(bad(format!("{} bytes, past the {MAX_RULE_BYTES} a rule may hold", text.len())));
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum File {
            List(Vec<Weighted>),
            Object { checks: Vec<Weighted> },
        }
        let checks = match serde_json::from_str::<File>(text) {
            Ok(File::List(c) | File::Object { checks: c }) => c,
            Err(_) => {
                // say which check is wrong, not serde's "did not match any variant"
                let list: Vec<serde_json::Value> = serde_json::from_str(text)
                    .or_else(|_| {
                        serde_json::from_str::<serde_json::Value>(text)
                            .ok()
                            .and_then(|v| v.get("checks").cloned())
                            .and_then(|v| serde_json::from_value(v).ok())
                            .ok_or(())
                    })
                    .map_err(|_| {
                        bad("expected a JSON list of checks, as [{\"check\": \"endsWith\", \"text\": \"!\"}]".into())
                    })?;
                for (i, v) in list.into_iter().enumerate() {
                    serde_json::from_value::<Weighted>(v).map_err(|e| bad(format!("check {}: {e}", i + 1)))?;
                }
                unreachable!("one of the checks failed to read")
            }
        };
        Rule::new(checks)
    }

    /// A rule of `checks`, each bounded and its pattern compiled.
    pub fn new(checks: Vec<Weighted>) -> Result<Rule> {
        let bad = |i: usize, m: String| KilnError::Config(format!("the rule's check {}: {m}", i + 1));
        if checks.is_empty() || checks.len() > MAX_CHECKS {
            return Err(KilnError::Config(format!("a rule needs 1 to {MAX_CHECKS} checks, not {}", checks.len())));
        }
        let mut patterns = Vec::with_capacity(checks.len());
        for (i, w) in checks.iter().enumerate() {
            if !(w.weight.is_finite() && w.weight.abs() <= 100.0) {
                return Err(bad(i, format!("the weight must be a number from −100 to 100, not {}", w.weight)));
            }
            let text = match &w.check {
                Check::Contains { text } | Check::NotContains { text } | Check::EndsWith { text } => Some(text),
                Check::Matches { pattern } => Some(pattern),
                Check::MaxWords { .. } | Check::EqualsReference | Check::RewardModel => None,
            };
            if let Some(text) = text {
                let n = text.chars().count();
                if n == 0 || n > MAX_TEXT {
                    return Err(bad(i, format!("the text must hold 1 to {MAX_TEXT} characters, not {n}")));
                }
            }
            patterns.push(match &w.check {
                Check::Matches { pattern } => Some(compile(pattern).map_err(|m| bad(i, m))?),
                _ => None,
            });
        }
        Ok(Rule { checks, patterns })
    }

    /// "Ends with !" and "is the reference answer", weight 1 each: the built-in task's
    /// rule (correct and exclaimed scores 2).
    pub fn exclaimed_and_correct() -> Rule {
        let checks = vec![
            Weighted { check: Check::EndsWith { text: "!".into() }, weight: 1.0 },
            Weighted { check: Check::EqualsReference, weight: 1.0 },
        ];
        Rule::new(checks).expect("a valid rule")
    }

    /// Whether the rule reads the data's reference answers.
    pub fn needs_reference(&self) -> bool {
        self.checks.iter().any(|w| w.check == Check::EqualsReference)
    }

    /// Σ weight of the `rewardModel` checks: what the reward model's score is multiplied by
    /// in an answer's score (0: the rule does not ask it).
    pub fn reward_weight(&self) -> f64 {
        self.checks.iter().filter(|w| w.check == Check::RewardModel).map(|w| w.weight).sum()
    }

    /// The score of `answer` from its text: Σ weight over the checks that hold (the reward
    /// model's part, [`Rule::reward_weight`] times its score, is added by the stage that
    /// runs it). `reference`: the data's answer to the prompt, when it has one (an
    /// `equalsReference` check fails without).
    pub fn score(&self, answer: &str, reference: Option<&str>) -> f64 {
        self.checks
            .iter()
            .zip(&self.patterns)
            .filter(|(w, re)| holds(&w.check, re.as_ref(), answer, reference))
            .map(|(w, _)| w.weight)
            .sum()
    }

    /// The rule as JSON (what [`Rule::parse`] reads).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.checks).expect("JSON")
    }
}

fn holds(check: &Check, pattern: Option<&regex::Regex>, answer: &str, reference: Option<&str>) -> bool {
    match check {
        Check::Contains { text } => answer.contains(text.as_str()),
        Check::NotContains { text } => !answer.contains(text.as_str()),
        Check::EndsWith { text } => answer.trim_end().ends_with(text.as_str()),
        Check::Matches { .. } => pattern.is_some_and(|re| re.is_match(answer)),
        Check::MaxWords { words } => answer.split_whitespace().count() <= *words,
        Check::EqualsReference => reference.is_some_and(|r| answer_matches(r, answer)),
        Check::RewardModel => false,
    }
}

/// A pattern on the regex crate's engine: no backreferences or look-around (the features
/// that need backtracking), so matching is linear in the answer; compiled size and the
/// lazy automaton's cache are capped, so a pattern like `(a{1000}){1000}` is refused.
fn compile(pattern: &str) -> std::result::Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_BYTES)
        .dfa_size_limit(REGEX_BYTES)
        .nest_limit(32)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => format!("the pattern {pattern:?} is too large once compiled"),
            other => format!("the pattern {pattern:?} is not a valid regular expression: {other}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_scores_with_its_weight() {
        let rule = Rule::parse(
            r#"[{"check": "endsWith", "text": "!"}, {"check": "equalsReference", "weight": 2},
                {"check": "contains", "text": "cat"}, {"check": "notContains", "text": "dog"},
                {"check": "matches", "pattern": "^[A-Z]"}, {"check": "maxWords", "words": 3, "weight": -0.5}]"#,
        )
        .unwrap();
        // ends with ! (1), is the reference (2), has cat (1), no dog (1), capital (1), ≤ 3 words (−0.5)
        assert_eq!(rule.score("The cat!", Some("the cat")), 5.5);
        // no reference: equalsReference fails
        assert_eq!(rule.score("The cat!", None), 3.5);
        assert_eq!(rule.score("a dog and a cat sat", Some("x")), 1.0);
        assert_eq!(Rule::parse(&rule.to_json()).unwrap(), rule);
        assert!(rule.needs_reference());
        assert_eq!(rule.reward_weight(), 0.0);
        let with_rm =
            Rule::parse(r#"[{"check": "rewardModel", "weight": 0.5}, {"check": "endsWith", "text": "!"}]"#).unwrap();
        assert_eq!((with_rm.reward_weight(), with_rm.score("Yes!", None)), (0.5, 1.0));
        assert_eq!(Rule::parse(&with_rm.to_json()).unwrap(), with_rm);
    }

    #[test]
    fn the_built_in_rule_is_the_scripted_rankers() {
        let rule = Rule::exclaimed_and_correct();
        assert_eq!(rule.score("Tom!", Some("Tom.")), 2.0);
        assert_eq!(rule.score("Tom.", Some("Tom.")), 1.0);
        assert_eq!(rule.score("Anna!", Some("Tom.")), 1.0);
        assert_eq!(rule.score("Anna", Some("Tom.")), 0.0);
    }

    #[test]
    fn bad_rules_are_refused_by_what_is_wrong() {
        let err = |text: &str| Rule::parse(text).unwrap_err().to_string();
        assert!(err("[]").contains("1 to 32 checks"), "{}", err("[]"));
        assert!(err(r#"[{"check": "endsWith"}]"#).contains("check 1"), "{}", err(r#"[{"check": "endsWith"}]"#));
        assert!(err(r#"[{"check": "rhymes"}]"#).contains("rhymes"));
        assert!(err(r#"[{"check": "matches", "pattern": "("}]"#).contains("not a valid regular expression"));
        assert!(err(r#"[{"check": "matches", "pattern": "(a{1000}){1000}"}]"#).contains("too large"));
        // look-around and backreferences need backtracking: this engine has neither
        assert!(err(r#"[{"check": "matches", "pattern": "(a)\\1"}]"#).contains("not a valid"));
        let long = format!(r#"[{{"check": "contains", "text": "{}"}}]"#, "x".repeat(MAX_TEXT + 1));
        assert!(err(&long).contains("1 to 500 characters"));
        assert!(err(r#"[{"check": "maxWords", "words": 3, "weight": 1e300}]"#).contains("weight"));
        assert!(err("not json").contains("JSON list of checks"));
    }

    /// `(a+)+$` takes a backtracking engine 2ⁿ steps on "aaa…ab"; here it is an automaton
    /// walk over the answer, once. The answer is far longer than any sampled one.
    #[test]
    fn a_catastrophic_backtracking_pattern_is_bounded() {
        let rule = Rule::parse(r#"[{"check": "matches", "pattern": "^(a+)+$"}]"#).unwrap();
        let hostile = "a".repeat(100_000) + "b";
        assert_eq!(rule.score(&hostile, None), 0.0);
        assert_eq!(rule.score(&"a".repeat(100_000), None), 1.0);
        let nested = Rule::parse(r#"[{"check": "matches", "pattern": "^((a|aa)+)+(b|c)*$"}]"#).unwrap();
        assert_eq!(nested.score(&("a".repeat(50_000) + "d"), None), 0.0);
    }
}
