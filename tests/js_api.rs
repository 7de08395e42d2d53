//! `www/lib/kiln.d.ts` is written by hand for people reading the JS API; its options
//! must be the core's, key for key. The defaults live once, in the core (`defaults()` in
//! JS), so the typings name no default values.

use std::collections::BTreeSet;

use kiln::sample::SampleConfig;
use kiln::train::{Metrics, StageKind, TrainConfig};

const TYPINGS: &str = include_str!("../www/lib/kiln.d.ts");

/// The keys of `export interface NAME { … }`, with or without `?`.
fn interface_keys(name: &str) -> BTreeSet<String> {
    let start = TYPINGS.find(&format!("export interface {name} ")).unwrap_or_else(|| panic!("no interface {name}"));
    let body = &TYPINGS[start..];
    let open = body.find('{').unwrap();
    let mut depth = 0;
    let close = open
        + body[open..]
            .char_indices()
            .find(|&(_, c)| {
                depth += (c == '{') as i32 - (c == '}') as i32;
                depth == 0
            })
            .unwrap()
            .0;
    let mut body = body[open + 1..close].to_string();
    // drop the doc comments
    while let (Some(a), Some(b)) = (body.find("/**"), body.find("*/")) {
        body.replace_range(a..b + 2, "");
    }
    body.split([';', '\n'])
        .filter_map(|item| item.split_once(':').map(|(key, _)| key.trim().trim_end_matches('?').to_string()))
        .filter(|key| !key.is_empty())
        .collect()
}

fn json_keys(value: serde_json::Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn the_typed_training_options_are_the_cores() {
    for stage in StageKind::ALL {
        let keys = json_keys(serde_json::to_value(TrainConfig::for_stage(stage)).unwrap());
        assert_eq!(interface_keys("TrainingOptions"), keys, "kiln.d.ts TrainingOptions against {stage}'s TrainConfig");
    }
}

#[test]
fn the_typed_sampling_options_are_the_cores() {
    let keys = json_keys(serde_json::to_value(SampleConfig::default()).unwrap());
    assert_eq!(interface_keys("GenerateOptions"), keys);
    // and they are what the JS API accepts: each one, and nothing else
    for key in &keys {
        let value = if key == "temperature" || key == "topP" { 0.5.into() } else { serde_json::Value::from(3) };
        let cfg = SampleConfig::default().with_options(&serde_json::json!({ key: value })).unwrap();
        assert_ne!(cfg, SampleConfig::default(), "{key} took effect");
    }
    let err = SampleConfig::default().with_options(&serde_json::json!({"top_k": 3})).unwrap_err();
    assert!(err.to_string().contains("unknown sampling option \"top_k\""), "{err}");
}

#[test]
fn the_typed_metrics_are_the_cores() {
    let all = serde_json::to_value(Metrics::default()).unwrap();
    assert!(all.as_object().unwrap().is_empty(), "a measure not reported is absent");
    // every field set: their names as serialised
    let mut every = serde_json::Map::new();
    for key in interface_keys("Metrics") {
        every.insert(key, 1.0.into());
    }
    let parsed: Metrics = serde_json::from_value(every.clone().into()).unwrap();
    assert!(!format!("{parsed:?}").contains("None"), "a measure of the core's is missing from kiln.d.ts: {parsed:?}");
    assert_eq!(
        json_keys(serde_json::to_value(&parsed).unwrap()),
        json_keys(every.into()),
        "kiln.d.ts Metrics against the core's"
    );
}

#[test]
fn the_typings_name_no_default_values() {
    // a default copied into a comment drifts: "(0.1)", "KL penalty 0.05"
    let options = &TYPINGS[TYPINGS.find("export interface TrainingOptions").unwrap()..];
    let options = &options[..options.find("\n}").unwrap()];
    let copied: Vec<&str> = options
        .lines()
        .filter(|l| l.trim_start().starts_with("/**") || l.trim_start().starts_with('*'))
        .filter(|l| l.contains(|c: char| c.is_ascii_digit()))
        .collect();
    assert!(copied.is_empty(), "defaults copied into kiln.d.ts: {copied:?}");
}
