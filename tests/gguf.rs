//! GGUF export, parsed back without Python: the header, the alignment and the types are
//! the format's; every key llama.cpp needs is there with the model's sizes and the
//! tokenizer's tokens, merges and special ids; each tensor holds the model's values under
//! llama.cpp's name and layout — equal in f32, within f16's rounding, within Q8_0's
//! bound — for a Kiln GPT-2 (Conv1D weights transposed, the tied output written out) and
//! an imported Llama folder (q and k rows reordered to pairwise rotation). A character
//! tokenizer, which llama.cpp has no equivalent for, is refused with the reason.

use kiln::checkpoint::{load_model, model_files, read_dir};
use kiln::data::corpus::{default_corpus, Language};
use kiln::data::documents;
use kiln::gguf::model::folder_gguf;
use kiln::gguf::quant::{q8_0_bound, Q8_0_BLOCK};
use kiln::gguf::{read, Encoding, Gguf, Value, DEFAULT_ALIGNMENT, MAGIC};
use kiln::model::{GptConfig, ParamLayout};
use kiln::tokenizer::{Tokenizer, TokenizerKind, SPECIAL_TOKENS};

fn tokenizer(kind: TokenizerKind) -> Tokenizer {
    let text = default_corpus(Language::English, 60, 3);
    let size = match kind {
        TokenizerKind::Bpe => Some(300),
        TokenizerKind::Char => None,
    };
    Tokenizer::train(&documents(&text), kind, size).unwrap()
}

/// A Kiln folder of a GPT-2 with C = 32 (whole Q8_0 blocks) and random weights.
fn gpt2_folder() -> (kiln::checkpoint::Files, Vec<f32>, ParamLayout) {
    let tok = tokenizer(TokenizerKind::Bpe);
    let cfg = GptConfig::gpt2(tok.vocab_size(), 64, 2, 2, 32);
    let layout = ParamLayout::new(&cfg);
    let params = layout.init(&cfg, 3);
    (model_files(&cfg, &layout, &tok, &params).unwrap(), params, layout)
}

fn u64_of(g: &Gguf, key: &str) -> u64 {
    g.get(key).and_then(Value::as_u64).unwrap_or_else(|| panic!("{key} missing or not unsigned"))
}

fn strings(g: &Gguf, key: &str) -> Vec<String> {
    match g.get(key) {
        Some(Value::Array(8, items)) => items.iter().map(|v| v.as_str().unwrap().to_string()).collect(),
        other => panic!("{key} is {other:?}, not a string array"),
    }
}

/// The model's tensor `name` (PyTorch layout), rows and columns swapped when `t`.
fn kiln_tensor(layout: &ParamLayout, params: &[f32], name: &str, t: bool) -> (Vec<usize>, Vec<f32>) {
    let p = layout.tensors.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no {name}"));
    let x = params[p.offset..p.offset + p.len()].to_vec();
    if !t {
        return (p.shape.clone(), x);
    }
    let (r, c) = (p.shape[0], p.shape[1]);
    let mut out = vec![0.0; x.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = x[i * c + j];
        }
    }
    (vec![c, r], out)
}

/// The file's tensor against the model's values, as its encoding allows.
fn check_values(g: &Gguf, name: &str, want_shape: &[usize], want: &[f32], encoding: Encoding) {
    let t = g.tensor(name).unwrap_or_else(|| panic!("{name} is not in the file"));
    assert_eq!(t.shape, want_shape, "{name}'s shape");
    let got = g.values(t);
    let expected = if t.shape.len() == 1 { Encoding::F32 } else { encoding };
    assert_eq!(t.encoding, expected, "{name}'s type");
    match t.encoding {
        Encoding::F32 => assert_eq!(got, want, "{name} in f32"),
        Encoding::F16 => {
            for (a, b) in want.iter().zip(&got) {
                assert_eq!(half::f16::from_f32(*a).to_f32(), *b, "{name} in f16");
            }
        }
        Encoding::Q8_0 => {
            for (block, back) in want.chunks(Q8_0_BLOCK).zip(got.chunks(Q8_0_BLOCK)) {
                let bound = q8_0_bound(block);
                for (a, b) in block.iter().zip(back) {
                    assert!((a - b).abs() <= bound, "{name}: {a} came back as {b} (bound {bound})");
                }
            }
        }
    }
}

