"""Kiln's GGUF files, read by llama.cpp's own reader (the `gguf` package) and run by llama.cpp.

Run by hand (not by CI), from the repository root, after `cargo build --release --bin kiln`:
    /tmp/iv/bin/pip install torch transformers safetensors gguf
    /tmp/iv/bin/python tests/interop/gguf_check.py [--kiln target/release/kiln]
        [--llama-simple PATH/TO/llama.cpp/build/bin/llama-simple] [--keep]

What it does, on the CPU, in a temporary folder (no Hub access):
1. Three models: a Kiln chat model (`kiln pretrain --preset tiny` then `kiln sft`, GPT-2),
   tests/golden/smollm2_like (a SmolLM2-shaped Llama folder with its ChatML template) and a
   Qwen2 folder transformers makes from a config (random weights, q/k/v biases, its own
   lm_head) with smollm2_like's tokenizer files.
2. `kiln export --gguf` of each in f32, f16 and q8_0; GGUFReader reads every key and
   tensor. Each tensor is compared with the folder's own weights mapped here, written
   independently of Kiln's Rust (GPT-2's Conv1D weights transposed; Llama's q_proj and
   k_proj permuted as llama.cpp's convert_hf_to_gguf.py permutes them): equal in f32,
   equal to numpy's float16 rounding in f16, and in q8_0 the bytes equal to
   gguf.quants.quantize's and the values within Q8_0's bound. The tokens, merges count,
   special ids and chat template are checked against the tokenizer.
3. With --llama-simple (llama.cpp's examples/simple, greedy): each model's greedy text in
   llama.cpp against Kiln's (`kiln sample --temperature 0`, `kiln chat --temperature 0`) or,
   for the imported folders, transformers' greedy generate.
Exits non-zero when a check fails. Checked with gguf 0.19, transformers 5.25, torch 2.15.
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np
import torch
import transformers
from gguf import GGMLQuantizationType as Q, GGUFReader
from gguf.quants import dequantize, quantize
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOLLM = os.path.join(ROOT, "tests", "golden", "smollm2_like")
CPU = ["--backend", "cpu"]
QUESTIONS = ["Who came to play?", "Where did Anna go?", "What did Lily find?", "How did Sam feel?"]


def run(*args, stdin=None):
    out = subprocess.run(list(args), capture_output=True, text=True, input=stdin)
    if out.returncode:
        raise RuntimeError(f"{' '.join(args)}: exit {out.returncode}: {out.stderr.strip()[-400:]}")
    return out.stdout


def kiln_chat_model(kiln, work):
    pre, sft = os.path.join(work, "pretrain"), os.path.join(work, "kiln-sft")
    run(kiln, "pretrain", "--preset", "tiny", "--steps", "300", "--out", pre, *CPU)
    run(kiln, "sft", "--ckpt", pre, "--out", sft, "--steps", "300", "--eval", "0", *CPU)
    return sft


def qwen2_folder(work):
    """A Qwen2 model from a config alone, with smollm2_like's tokenizer (ByteLevel BPE)."""
    out = os.path.join(work, "qwen2")
    tok = AutoTokenizer.from_pretrained(SMOLLM)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # biases away from zero, so a misplaced one shows
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def permute(w, heads):
    """convert_hf_to_gguf.py's LlamaModel.permute: halves of each head → adjacent pairs."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def expected_tensors(folder):
    """The folder's weights under llama.cpp's names, in llama.cpp's layout (numpy f32)."""
    cfg = json.load(open(os.path.join(folder, "config.json")))
    sd = {k.removeprefix("transformer."): v.float().numpy() for k, v in load_file(os.path.join(folder, "model.safetensors")).items()}
    out = {}
    if cfg["model_type"] == "gpt2":
        out["token_embd.weight"] = out["output.weight"] = sd["wte.weight"]
        out["position_embd.weight"] = sd["wpe.weight"]
        out["output_norm.weight"], out["output_norm.bias"] = sd["ln_f.weight"], sd["ln_f.bias"]
        names = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
                 "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
        for l in range(cfg["n_layer"]):
            for hf, gg in names.items():
                w = sd[f"h.{l}.{hf}.weight"]
                out[f"blk.{l}.{gg}.weight"] = w.T.copy() if w.ndim == 2 else w  # Conv1D is (in, out)
                out[f"blk.{l}.{gg}.bias"] = sd[f"h.{l}.{hf}.bias"]
        return out
    out["token_embd.weight"] = sd["model.embed_tokens.weight"]
    out["output_norm.weight"] = sd["model.norm.weight"]
    if "lm_head.weight" in sd and not cfg.get("tie_word_embeddings", False):
        out["output.weight"] = sd["lm_head.weight"]
    pairwise = cfg["model_type"] != "qwen2"  # Qwen2 runs in llama.cpp's half-rotating mode
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for l in range(cfg["num_hidden_layers"]):
        for hf, gg in names.items():
            for kind in ("weight", "bias"):
                w = sd.get(f"model.layers.{l}.{hf}.{kind}")
                if w is None:
                    continue
                if pairwise and hf == "self_attn.q_proj":
                    w = permute(w, cfg["num_attention_heads"])
                if pairwise and hf == "self_attn.k_proj":
                    w = permute(w, cfg["num_key_value_heads"])
                out[f"blk.{l}.{gg}.{kind}"] = w
    return out


def field(reader, key):
    f = reader.fields[key]
    if f.types[0].name == "ARRAY":
        return [f.contents(i) for i in range(len(f.data))] if f.types[-1].name == "STRING" else [f.parts[i][0] for i in f.data]
    return f.contents()


