"""Shows that a folder Kiln exports loads in Hugging Face transformers and computes the
same logits. Run by a developer (not by CI), with PyTorch and transformers installed:

    /tmp/pt/bin/python tests/golden/check_transformers.py

For an English byte-level BPE model and a Chinese character model it: trains a few steps
with `kiln pretrain`, loads the folder with GPT2LMHeadModel and PreTrainedTokenizerFast,
checks the tokenizer gives Kiln's token ids, and compares the logits with Kiln's own
(`kiln logits`), relative to the largest logit. Exits non-zero on any mismatch.
"""

import json
import os
import subprocess
import sys
import tempfile

import torch
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASES = [
    ("en-bpe", ["--lang", "en", "--tokenizer", "bpe", "--vocab", "512"], "Once upon a time, Lily the little fox"),
    ("zh-char", ["--lang", "zh", "--tokenizer", "char"], "从前，有一只可爱的小狐狸，名叫莉莉。"),
]


def kiln(*args):
    cmd = ["cargo", "run", "--quiet", "--release", "--bin", "kiln", "--", *args]
    return subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout


def main():
    worst = 0.0
    for name, options, text in CASES:
        out = os.path.join(tempfile.mkdtemp(), name)
        kiln("pretrain", "--steps", "40", "--out", out, *options)
        mine = json.loads(kiln("logits", "--ckpt", out, "--text", text))
        tokenizer = PreTrainedTokenizerFast.from_pretrained(out)
        model = GPT2LMHeadModel.from_pretrained(out).eval()
        ids = [tokenizer.bos_token_id] + tokenizer(text)["input_ids"]
        assert ids == mine["ids"], f"{name}: token ids differ\n{ids}\n{mine['ids']}"
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        kiln_logits = torch.tensor(mine["logits"]).view(len(ids), mine["vocab_size"])
        err = ((logits - kiln_logits).abs().max() / logits.abs().max()).item()
        decoded = tokenizer.decode(ids, skip_special_tokens=True)
        print(f"{name}: {len(ids)} tokens, decode round-trip {decoded == text}, "
              f"logits max rel err {err:.2e} (transformers {__import__('transformers').__version__})")
        assert decoded == text
        worst = max(worst, err)
    print(f"worst logits error {worst:.2e} (tolerance 1e-4)")
    sys.exit(0 if worst <= 1e-4 else 1)


if __name__ == "__main__":
    main()
