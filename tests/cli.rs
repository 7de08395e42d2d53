//! The command line, end to end: pretrain on the built-in stories, sample, resume; and
//! bad input that stops before anything is written.

use std::path::PathBuf;
use std::process::Command;

fn kiln(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::var("XDG_RUNTIME_DIR").unwrap_or("/tmp".into()))
        .output()
        .expect("run kiln");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
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
    let (ok, _, err) = kiln(&["resume", out_s, "--steps", "40"]);
    assert!(ok, "resume failed: {err}");
    assert!(err.contains("step 40"), "{err}");
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