#[test]
fn a_kiln_gpt2_as_gguf_has_the_formats_header_keys_and_tensors() {
    let (files, params, layout) = gpt2_folder();
    let loaded = load_model(&files).unwrap();
    for encoding in [Encoding::F32, Encoding::F16, Encoding::Q8_0] {
        let bytes = folder_gguf(&files, encoding, "tiny").unwrap();
        // the header, by hand: magic, version 3, the counts
        assert_eq!(&bytes[..4], MAGIC);
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 3);
        let g = read(&bytes).unwrap();
        assert_eq!(u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize, g.tensors.len());
        assert_eq!(u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize, g.kv.len());
        assert_eq!(g.alignment, DEFAULT_ALIGNMENT);
        assert_eq!(g.data_start % DEFAULT_ALIGNMENT, 0);
        assert!(g.tensors.iter().all(|t| t.offset % DEFAULT_ALIGNMENT == 0));
        assert_eq!(g.get("general.architecture").and_then(Value::as_str), Some("gpt2"));
        let file_type = match encoding {
            Encoding::F32 => 0,
            Encoding::F16 => 1,
            Encoding::Q8_0 => 7,
        };
        assert_eq!(u64_of(&g, "general.file_type"), file_type);
        let cfg = loaded.config;
        assert_eq!(u64_of(&g, "gpt2.context_length"), cfg.block_size as u64);
        assert_eq!(u64_of(&g, "gpt2.embedding_length"), cfg.n_embd as u64);
        assert_eq!(u64_of(&g, "gpt2.block_count"), cfg.n_layer as u64);
        assert_eq!(u64_of(&g, "gpt2.feed_forward_length"), 4 * cfg.n_embd as u64);
        assert_eq!(u64_of(&g, "gpt2.attention.head_count"), cfg.n_head as u64);

        // the tokenizer: every token by id, the special ones typed as control, the merges,
        // the ids Kiln starts, ends and pads with, and the template
        let tokens = strings(&g, "tokenizer.ggml.tokens");
        assert_eq!(tokens.len(), cfg.vocab_size);
        assert_eq!(&tokens[..8], SPECIAL_TOKENS);
        for id in [10u32, 100, 299] {
            assert_eq!(loaded.tokenizer.id_to_token(id).as_deref(), Some(tokens[id as usize].as_str()));
        }
        let Some(Value::Array(5, types)) = g.get("tokenizer.ggml.token_type") else { panic!("token types") };
        assert_eq!(types[7], Value::I32(3));
        assert_eq!(types[100], Value::I32(1));
        let merges = strings(&g, "tokenizer.ggml.merges");
        assert_eq!(merges.len(), cfg.vocab_size - 256 - SPECIAL_TOKENS.len());
        assert!(merges.iter().all(|m| m.split(' ').count() == 2), "{:?}", &merges[..3]);
        assert_eq!(g.get("tokenizer.ggml.pre").and_then(Value::as_str), Some("gpt-2"));
        assert_eq!(u64_of(&g, "tokenizer.ggml.bos_token_id"), 1);
        assert_eq!(u64_of(&g, "tokenizer.ggml.eos_token_id"), 2);
        assert_eq!(u64_of(&g, "tokenizer.ggml.eot_token_id"), 7);
        assert_eq!(u64_of(&g, "tokenizer.ggml.padding_token_id"), 0);
        assert_eq!(g.get("tokenizer.ggml.add_bos_token"), Some(&Value::Bool(true)));
        assert_eq!(g.get("tokenizer.chat_template").and_then(Value::as_str), Some(kiln::data::chat::CHAT_TEMPLATE));

        // the tensors: GPT-2's 4 + 12 a layer + the output layer, each in llama.cpp's layout
        assert_eq!(g.tensors.len(), 4 + 12 * cfg.n_layer + 1);
        let (shape, wte) = kiln_tensor(&layout, &params, "wte.weight", false);
        check_values(&g, "token_embd.weight", &shape, &wte, encoding);
        check_values(&g, "output.weight", &shape, &wte, encoding);
        let (shape, wpe) = kiln_tensor(&layout, &params, "wpe.weight", false);
        check_values(&g, "position_embd.weight", &shape, &wpe, encoding);
        for l in 0..cfg.n_layer {
            for (kiln, gguf, transposed) in [
                ("ln_1.weight", "attn_norm.weight", false),
                ("ln_1.bias", "attn_norm.bias", false),
                ("attn.c_attn.weight", "attn_qkv.weight", true),
                ("attn.c_attn.bias", "attn_qkv.bias", false),
                ("attn.c_proj.weight", "attn_output.weight", true),
                ("ln_2.bias", "ffn_norm.bias", false),
                ("mlp.c_fc.weight", "ffn_up.weight", true),
                ("mlp.c_proj.weight", "ffn_down.weight", true),
                ("mlp.c_proj.bias", "ffn_down.bias", false),
            ] {
                let (shape, x) = kiln_tensor(&layout, &params, &format!("h.{l}.{kiln}"), transposed);
                check_values(&g, &format!("blk.{l}.{gguf}"), &shape, &x, encoding);
            }
        }
        let (shape, x) = kiln_tensor(&layout, &params, "ln_f.bias", false);
        check_values(&g, "output_norm.bias", &shape, &x, encoding);
        println!("{encoding:?}: {} bytes, {} tensors, {} keys", bytes.len(), g.tensors.len(), g.kv.len());
    }
}

