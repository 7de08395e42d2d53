"""Shows that a folder Kiln exports loads in Hugging Face transformers and behaves as it
does in Kiln. Run by a developer (not by CI), with PyTorch and transformers installed:

    /tmp/pt/bin/python tests/golden/check_transformers.py

Uses $KILN as the kiln binary when set, else `cargo run --release`. For an English
byte-level BPE model and a Chinese character model it trains a few steps with
`kiln pretrain`, loads the folder with GPT2LMHeadModel and PreTrainedTokenizerFast, and
checks that:

- plain `tokenizer(text)` gives Kiln's token ids (`<|bos|>` first, as Kiln adds it), and
  decoding them gives the text back;
- the logits equal Kiln's own (`kiln logits`), relative to the largest logit;
- greedy generation agrees: `kiln sample --temperature 0` (GPU and CPU backends) prints
  the same text as `model.generate(do_sample=False)` from `tokenizer(prompt)`, decoded
  with skip_special_tokens=True.

Then, on the English run, `kiln sft` fine-tunes it, and the exported chat template must
give Kiln's ids: `tokenizer.apply_chat_template(messages)` equals `kiln chat-ids` for a
conversation with a system turn and two exchanges, and with add_generation_prompt=True
for one that ends on a user turn; the rendered text must be the documented template.

Exits non-zero on any mismatch.
"""

import json
import os
import subprocess
import sys
import tempfile

import torch
import transformers
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASES = [
    ("en-bpe", ["--lang", "en", "--tokenizer", "bpe", "--vocab", "512"], "Once upon a time, Lily the little fox"),
    ("zh-char", ["--lang", "zh", "--tokenizer", "char"], "从前，有一只可爱的小狐狸，名叫莉莉。"),
]
PROMPTS = {"en-bpe": "Once upon a time, there was", "zh-char": "从前，有一只"}
NEW_TOKENS = 24  # prompt + new tokens stay inside the tiny preset's context of 64
TOLERANCE = 1e-4  # relative to the largest logit
# Kiln's sampler (crate/sample.rs) never picks these, and stops at <|eos|> or <|end|>.
NEVER = ["<|pad|>", "<|bos|>", "<|unk|>", "<|system|>", "<|user|>", "<|assistant|>"]
STOP = ["<|eos|>", "<|end|>"]

CONVERSATION = [
    {"role": "system", "content": "You are a kind storyteller. Answer in one sentence."},
    {"role": "user", "content": "Who is Lily?"},
    {"role": "assistant", "content": "Lily is a little fox who lives in the forest."},
    {"role": "user", "content": "What does she like?\nTell me briefly."},
    {"role": "assistant", "content": " She likes red apples, 3 of them!"},
]

failures = []


def check(ok, message, detail=""):
    """Prints the outcome; `detail` only when it failed."""
    print(("ok   " if ok else "FAIL ") + message + ("" if ok or not detail else "\n" + detail))
    if not ok:
        failures.append(message)


def kiln(*args):
    cmd = [os.environ["KILN"]] if os.environ.get("KILN") else ["cargo", "run", "--quiet", "--release", "--bin", "kiln", "--"]
    run = subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"kiln {' '.join(args[:3])} … failed ({run.returncode}):\n{run.stderr[-4000:]}")
    return run.stdout


def token_ids(tokenizer, names):
    vocab = tokenizer.get_vocab()
    return [vocab[n] for n in names]  # a KeyError names a special token the export lacks


def check_ids_and_logits(name, out, text, tokenizer, model):
    mine = json.loads(kiln("logits", "--ckpt", out, "--text", text))
    ids = tokenizer(text)["input_ids"]
    check(ids[:1] == [tokenizer.bos_token_id], f"{name}: tokenizer(text) starts with <|bos|> ({ids[:3]} …)")
    check(ids == mine["ids"], f"{name}: tokenizer(text) gives Kiln's ids", f"  hf   {ids}\n  kiln {mine['ids']}")
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    check(decoded == text, f"{name}: decode round-trip ({decoded!r})")
    with torch.no_grad():
        logits = model(torch.tensor([mine["ids"]])).logits[0].float()
    kiln_logits = torch.tensor(mine["logits"]).view(len(mine["ids"]), mine["vocab_size"])
    err = ((logits - kiln_logits).abs().max() / logits.abs().max()).item()
    check(err <= TOLERANCE, f"{name}: {len(ids)} tokens, logits max rel err {err:.2e} (tolerance {TOLERANCE:.0e})")
    return err


