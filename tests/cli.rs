//! The command line, end to end: pretrain on the built-in stories, sample, resume; and
//! bad input that stops before anything is written.

use std::path::PathBuf;
use std::process::Command;

/// Runs the CLI as a user on a server would: without XDG_RUNTIME_DIR, which must not make
/// the Vulkan loader print alarming lines.
fn kiln(args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).env_remove("XDG_RUNTIME_DIR").output().expect("run kiln");
    finished(out)
}

fn finished(out: std::process::Output) -> (bool, String, String) {
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "a harmless condition printed as an error: {stderr}");
    (out.status.success(), stdout, stderr)
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn pretrain_sample_and_resume_on_the_default_corpus() {
    let out = temp("run");
    let out_s = out.to_str().unwrap();
    let (ok, _, err) = kiln(&["pretrain", "--steps", "30", "--out", out_s, "--seed", "5"]);
    println!("{err}");
    assert!(ok, "pretrain failed: {err}");
    assert!(err.contains("validation loss"), "{err}");
    for file in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "optimizer.safetensors",
        "trainer.json",
        "corpus.txt",
    ] {
        assert!(out.join(file).is_file(), "{file} missing from the checkpoint");
    }
    let (ok, text, err) =
        kiln(&["sample", "--ckpt", out_s, "--prompt", "Once upon a time", "--tokens", "20", "--temperature", "0"]);
    assert!(ok, "sample failed: {err}");
    println!("sample: {text}");
    assert!(text.starts_with("Once upon a time") && text.len() > "Once upon a time".len());
    std::fs::write(out.join("notes.txt"), "seed 5, default corpus").unwrap();
    let (ok, _, err) = kiln(&["resume", out_s, "--steps", "40"]);
    assert!(ok, "resume failed: {err}");
    assert!(err.contains("step 40"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "seed 5, default corpus",
        "resume keeps the user's file"
    );
    let trainer: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("trainer.json")).unwrap()).unwrap();
    assert_eq!(trainer["step"], 40);
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn bad_input_writes_nothing() {
    let dir = temp("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let cases: [(&str, &[u8], &str); 3] = [
        ("empty.txt", b"", "empty"),
        ("latin1.txt", b"caf\xe9 au lait, encore du caf\xe9", "not UTF-8"),
        ("image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    ];
    for (name, bytes, needle) in cases {
        let file = dir.join(name);
        std::fs::write(&file, bytes).unwrap();
        let out = dir.join(format!("out-{name}"));
        let (ok, _, err) = kiln(&["pretrain", "--corpus", file.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        println!("{name}: {}", err.trim());
        assert!(!ok && err.contains(needle), "{name}: {err}");
        assert!(!out.exists(), "{name}: a checkpoint folder was written");
    }
    let (ok, _, err) = kiln(&["sample", "--ckpt", dir.join("nowhere").to_str().unwrap()]);
    assert!(!ok && err.contains("nowhere"), "{err}");
    let (ok, _, err) = kiln(&["pretrain", "--preset", "huge"]);
    assert!(!ok && err.contains("unknown preset"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn kiln_with_stdin(args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kiln");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    finished(child.wait_with_output().unwrap())
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn an_out_folder_holding_other_files_is_refused_and_left_untouched() {
    let dir = temp("foreign");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("thesis.txt"), "my only copy").unwrap();
    for args in [
        vec!["pretrain", "--steps", "1", "--backend", "cpu", "--out", dir.to_str().unwrap()],
        vec!["sft", "--ckpt", "nowhere", "--out", dir.to_str().unwrap()],
    ] {
        let (ok, _, err) = kiln(&args);
        println!("{}", err.trim());
        assert!(!ok && err.contains("not a Kiln checkpoint") && err.contains("thesis.txt"), "{err}");
        assert_eq!(listing(&dir), ["thesis.txt"]);
        assert_eq!(std::fs::read_to_string(dir.join("thesis.txt")).unwrap(), "my only copy");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sft_resume_and_chat_from_the_command_line() {
    let (base, tuned) = (temp("sft-base"), temp("sft-tuned"));
    let (base_s, tuned_s) = (base.to_str().unwrap(), tuned.to_str().unwrap());
    let (ok, _, err) = kiln(&["pretrain", "--steps", "10", "--backend", "cpu", "--sample-every", "0", "--out", base_s]);
    assert!(ok, "pretrain failed: {err}");
    // a JSONL file with good lines of both formats and two bad ones
    let data = base.parent().unwrap().join(format!("kiln-cli-data-{}.jsonl", std::process::id()));
    let mut lines = Vec::new();
    for i in 0..12 {
        lines.push(match i {
            1 => "{\"prompt\": \"no completion\"}".to_string(),
            4 => "{not json".to_string(),
            i if i % 2 == 0 => format!("{{\"prompt\": \"Say {i}.\", \"completion\": \"{i}.\"}}"),
            i => format!(
                "{{\"messages\": [{{\"role\": \"user\", \"content\": \"Count to {i}.\"}}, {{\"role\": \"assistant\", \"content\": \"{i}\"}}]}}"
            ),
        });
    }
    std::fs::write(&data, lines.join("\n")).unwrap();
    let (ok, _, err) = kiln(&[
        "sft",
        "--ckpt",
        base_s,
        "--data",
        data.to_str().unwrap(),
        "--steps",
        "6",
        "--eval-every",
        "3",
        "--backend",
        "cpu",
        "--out",
        tuned_s,
    ]);
    println!("{err}");
    assert!(ok, "sft failed: {err}");
    assert!(err.contains("line 2:") && err.contains("line 5:") && err.contains("10 conversations"), "{err}");
    let trainer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tuned.join("trainer.json")).unwrap()).unwrap();
    assert_eq!((trainer["stage"].as_str(), trainer["step"].as_u64()), (Some("sft"), Some(6)));
    assert!(tuned.join("sft-train.jsonl").is_file() && tuned.join("sft-val.jsonl").is_file());

    let (ok, _, err) = kiln(&["resume", tuned_s, "--steps", "8", "--backend", "cpu"]);
    assert!(ok && err.contains("sft") && err.contains("step 8"), "resume failed: {err}");

    let (ok, out, err) = kiln_with_stdin(
        &["chat", "--ckpt", tuned_s, "--backend", "cpu", "--tokens", "8"],
        "Say 4.\n/reset\nCount to 3.\n",
    );
    println!("chat:\n{out}");
    assert!(ok, "chat failed: {err}");
    assert!(err.contains("[answer 2:") && !err.contains("[answer 3:"), "one answer per message: {err}");

    let messages = r#"[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]"#;
    let (ok, out, err) = kiln(&["chat-ids", "--ckpt", tuned_s, "--json", messages]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<u64> = v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    let sup: Vec<bool> = v["supervised"].as_array().unwrap().iter().map(|x| x.as_bool().unwrap()).collect();
    assert_eq!((ids[0], ids[1], *ids.last().unwrap()), (1, 4, 7), "<|bos|> <|system|> … <|end|>: {ids:?}");
    assert!(*sup.last().unwrap() && !sup[..4].iter().any(|&s| s), "{sup:?}");
    for dir in [&base, &tuned] {
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::remove_file(&data).unwrap();
}

#[test]
fn candidates_reward_ppo_and_dpo_from_the_command_line() {
    let dirs = ["pref-sft", "pref-rm", "pref-ppo", "pref-dpo"].map(temp);
    let [sft, rm, ppo, dpo] = dirs.each_ref().map(|d| d.to_str().unwrap().to_string());
    let cpu = ["--backend", "cpu", "--sample-every", "0"];
    let (ok, _, err) = kiln(&[&["pretrain", "--steps", "10", "--out", &sft][..], &cpu].concat());
    assert!(ok, "pretrain failed: {err}");
    let ranks = dirs[0].parent().unwrap().join(format!("kiln-cli-ranks-{}.jsonl", std::process::id()));
    let ranks_s = ranks.to_str().unwrap();
    let (ok, _, err) = kiln(&[
        "candidates",
        "--ckpt",
        &sft,
        "--n",
        "6",
        "--k",
        "3",
        "--rank",
        "script",
        "--backend",
        "cpu",
        "--out",
        ranks_s,
    ]);
    assert!(ok, "candidates failed: {err}");
    assert!(err.contains("6 prompts × 3 answers"), "{err}");
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&ranks).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    assert!(lines.iter().all(|l| l["answers"].as_array().unwrap().len() == 3 && l["verdict"] == "ranked"));
    // an untrained model's answers mostly tie under the rule: give every prompt an order
    let ordered: Vec<String> = lines
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l["ranks"] = serde_json::json!([1, 2, 3]);
            l.to_string() + "\n"
        })
        .collect();
    std::fs::write(&ranks, ordered.concat()).unwrap();

    let (ok, _, err) =
        kiln(&[&["reward", "--ckpt", &sft, "--rankings", ranks_s, "--steps", "3", "--out", &rm][..], &cpu].concat());
    println!("{err}");
    assert!(ok, "reward failed: {err}");
    assert!(err.contains("valPairAccuracy"), "held-out pair accuracy is reported: {err}");
    // the reward folder scores each pair (3 answers ranked 1, 2, 3: 3 pairs a prompt), and
    // the rankings go out as TRL's pairs
    let (ok, out, err) = kiln(&["score", "--ckpt", &rm, "--data", ranks_s, "--backend", "cpu"]);
    assert!(ok, "score failed: {err}");
    let scored: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(scored.len(), 18, "{err}");
    assert!(scored.iter().all(|l| l["chosen"].as_f64().unwrap().is_finite() && l["chosen_ids"] != l["rejected_ids"]));
    let pairs = format!("{ranks_s}.pairs");
    let (ok, _, err) = kiln(&["pairs", "--rankings", ranks_s, "--out", &pairs]);
    assert!(ok, "pairs failed: {err}");
    let trl: Vec<serde_json::Value> =
        std::fs::read_to_string(&pairs).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(trl.len(), 18);
    assert_eq!(trl[0]["chosen"][0]["role"], "assistant");
    // the SFT folder as GGUF; a type Kiln does not write is refused by name, nothing written
    let gguf = format!("{ranks_s}.gguf");
    let (ok, _, err) = kiln(&["export", "--ckpt", &sft, "--gguf", &gguf, "--type", "q4_k"]);
    assert!(!ok && err.contains("f32, f16 and q8_0") && !std::path::Path::new(&gguf).exists(), "{err}");
    let (ok, _, err) = kiln(&["export", "--ckpt", &sft, "--gguf", &gguf, "--type", "q8_0"]);
    assert!(ok, "export failed: {err}");
    let bytes = std::fs::read(&gguf).unwrap();
    let g = kiln::gguf::read(&bytes).unwrap();
    assert_eq!(g.get("general.architecture").and_then(kiln::gguf::Value::as_str), Some("gpt2"));
    assert!(err.contains("29 tensors"), "{err}");
    std::fs::remove_file(&pairs).ok();
    std::fs::remove_file(&gguf).ok();
    let (ok, _, err) = kiln(
        &[
            &[
                "ppo",
                "--ckpt",
                &sft,
                "--reward",
                &rm,
                "--rankings",
                ranks_s,
                "--steps",
                "4",
                "--eval",
                "2",
                "--kl-coef",
                "0.1",
                "--out",
                &ppo,
            ][..],
            &cpu,
        ]
        .concat(),
    );
    println!("{err}");
    assert!(ok, "ppo failed: {err}");
    assert!(err.contains("meanReward") && err.contains("kl") && err.contains("held-out questions after"), "{err}");
    assert_eq!(trainer_json(&dirs[2])["train"]["klCoef"], 0.1, "--kl-coef took effect");
    // PPO resumes bit for bit: its checkpoint holds the reference and reward models it
    // reads, so `kiln resume` to step 8 repeats the losses of a straight 8-step run
    let ppo_args = |steps: &str, out: &str| {
        let args = ["ppo", "--ckpt", &sft, "--reward", &rm, "--rankings", ranks_s, "--kl-coef", "0.1"];
        kiln(&[&args[..], &["--steps", steps, "--eval", "0", "--log-json", "--out", out], &cpu].concat())
    };
    let straight_dir = temp("pref-ppo-straight");
    let (ok, straight, err) = ppo_args("8", straight_dir.to_str().unwrap());
    assert!(ok, "ppo failed: {err}");
    let (ok, resumed, err) = kiln(&["resume", &ppo, "--steps", "8", "--log-json", "--backend", "cpu"]);
    assert!(ok, "resuming PPO failed: {err}");
    let losses = |out: &str, from: u64| -> Vec<String> {
        out.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["step"].as_u64().is_some_and(|s| s > from) && v.get("loss").is_some())
            .map(|v| format!("{} {}", v["step"], v["loss"]))
            .collect()
    };
    let (straight, resumed) = (losses(&straight, 4), losses(&resumed, 4));
    println!("PPO straight {straight:?}\nPPO resumed  {resumed:?}");
    assert_eq!(straight.len(), 4, "steps 5 to 8 logged: {straight:?}");
    assert_eq!(resumed, straight, "kiln resume continues PPO bit for bit");
    std::fs::remove_dir_all(&straight_dir).unwrap();
    let (ok, _, err) = kiln(
        &[
            &[
                "dpo",
                "--ckpt",
                &sft,
                "--rankings",
                ranks_s,
                "--steps",
                "4",
                "--eval-every",
                "2",
                "--eval",
                "0",
                "--beta",
                "0.2",
                "--rpo-alpha",
                "0",
                "--out",
                &dpo,
            ][..],
            &cpu,
        ]
        .concat(),
    );
    println!("{err}");
    assert!(ok, "dpo failed: {err}");
    assert!(err.contains("logpChosen") && dirs[3].join("dpo-reference.json").is_file(), "{err}");
    let train = &trainer_json(&dirs[3])["train"];
    assert_eq!(
        (train["dpoBeta"].as_f64(), train["rpoAlpha"].as_f64()),
        (Some(0.2), Some(0.0)),
        "--beta and --rpo-alpha took effect"
    );
    // a misspelt option is refused by name before anything runs, with the one it meant
    let (ok, _, err) =
        kiln(&[&["dpo", "--ckpt", &sft, "--rankings", ranks_s, "--rpo-alpah", "0", "--out", &dpo][..], &cpu].concat());
    assert!(!ok && err.contains("kiln dpo has no option --rpo-alpah; did you mean --rpo-alpha?"), "{err}");
    // a reward model is not a PPO reward for itself: ppo --reward wants a score head
    let (ok, _, err) = kiln(&[&["ppo", "--ckpt", &sft, "--reward", &dpo, "--out", &ppo][..], &cpu].concat());
    assert!(!ok && err.contains("is not a reward model"), "{err}");
    // DPO resumes where it stopped, with the reference it computed at the start
    let (ok, _, err) = kiln(&["resume", &dpo, "--steps", "6", "--backend", "cpu"]);
    assert!(ok && err.contains("dpo") && err.contains("step 6"), "resume failed: {err}");
    for dir in &dirs {
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::remove_file(&ranks).unwrap();
}

/// The checkpoint's trainer.json.
fn trainer_json(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("trainer.json")).unwrap()).unwrap()
}

/// Every training option is a flag of the stages that read it (`kiln help STAGE` lists
/// them), and each reaches the configuration the stage trains with (`kiln config STAGE`
/// prints it); every option belongs to some stage; a flag the stage does not have (another
/// preference stage's option) is refused by name.
#[test]
fn every_training_option_is_a_flag_that_takes_effect() {
    let kebab = |camel: &str| -> String {
        camel
            .chars()
            .flat_map(|c| if c.is_ascii_uppercase() { vec!['-', c.to_ascii_lowercase()] } else { vec![c] })
            .collect()
    };
    let config = |args: &[&str]| -> serde_json::Value {
        let (ok, out, err) = kiln(args);
        assert!(ok, "kiln {args:?} failed: {err}");
        serde_json::from_str(&out).unwrap()
    };
    let mut taken = std::collections::BTreeSet::new();
    let mut all = std::collections::BTreeSet::new();
    for stage in ["pretrain", "sft", "reward", "dpo", "ppo", "kto", "rloo", "grpo"] {
        let defaults = config(&["config", stage]);
        let (ok, help, err) = kiln(&["help", stage]);
        assert!(ok, "{err}");
        let mut checked = 0;
        for (key, default) in defaults.as_object().unwrap() {
            all.insert(key.clone());
            let flag = format!("--{}", kebab(key));
            let listed = help.lines().any(|l| l.trim_start().starts_with(&format!("{flag} ")));
            if !listed {
                // another stage's option: refused, not trained as if unsaid
                let (ok, _, err) = kiln(&["config", stage, &flag, "1"]);
                assert!(!ok && err.contains(&format!("has no option {flag}")), "{stage} {flag}: {err}");
                continue;
            }
            taken.insert(key.clone());
            // a valid value other than the default: half of it (exact in binary), or one more
            let value = match (default.as_u64(), default.as_str()) {
                (Some(n), _) => serde_json::json!(n + 1),
                // the text options: a rule (RLOO, GRPO) and LoRA's targets
                (None, Some(_)) if key == "rule" => serde_json::json!(r#"[{"check":"maxWords","words":3}]"#),
                (None, Some(_)) => serde_json::json!("all-linear"),
                (None, None) => {
                    let x = default.as_f64().unwrap();
                    serde_json::json!(if x == 0.0 { 0.25 } else { x / 2.0 })
                }
            };
            let given = value.as_str().map_or_else(|| value.to_string(), str::to_string);
            let got = config(&["config", stage, &flag, &given]);
            assert_eq!(got[key], value, "kiln config {stage} {flag} {value}");
            checked += 1;
        }
        println!("{stage}: {checked} training options pass through as flags");
        assert!(checked >= 17, "{stage}: {checked}");
    }
    assert_eq!(taken, all, "every training option is some stage's flag");
    let (ok, _, err) = kiln(&["ppo", "--beta", "0.05"]);
    assert!(!ok && err.contains("PPO's KL weight is --kl-coef"), "{err}");
    let (ok, _, err) = kiln(&["config", "dpo", "--batch", "4", "--batch-size", "6"]);
    assert!(!ok && err.contains("are the same option"), "{err}");
    let (ok, _, err) = kiln(&["sample", "--ckpt"]);
    assert!(!ok && err.contains("--ckpt needs a value"), "{err}");
    let (ok, help, _) = kiln(&["dpo", "--help"]);
    assert!(ok && help.contains("--rpo-alpha") && !help.contains("--kl-coef"), "{help}");
    let (ok, _, err) = kiln(&["dpo", "--bogus-option", "3"]);
    assert!(!ok && err.contains("kiln dpo has no option --bogus-option"), "{err}");
    let (ok, _, err) = kiln(&["config", "dpo", "--beta", "strong"]);
    assert!(!ok && err.contains("--beta \"strong\" is not a number"), "{err}");
    let (ok, _, err) = kiln(&["sample", "--ckpt", "nowhere", "--temprature", "0"]);
    assert!(!ok && err.contains("did you mean --temperature?"), "{err}");
}

/// Several people's rankings: one file a person, or one file whose lines name their
/// annotator. The library's hand-computed case (three people, ties, a skipped prompt,
/// answers in another order, TRL pair lines) gives its figures through `kiln agreement`,
/// and --combine majority writes one ranking per prompt.
#[test]
fn agreement_of_several_ranking_files() {
    let dir = temp("agreement");
    std::fs::create_dir_all(&dir).unwrap();
    let alice = r#"{"prompt": "P1", "answers": ["x", "y", "z"], "ranks": [1, 2, 3], "verdict": "ranked"}
{"prompt": "P2", "answers": ["u", "v", "w"], "ranks": [1, 2, 2], "verdict": "ranked"}
{"prompt": "P3", "chosen": "p", "rejected": "q"}
"#;
    let others = r#"{"prompt": "P1", "answers": ["z", " y", "x "], "ranks": [3, 1, 1], "annotator": "bob"}
{"prompt": "P2", "answers": ["u", "v", "w"], "ranks": [1, 2, 3], "annotator": "bob"}
{"prompt": "P3", "chosen": "q", "rejected": "p", "annotator": "bob"}
{"prompt": "P1", "answers": ["x", "y", "z"], "ranks": [2, 1, 3], "annotator": "cy"}
{"prompt": "P2", "answers": ["u", "v", "w"], "ranks": [1, 1, 1], "annotator": "cy"}
{"prompt": "P3", "answers": ["p", "q"], "ranks": [1, 2], "verdict": "skipped", "annotator": "cy"}
"#;
    let (a, b) = (dir.join("alice.jsonl"), dir.join("others.jsonl"));
    std::fs::write(&a, alice).unwrap();
    std::fs::write(&b, others).unwrap();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let (ok, out, err) = kiln(&["agreement", a, b, "--json"]);
    assert!(ok, "agreement failed: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = v["annotators"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob", "cy"]);
    let close = |x: &serde_json::Value, want: f64| {
        assert!((x.as_f64().unwrap() - want).abs() < 1e-9, "{x} against {want}\n{out}");
    };
    // the figures computed by hand in data::agreement's test
    close(&v["krippendorffAlpha"], 5939.0 / 21780.0);
    close(&v["between"][0]["pairwiseAgreement"], 4.0 / 7.0);
    close(&v["between"][0]["meanTauB"], (4.0 / 6f64.sqrt() - 1.0) / 3.0);
    close(&v["between"][1]["meanTauB"], 1.0 / 3.0);
    assert_eq!((v["between"][1]["tauSkipped"].as_u64(), v["disagreementCount"].as_u64()), (Some(1), Some(3)));
    let (ok, table, err) = kiln(&["agreement", a, b]);
    assert!(ok && table.contains("alice – bob") && table.contains("57.1%") && table.contains("0.273"), "{table}{err}");

    let combined = dir.join("majority.jsonl");
    let (ok, _, err) = kiln(&["agreement", a, b, "--combine", "majority", "--out", combined.to_str().unwrap()]);
    assert!(ok && err.contains("3 rankings"), "{err}");
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&combined).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["ranks"], serde_json::json!([1, 1, 3]), "P1 by mean rank");
    assert_eq!(lines[0]["annotator"], "majority");
    let (ok, _, err) = kiln(&["agreement", a, b, "--combine", "dan", "--out", combined.to_str().unwrap()]);
    assert!(!ok && err.contains("alice, bob, cy"), "{err}");
    let (ok, _, err) = kiln(&["agreement", a]);
    assert!(!ok && err.contains("two people"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// KTO on a feedback file (thumbs and a ranking), and GRPO and RLOO on a rule file, from
/// the command line: each trains and reports its own measures, GRPO resumes bit for bit
/// from a save point, and a rule that cannot be used is refused before anything runs.
#[test]
fn kto_on_thumbs_and_grpo_and_rloo_on_a_rule_from_the_command_line() {
    let dirs = ["fb-sft", "fb-kto", "fb-grpo", "fb-grpo-straight", "fb-rloo"].map(temp);
    let [sft, kto, grpo, straight, rloo] = dirs.each_ref().map(|d| d.to_str().unwrap().to_string());
    let cpu = ["--backend", "cpu", "--sample-every", "0"];
    let (ok, _, err) = kiln(&[&["pretrain", "--steps", "10", "--out", &sft][..], &cpu].concat());
    assert!(ok, "pretrain failed: {err}");
    let file = |name: &str, text: &str| {
        let path = std::env::temp_dir().join(format!("kiln-cli-{name}-{}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    };
    // thumbs in TRL's unpaired format, and a ranking read as thumbs (best up, worst down)
    let mut lines: Vec<String> = (0..6)
        .map(|i| {
            let line = serde_json::json!({"prompt": format!("Who is {i}?"), "completion": format!("Tom{}", "!".repeat(i % 2)), "label": i % 2 == 1});
            line.to_string()
        })
        .collect();
    lines.push(r#"{"prompt": "Where?", "answers": ["Home!", "Away", "Here"], "ranks": [1, 3, 2]}"#.into());
    let thumbs = file("thumbs.jsonl", &(lines.join("\n") + "\n"));
    let args = ["kto", "--ckpt", &sft, "--data", thumbs.to_str().unwrap(), "--steps", "3", "--eval", "0"];
    let (ok, _, err) = kiln(&[&args[..], &["--batch-size", "4", "--out", &kto], &cpu].concat());
    println!("{err}");
    assert!(ok, "kto failed: {err}");
    assert!(err.contains("logpChosen") && dirs[1].join("kto-reference.json").is_file(), "{err}");
    let train = std::fs::read_to_string(dirs[1].join("kto-train.jsonl")).unwrap().lines().count();
    assert_eq!(train + 1, 8, "6 thumbs and the ranking's 2, one held out");
    let (ok, _, err) = kiln(&["resume", &kto, "--steps", "5", "--backend", "cpu"]);
    assert!(ok && err.contains("kto") && err.contains("step 5"), "resume failed: {err}");

    let rule = file("rule.json", r#"[{"check": "endsWith", "text": "!"}, {"check": "equalsReference", "weight": 2}]"#);
    let grpo_args = |steps: &str, out: &str| {
        let args = ["grpo", "--ckpt", &sft, "--rule", rule.to_str().unwrap(), "--generations", "4"];
        let more = ["--rollout-prompts", "2", "--batch-size", "8", "--eval-every", "2", "--log-json"];
        kiln(&[&args[..], &more, &["--steps", steps, "--eval", "2", "--out", out], &cpu].concat())
    };
    let (ok, _, err) = grpo_args("4", &grpo);
    println!("{err}");
    assert!(ok, "grpo failed: {err}");
    assert!(err.contains("zeroStdShare") && err.contains("held-out questions after"), "{err}");
    let saved = trainer_json(&dirs[2]);
    assert_eq!(saved["train"]["generations"], 4, "--generations took effect");
    assert!(saved["train"]["rule"].as_str().unwrap().contains("endsWith"), "the rule file was read: {saved}");
    let (ok, straight_out, err) = grpo_args("8", &straight);
    assert!(ok, "grpo failed: {err}");
    let (ok, resumed, err) = kiln(&["resume", &grpo, "--steps", "8", "--log-json", "--backend", "cpu"]);
    assert!(ok, "resuming GRPO failed: {err}");
    let losses = |out: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["step"].as_u64().is_some_and(|s| s > 4) && v.get("loss").is_some())
            .map(|v| format!("{} {}", v["step"], v["loss"]))
            .collect()
    };
    let (straight_losses, resumed) = (losses(&straight_out), losses(&resumed));
    println!("GRPO straight {straight_losses:?}\nGRPO resumed  {resumed:?}");
    assert_eq!(straight_losses.len(), 4, "steps 5 to 8 logged");
    assert_eq!(resumed, straight_losses, "kiln resume continues GRPO bit for bit");

    // RLOO on the person's own prompts, whose completions are the reference answers
    let prompts = file(
        "prompts.jsonl",
        "{\"prompt\": \"Who?\", \"completion\": \"Tom\"}\n{\"prompt\": \"Where?\", \"completion\": \"Home\"}\n",
    );
    let args = ["rloo", "--ckpt", &sft, "--rule", rule.to_str().unwrap(), "--prompts", prompts.to_str().unwrap()];
    let (ok, _, err) = kiln(&[&args[..], &["--steps", "2", "--eval", "0", "--out", &rloo], &cpu].concat());
    println!("{err}");
    assert!(ok && err.contains("meanReward"), "rloo failed: {err}");

    // a trained reward model as part of the rule: its score times the check's weight
    let ranked: String = ["Who?", "Where?", "When?"]
        .iter()
        .map(|q| serde_json::json!({"prompt": q, "answers": ["Yes!", "no"], "ranks": [1, 2]}).to_string() + "\n")
        .collect();
    let rankings = file("rm-rankings.jsonl", &ranked);
    let rm = temp("fb-rm");
    let args =
        ["reward", "--ckpt", &sft, "--rankings", rankings.to_str().unwrap(), "--steps", "2", "--batch-size", "4"];
    let (ok, _, err) = kiln(&[&args[..], &["--out", rm.to_str().unwrap()], &cpu].concat());
    assert!(ok, "reward failed: {err}");
    let with_rm = r#"[{"check": "rewardModel", "weight": 0.5}, {"check": "endsWith", "text": "!"}]"#;
    let args = ["grpo", "--ckpt", &sft, "--rule", with_rm, "--generations", "4", "--rollout-prompts", "2"];
    let more = ["--batch-size", "8", "--steps", "2", "--eval", "0", "--out", &rloo];
    let (ok, _, err) = kiln(&[&args[..], &more, &["--reward", rm.to_str().unwrap()], &cpu].concat());
    assert!(ok && err.contains("meanReward"), "grpo on a rule with the reward model failed: {err}");
    let (ok, _, err) = kiln(&[&args[..], &more, &cpu].concat());
    assert!(!ok && err.contains("the rule asks the reward model, but there is none"), "{err}");
    std::fs::remove_dir_all(&rm).unwrap();
    std::fs::remove_file(&rankings).unwrap();

    // rules that cannot be used: named by what is wrong, before anything trains
    let bad = file("bad-rule.json", r#"[{"check": "matches", "pattern": "(a{1000}){1000}"}]"#);
    let (ok, _, err) =
        kiln(&[&["grpo", "--ckpt", &sft, "--rule", bad.to_str().unwrap(), "--out", &rloo][..], &cpu].concat());
    assert!(!ok && err.contains("check 1") && err.contains("too large"), "{err}");
    let (ok, _, err) =
        kiln(&[&["grpo", "--ckpt", &sft, "--rule", "[{\"check\": \"rhymes\"}]", "--out", &rloo][..], &cpu].concat());
    assert!(!ok && err.contains("unknown check \"rhymes\""), "{err}");
    for dir in &dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
    for f in [thumbs, rule, prompts, bad] {
        std::fs::remove_file(f).unwrap();
    }
}

/// `kiln candidates --online`: the person ranks on stdin, the model updates every two
/// rankings (online DPO), the rankings are written as they come and the updated model is
/// saved; a skip and an "all bad" are kept as such.
#[test]
fn online_ranking_on_stdin_updates_the_model_as_it_goes() {
    let dirs = ["online-sft", "online-model"].map(temp);
    let [sft, model] = dirs.each_ref().map(|d| d.to_str().unwrap().to_string());
    let (ok, _, err) = kiln(&["pretrain", "--steps", "10", "--out", &sft, "--backend", "cpu", "--sample-every", "0"]);
    assert!(ok, "pretrain failed: {err}");
    let out = std::env::temp_dir().join(format!("kiln-cli-online-{}.jsonl", std::process::id()));
    let args =
        ["candidates", "--online", "--ckpt", &sft, "--n", "7", "--k", "3", "--every", "2", "--update-steps", "1"];
    let more = ["--save", &model, "--out", out.to_str().unwrap(), "--backend", "cpu"];
    // a typo is asked again; the fifth prompt is skipped, the sixth all bad
    let stdin = "1 2 3\n3 1 2\n1 1 2\nbest\n2 3 1\ns\nx\n1 3 2\n";
    let (ok, _, err) = kiln_with_stdin(&[&args[..], &more].concat(), stdin);
    println!("{err}");
    assert!(ok, "online candidates failed: {err}");
    assert!(err.contains("give 3 ranks from 1 to 3"), "{err}");
    assert!(err.contains("update 1 after 2 rankings") && err.contains("update 3 after 6 rankings"), "{err}");
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let verdicts: Vec<&str> = lines.iter().map(|l| l["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts, ["ranked", "ranked", "ranked", "ranked", "skipped", "all_bad", "ranked"]);
    assert_eq!(lines[1]["ranks"], serde_json::json!([3, 1, 2]));
    assert!(dirs[1].join("model.safetensors").is_file() && dirs[1].join("trainer.json").is_file());
    for dir in &dirs {
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::remove_file(&out).unwrap();
}
