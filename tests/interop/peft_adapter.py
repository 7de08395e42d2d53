"""Kiln's LoRA adapters, loaded by Python's PEFT onto their base, give Kiln's logits.

Run by hand (not by CI), from the repository root, after `cargo build --bin kiln`:
    /tmp/pt/bin/pip install torch transformers safetensors peft
    /tmp/pt/bin/python tests/interop/peft_adapter.py [--kiln target/debug/kiln]

What it does, on tests/golden/smollm2_like (a SmolLM2-shaped LlamaForCausalLM folder with
its ChatML template, made by tests/golden/make_llama_folder.py):
1. `kiln sft --lora-rank 8 --lora-targets all-linear` on a few conversations: the output
   folder holds the frozen weights and the adapters as PEFT's two files.
2. `kiln dpo` on a few pairs with the same LoRA options, from that folder: its adapters go
   on top of the fine-tuned model (the SFT adapters merged, the reference of DPO).
3. For each folder: `kiln logits` (Kiln's forward pass with the adapters merged) against
   transformers + `PeftModel.from_pretrained(base, folder)` (the adapters unmerged, as
   PEFT runs them) on the same ids, in float32; then `merge_and_unload()`. The base for
   SFT is the imported folder; for DPO, the SFT model that PEFT itself made by merging
   the SFT adapters.
Prints each comparison's max relative error and fails past 1e-4.

With --adapter DIR (a PEFT folder the page exported on smollm2_like, as
tests/browser/own_model.test.mjs keeps with KILN_ADAPTER_OUT=DIR), checks that adapter
instead: PEFT on the base against `kiln logits` on the base folder with the adapter's two
files beside it.
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = os.path.join(ROOT, "tests", "golden", "smollm2_like")
TEXT = "<|im_start|>user\nGreet me.<|im_end|>\n<|im_start|>assistant\nHello!"
LORA = ["--lora-rank", "8", "--lora-alpha", "16", "--lora-targets", "all-linear", "--backend", "cpu"]
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def run(kiln, *args):
    out = subprocess.run([kiln, *args], check=True, capture_output=True, text=True)
    return out.stdout


def kiln_logits(kiln, folder):
    out = json.loads(run(kiln, "logits", "--ckpt", folder, "--text", TEXT))
    return out["ids"], torch.tensor(out["logits"], dtype=torch.float64).view(len(out["ids"]), out["vocab_size"])


def base_only(folder, into):
    """The folder's model files without the adapter's (transformers would read those as
    a request to load the adapter's base from the Hub)."""
    os.makedirs(into, exist_ok=True)
    for name in os.listdir(folder):
        if name not in ADAPTER_FILES and name != "model.safetensors.index.json":
            shutil.copy(os.path.join(folder, name), into)
    return into


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def check(name, kiln, base_model, folder):
    ids, want = kiln_logits(kiln, folder)
    peft_model = PeftModel.from_pretrained(base_model, folder).eval()
    with torch.no_grad():
        got = peft_model(input_ids=torch.tensor([ids])).logits[0].double()
        err = rel(got, want)
        merged = peft_model.merge_and_unload()
        merged_err = rel(merged(input_ids=torch.tensor([ids])).logits[0].double(), want)
    print(f"[{name}] {len(ids)} ids: PEFT (adapters unmerged) vs kiln logits max rel err {err:.2e}; "
          f"merge_and_unload vs kiln {merged_err:.2e}")
    assert err < 1e-4 and merged_err < 1e-4, (err, merged_err)
    return merged


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kiln", default=os.path.join(ROOT, "target", "debug", "kiln"))
    p.add_argument("--adapter", help="a PEFT folder exported on smollm2_like (the page's)")
    args = p.parse_args()
    kiln = args.kiln
    work = tempfile.mkdtemp(prefix="kiln-peft-")
    if args.adapter:
        folder = base_only(BASE, os.path.join(work, "with-adapter"))
        for name in ADAPTER_FILES:
            shutil.copy(os.path.join(args.adapter, name), folder)
        base = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32)
        check(os.path.basename(os.path.normpath(args.adapter)), kiln, base, folder)
        shutil.rmtree(work)
        return
    chats = [("Hi", "Hello there."), ("Name a colour.", "Blue."), ("Two plus two?", "Four."),
             ("Bye", "Goodbye!"), ("Say yes.", "Yes."), ("Greet me.", "Hello!")]
    pairs = [("Say yes.", "Yes.", "No."), ("Greet me.", "Hello!", "Go away."),
             ("Count to two.", "One, two.", "Three."), ("Hi", "Hello there.", "Leave.")]
    with open(os.path.join(work, "chat.jsonl"), "w") as f:
        for q, a in chats:
            f.write(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n")
    with open(os.path.join(work, "pairs.jsonl"), "w") as f:
        for q, c, r in pairs:
            f.write(json.dumps({"prompt": q, "chosen": c, "rejected": r}) + "\n")
    sft, dpo = os.path.join(work, "sft"), os.path.join(work, "dpo")
    run(kiln, "sft", "--ckpt", BASE, "--data", os.path.join(work, "chat.jsonl"), "--out", sft,
        "--steps", "30", "--batch-size", "2", "--lr", "3e-3", *LORA)
    run(kiln, "dpo", "--ckpt", sft, "--rankings", os.path.join(work, "pairs.jsonl"), "--out", dpo,
        "--steps", "6", "--batch-size", "4", "--eval", "0", *LORA)
    for folder in (sft, dpo):
        cfg = json.load(open(os.path.join(folder, "adapter_config.json")))
        print(f"[{os.path.basename(folder)}] adapter_config.json: r {cfg['r']}, lora_alpha {cfg['lora_alpha']}, "
              f"{len(cfg['target_modules'])} target modules")

    base = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32)
    sft_model = check("sft", kiln, base, sft)
    # DPO's frozen weights are the SFT model merged; PEFT's own merge must be the same
    dpo_base = AutoModelForCausalLM.from_pretrained(base_only(dpo, os.path.join(work, "dpo-base")), dtype=torch.float32)
    weights_err = max(rel(a.double(), b.double()) for a, b in zip(dpo_base.state_dict().values(), sft_model.state_dict().values()))
    print(f"[dpo] its frozen weights vs PEFT's merge of the SFT adapters: max rel err {weights_err:.2e}")
    assert weights_err < 1e-5
    check("dpo", kiln, dpo_base, dpo)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