#[test]
fn an_imported_llama_as_gguf_has_its_rows_in_pairwise_rotation_order() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/smollm2_like");
    let files = read_dir(std::path::Path::new(dir)).unwrap();
    let loaded = load_model(&files).unwrap();
    let l = *loaded.config.llama().unwrap();
    let bytes = folder_gguf(&files, Encoding::F32, "smollm2_like").unwrap();
    let g = read(&bytes).unwrap();
    assert_eq!(g.get("general.architecture").and_then(Value::as_str), Some("llama"));
    assert_eq!(u64_of(&g, "llama.attention.head_count_kv"), l.n_kv_head as u64);
    assert_eq!(u64_of(&g, "llama.rope.dimension_count"), loaded.config.head_size() as u64);
    // its own ChatML template and stop token
    let template = g.get("tokenizer.chat_template").and_then(Value::as_str).unwrap();
    assert!(template.contains("<|im_start|>"), "{template}");
    let eos = u64_of(&g, "tokenizer.ggml.eos_token_id") as u32;
    assert_eq!(loaded.tokenizer.id_to_token(eos).as_deref(), Some("<|im_end|>"));
    // k_proj (KVC, C): row (head h, half i, j) of transformers' is row (h, 2j + i) of the file
    let hs = loaded.config.head_size();
    let (shape, k) = kiln_tensor(&loaded.layout, &loaded.params, "model.layers.0.self_attn.k_proj.weight", false);
    let t = g.tensor("blk.0.attn_k.weight").unwrap();
    assert_eq!(t.shape, shape);
    let got = g.values(t);
    let c = shape[1];
    for h in 0..l.n_kv_head {
        for i in 0..2 {
            for j in 0..hs / 2 {
                let from = (h * hs + i * hs / 2 + j) * c;
                let to = (h * hs + 2 * j + i) * c;
                assert_eq!(got[to..to + c], k[from..from + c], "head {h}, half {i}, row {j}");
            }
        }
    }
    // v_proj and the MLP as they are
    let (shape, v) = kiln_tensor(&loaded.layout, &loaded.params, "model.layers.1.mlp.gate_proj.weight", false);
    check_values(&g, "blk.1.ffn_gate.weight", &shape, &v, Encoding::F32);
}

#[test]
fn a_character_tokenizer_is_refused_with_the_reason() {
    let tok = tokenizer(TokenizerKind::Char);
    let cfg = GptConfig::gpt2(tok.vocab_size(), 64, 1, 2, 32);
    let layout = ParamLayout::new(&cfg);
    let files = model_files(&cfg, &layout, &tok, &layout.init(&cfg, 1)).unwrap();
    let err = folder_gguf(&files, Encoding::F16, "chars").unwrap_err().to_string();
    assert!(err.contains("byte-level BPE"), "{err}");
}