def check_file(path, folder, qtype):
    reader = GGUFReader(path)
    want = expected_tensors(folder)
    got = {t.name: t for t in reader.tensors}
    assert set(got) == set(want), f"tensors: {sorted(set(got) ^ set(want))}"
    worst = 0.0
    for name, x in want.items():
        t = got[name]
        assert list(reversed(t.shape.tolist())) == list(x.shape), f"{name}: {t.shape} against {x.shape}"
        if x.ndim == 1 or qtype == "f32":
            assert t.tensor_type == Q.F32 or x.ndim > 1, name
            back = dequantize(t.data, t.tensor_type).reshape(x.shape)
            if t.tensor_type == Q.F32:
                assert np.array_equal(back, x), f"{name} is not equal in f32"
                continue
        if t.tensor_type == Q.F16:
            back = dequantize(t.data, Q.F16).reshape(x.shape)
            assert np.array_equal(back, x.astype(np.float16).astype(np.float32)), f"{name} is not f16's rounding"
        elif t.tensor_type == Q.Q8_0:
            assert np.array_equal(np.asarray(t.data).reshape(-1), quantize(x, Q.Q8_0).reshape(-1)), f"{name}: bytes differ from gguf.quants.quantize"
            back = dequantize(t.data, Q.Q8_0).reshape(x.shape)
            blocks, got_blocks = x.reshape(-1, 32), back.reshape(-1, 32)
            d = np.abs(blocks).max(axis=1, keepdims=True) / 127
            bound = d.astype(np.float16).astype(np.float32) / 2 + 127 * np.abs(d - d.astype(np.float16).astype(np.float32)) + 1e-6 * d * 127
            err = np.abs(blocks - got_blocks)
            assert (err <= bound).all(), f"{name}: Q8_0 error {err.max()} past its bound"
            worst = max(worst, float(err.max()))
        else:
            raise AssertionError(f"{name}: type {t.tensor_type.name} for {qtype}")
    tok = AutoTokenizer.from_pretrained(folder)
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert tokens[: len(tok)] == tok.convert_ids_to_tokens(list(range(len(tok)))), "tokens differ from the tokenizer's"
    template = field(reader, "tokenizer.chat_template")
    assert template.replace("{% generation %}", "").replace("{% endgeneration %}", "") == (tok.chat_template or "").replace("{% generation %}", "").replace("{% endgeneration %}", ""), "chat template"
    eos = int(field(reader, "tokenizer.ggml.eos_token_id"))
    arch = field(reader, "general.architecture")
    print(f"  {os.path.basename(path)}: {arch}, {len(reader.tensors)} tensors equal ({qtype}; Q8_0 worst error {worst:.2e}), "
          f"{len(reader.fields)} keys, {len(tokens)} tokens, {len(field(reader, 'tokenizer.ggml.merges'))} merges, "
          f"eos {tokens[eos]!r}, template {len(template)} chars")


def llama_simple(binary, gguf_path, prompt, n=40):
    out = run(binary, "-m", gguf_path, "-n", str(n), prompt)
    return out


def check_llama_cpp(binary, kiln, name, folder, gguf_path):
    """Greedy text in llama.cpp against Kiln's (its own models) or transformers' (imported)."""
    if name == "kiln-sft":
        story = "Once upon a time"
        ours = run(kiln, "sample", "--ckpt", folder, "--prompt", story, "--temperature", "0", "--tokens", "40", *CPU).rstrip("\n")
        theirs = llama_simple(binary, gguf_path, story).removeprefix("<|bos|>").rstrip("\n")
        print(f"  llama.cpp {theirs!r} | kiln sample {ours!r}")
        assert theirs == ours
        for q in QUESTIONS:
            ours = run(kiln, "chat", "--ckpt", folder, "--temperature", "0", *CPU, stdin=q + "\n").strip()
            prompt = f"<|user|>{q}<|end|><|assistant|>"
            theirs = llama_simple(binary, gguf_path, prompt).removeprefix("<|bos|>").removeprefix(prompt).strip()
            print(f"  {q} llama.cpp {theirs!r} | kiln chat {ours!r}")
            assert theirs == ours
        return
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    for q in QUESTIONS[:2]:
        text = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        ids = tok(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=12, do_sample=False)
        want = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        theirs = llama_simple(binary, gguf_path, text, n=12)
        theirs = theirs[len(text):] if theirs.startswith(text) else theirs
        # llama-simple prints special tokens it generates; transformers' decode skipped them
        theirs = theirs.replace(tok.eos_token, "")
        print(f"  {q} llama.cpp {theirs!r} | transformers {want!r}")
        assert theirs.strip() == want.strip()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kiln", default=os.path.join(ROOT, "target", "release", "kiln"))
    p.add_argument("--llama-simple", default=os.environ.get("LLAMA_SIMPLE"))
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    transformers.logging.set_verbosity_error()
    work = tempfile.mkdtemp(prefix="kiln-gguf-")
    print(f"[work] {work}")
    models = {"kiln-sft": kiln_chat_model(args.kiln, work), "smollm2_like": SMOLLM, "qwen2": qwen2_folder(work)}
    for name, folder in models.items():
        print(f"[{name}] {folder}")
        for qtype in ("f32", "f16", "q8_0"):
            path = os.path.join(work, f"{name}-{qtype}.gguf")
            run(args.kiln, "export", "--ckpt", folder, "--gguf", path, "--type", qtype)
            check_file(path, folder, qtype)
        if args.llama_simple:
            check_llama_cpp(args.llama_simple, args.kiln, name, folder, os.path.join(work, f"{name}-q8_0.gguf"))
        else:
            print("  llama.cpp: not run (no --llama-simple given)")
    print("every GGUF file checked")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