def check_greedy(name, out, prompt, tokenizer, model):
    """`kiln sample --temperature 0` against transformers' greedy generate. Kiln's rules
    are passed to generate: the same stop tokens and the same never-chosen tokens."""
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(**inputs, do_sample=False, max_new_tokens=NEW_TOKENS,
                             eos_token_id=token_ids(tokenizer, STOP), suppress_tokens=token_ids(tokenizer, NEVER),
                             pad_token_id=tokenizer.pad_token_id)
    theirs = tokenizer.decode(gen[0], skip_special_tokens=True)
    for backend in ["gpu", "cpu"]:
        printed = kiln("sample", "--ckpt", out, "--prompt", prompt, "--temperature", "0",
                       "--tokens", str(NEW_TOKENS), "--backend", backend)
        mine = printed[:-1] if printed.endswith("\n") else printed
        if mine == theirs:
            check(True, f"{name}: greedy {NEW_TOKENS} tokens agree ({backend}): {mine!r}")
            continue
        # Where they part, is it a near tie (within the logits tolerance) or a real difference?
        new = gen[0, inputs["input_ids"].shape[1]:].tolist()
        prefix, gap = inputs["input_ids"][0].tolist(), None
        for tok in new:
            text_so_far = tokenizer.decode(prefix + [tok], skip_special_tokens=True)
            if not mine.startswith(text_so_far):
                with torch.no_grad():
                    row = model(torch.tensor([prefix])).logits[0, -1]
                top = row.topk(2).values
                gap = ((top[0] - top[1]) / row.abs().max()).item()
                break
            prefix.append(tok)
        tie = gap is not None and gap <= TOLERANCE
        check(tie, f"{name}: greedy generation differs ({backend}); top-2 gap where they part "
                   f"{gap if gap is None else f'{gap:.2e}'}{' (a near tie: accepted)' if tie else ''}",
              f"  kiln {mine!r}\n  hf   {theirs!r}")


def expected_text(messages, generation_prompt):
    """Kiln's template, written out: <|bos|>, then <|role|> content <|end|> per turn."""
    text = "<|bos|>" + "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
    return text + ("<|assistant|>" if generation_prompt else "")


def check_chat(out):
    sft_out = out + "-sft"
    kiln("sft", "--ckpt", out, "--out", sft_out, "--steps", "20", "--lang", "en", "--sample-every", "0", "--eval", "0", "--backend", "cpu")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(sft_out)
    check(bool(tokenizer.chat_template), "sft: tokenizer_config.json has a chat_template")
    cases = [(CONVERSATION, False), (CONVERSATION[:-1], True)]
    for messages, generation_prompt in cases:
        label = f"chat ({len(messages)} turns{', add_generation_prompt' if generation_prompt else ''})"
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        check(text == expected_text(messages, generation_prompt), f"{label}: rendered text {text!r}")
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        args = ["chat-ids", "--ckpt", sft_out, "--json", json.dumps(messages)]
        mine = json.loads(kiln(*args, *(["--generation-prompt"] if generation_prompt else [])))
        check(ids == mine["ids"], f"{label}: apply_chat_template gives Kiln's ids ({len(ids)} tokens)",
              f"  hf   {ids}\n  kiln {mine['ids']}")
        if generation_prompt:
            check(ids[-1:] == token_ids(tokenizer, ["<|assistant|>"]), f"{label}: ends with <|assistant|>")
        else:
            flags = mine.get("supervised", [])
            taught = tokenizer.decode([i for i, s in zip(mine["ids"], flags) if s], skip_special_tokens=True)
            print(f"     {label}: Kiln supervises {sum(map(bool, flags))} of {len(flags)} tokens: {taught!r}")


def main():
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    transformers.logging.set_verbosity_error()  # chats longer than the context are fine here
    worst = 0.0
    for name, options, text in CASES:
        out = os.path.join(tempfile.mkdtemp(), name)
        kiln("pretrain", "--steps", "40", "--out", out, "--sample-every", "0", *options)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(out)
        model = GPT2LMHeadModel.from_pretrained(out).eval()
        worst = max(worst, check_ids_and_logits(name, out, text, tokenizer, model))
        check_greedy(name, out, PROMPTS[name], tokenizer, model)
        if name == "en-bpe":
            check_chat(out)
    print(f"worst logits error {worst:.2e} (tolerance {TOLERANCE:.0e}); {len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
