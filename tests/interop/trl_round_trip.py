"""A Kiln model trained by TRL (SFT, DPO, reward), then read back by Kiln with the same logits.

Run by hand (not by CI), from the repository root, after `cargo build --release --bin kiln`:
    /tmp/iv/bin/pip install torch transformers trl datasets accelerate safetensors
    /tmp/iv/bin/python tests/interop/trl_round_trip.py [--kiln target/release/kiln] [--keep]

What it does, all on the CPU, in a temporary folder (about 10 s on 2 cores; no Hub access;
the folder is kept when a check fails, or with --keep):
1. Kiln makes the model and the data: `kiln pretrain --preset tiny`, `kiln sft` on the
   built-in story questions, `kiln candidates --rank script` for rankings. The rankings
   (prompt, answers, ranks; rank 1 best) become TRL's conversational preference pairs:
   every two answers of a prompt with different ranks. SFT data is the conversations
   Kiln trained on (sft-train.jsonl, already TRL's "messages" format).
2. TRL's SFTTrainer, DPOTrainer (reference: the Kiln SFT model) and RewardTrainer
   (AutoModelForSequenceClassification, one label) train from the Kiln SFT folder, 20
   steps each; each result is saved with save_pretrained (model and tokenizer).
3. `kiln logits` on the SFT and DPO results against transformers' forward pass on the
   same ids, float32: max |Δlogit| must be ≤ 1e-5; `kiln sample` shows Kiln generates.
4. `kiln score` on the reward model against AutoModelForSequenceClassification's
   logits[0, 0] on the ids Kiln scored, ≤ 1e-5.
5. Kiln's own reward model (`kiln reward` on the rankings; its folder says
   GPT2ForSequenceClassification, the score's bias folded into ln_f.bias) loaded by
   AutoModelForSequenceClassification and by pipeline("text-classification"): 20 pairs
   scored as `kiln score` scores them, ≤ 1e-5.
Prints each trainer's first and last training loss and the differences; exits non-zero
when a check fails. Checked with trl 1.16, transformers 5.25, torch 2.15 (CPU).
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
import warnings

import datasets
import torch
import transformers
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, PrinterCallback
from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer, SFTConfig, SFTTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOL = 1e-5
# Plain text: `kiln logits --text` reads "<|user|>" as characters, not as the special token
# (transformers' split_special_tokens=True); the chat template is checked with `kiln chat-ids`
TEXT = "Tom went to the sunny hill. He lost a shiny key on the way.\nWhat did Tom lose? A shiny key."
CHAT = [{"role": "user", "content": "Where did Tom go?"}, {"role": "assistant", "content": "The sunny hill."}]
CPU = ["--backend", "cpu"]  # the default, auto, spends time timing the GPU backend first


def run(kiln, *args):
    out = subprocess.run([kiln, *args], capture_output=True, text=True)
    if out.returncode:  # Kiln's message, not its usage text that follows
        raise RuntimeError(f"kiln {' '.join(args)}: exit {out.returncode}: {(out.stderr.strip().splitlines() or [''])[0]}")
    return out.stdout


def make_kiln_model(kiln, work):
    """Step 1: the Kiln SFT folder, its rankings as TRL pairs, and its conversations."""
    pre, sft = os.path.join(work, "pretrain"), os.path.join(work, "kiln-sft")
    rankings = os.path.join(work, "rankings.jsonl")
    # more steps than strictly needed (they take seconds): answers good enough to rank apart
    run(kiln, "pretrain", "--preset", "tiny", "--steps", "300", "--out", pre, *CPU)
    run(kiln, "sft", "--ckpt", pre, "--out", sft, "--steps", "200", "--eval", "0", *CPU)
    run(kiln, "candidates", "--ckpt", sft, "--out", rankings, "--n", "24", "--k", "4", "--rank", "script", *CPU)
    pairs = []
    for line in open(rankings):
        r = json.loads(line)
        if r["verdict"] != "ranked":
            continue
        for i, (a, ra) in enumerate(zip(r["answers"], r["ranks"])):
            for b, rb in zip(r["answers"][i + 1:], r["ranks"][i + 1:]):
                if ra != rb:  # lower rank is better; ties give no preference
                    chosen, rejected = (a, b) if ra < rb else (b, a)
                    pairs.append({"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": chosen}],
                                  "rejected": [{"role": "assistant", "content": rejected}]})
    assert pairs, "the script ranked every answer the same: no pairs"
    pairs_path = os.path.join(work, "pairs.jsonl")
    with open(pairs_path, "w") as f:
        f.writelines(json.dumps(p) + "\n" for p in pairs)
    chats = [json.loads(line) for line in open(os.path.join(sft, "sft-train.jsonl"))][:400]
    assert set(chats[0]) == {"messages"}, chats[0].keys()
    print(f"[kiln] {sft}: {len(chats)} conversations, {len(pairs)} preference pairs from {rankings}")
    return sft, pairs, pairs_path, chats


def trl_args(config_cls, out):
    """The same schedule for the three trainers. max_length: the tiny preset's context is
    64 positions (n_positions), and TRL's default of 1024 would index past it."""
    return config_cls(output_dir=out, max_steps=20, per_device_train_batch_size=4, learning_rate=1e-4,
                      logging_steps=1, report_to="none", use_cpu=True, save_strategy="no", max_length=64,
                      seed=0, disable_tqdm=True)


def fit(trainer):
    """Trains; returns every step's loss (logging_steps=1): one step's alone is noisy."""
    trainer.remove_callback(PrinterCallback)  # the 20 dicts a trainer prints; we print the losses
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def save(trainer, tok, out):
    trainer.model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def train_trl(sft, pairs, chats, work):
    """Step 2: SFT, DPO and reward training with TRL from the Kiln SFT folder."""
    tok = AutoTokenizer.from_pretrained(sft)
    results = {}

    model = AutoModelForCausalLM.from_pretrained(sft, dtype=torch.float32)
    # "messages" rows: TRL's loss covers every token, the prompt's too (assistant_only_loss
    # needs {% generation %} in the template, which Kiln's has not), so it starts higher than
    # Kiln's SFT loss on the answers alone
    trainer = SFTTrainer(model=model, args=trl_args(SFTConfig, os.path.join(work, "trl-sft-run")),
                         train_dataset=Dataset.from_list(chats), processing_class=tok)
    results["SFTTrainer"] = fit(trainer), save(trainer, tok, os.path.join(work, "trl-sft"))

    model = AutoModelForCausalLM.from_pretrained(sft, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(sft, dtype=torch.float32)
    trainer = DPOTrainer(model=model, ref_model=ref, args=trl_args(DPOConfig, os.path.join(work, "trl-dpo-run")),
                         train_dataset=Dataset.from_list(pairs), processing_class=tok)
    results["DPOTrainer"] = fit(trainer), save(trainer, tok, os.path.join(work, "trl-dpo"))

    model = AutoModelForSequenceClassification.from_pretrained(sft, num_labels=1, dtype=torch.float32)
    # the classifier's score is read at the last token that is not padding
    model.config.pad_token_id = tok.pad_token_id
    trainer = RewardTrainer(model=model, args=trl_args(RewardConfig, os.path.join(work, "trl-rm-run")),
                            train_dataset=Dataset.from_list(pairs), processing_class=tok)
    results["RewardTrainer"] = fit(trainer), save(trainer, tok, os.path.join(work, "trl-rm"))
    for name, (loss, out) in results.items():
        print(f"[{name}] {len(loss)} steps, loss {' '.join(f'{x:.3f}' for x in loss)}\n"
              f"    saved {out}: {' '.join(sorted(os.listdir(out)))}")
    return results


def check_causal_lm(kiln, name, folder):
    """Step 3: Kiln's logits on a TRL-saved folder against transformers' on the same ids."""
    out = json.loads(run(kiln, "logits", "--ckpt", folder, "--text", TEXT, *CPU))
    ids = out["ids"]
    want = torch.tensor(out["logits"], dtype=torch.float64).view(len(ids), out["vocab_size"])
    tok = AutoTokenizer.from_pretrained(folder)
    # the tokenizer and chat template (chat_template.jinja) that TRL saved give Kiln's ids
    same_ids = tok(TEXT).input_ids == ids
    chat_ids = json.loads(run(kiln, "chat-ids", "--ckpt", folder, "--json", json.dumps(CHAT)))["ids"]
    same_chat = tok.apply_chat_template(CHAT, tokenize=True)["input_ids"] == chat_ids
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        got = model(input_ids=torch.tensor([ids])).logits[0].double()
    err = (got - want).abs().max().item()
    rel = err / want.abs().max().item()
    text = run(kiln, "sample", "--ckpt", folder, "--prompt", "Once upon a time", "--temperature", "0",
               "--tokens", "20", *CPU).strip()
    print(f"[{name}] {len(ids)} ids: max |Δlogit| {err:.2e}, relative {rel:.2e}; same ids as transformers' "
          f"tokenizer: {same_ids}, as its chat template: {same_chat}")
    print(f"[{name}] kiln sample: {text!r}")
    assert same_ids and same_chat and err <= TOL, (name, same_ids, same_chat, err)
    return err


def check_reward(kiln, rm_dir, pairs_path, limit=None, name="reward"):
    """Step 4: `kiln score --ckpt RM --data PAIRS` prints a JSON line a pair:
    {"chosen_ids": [...], "chosen": x, "rejected_ids": [...], "rejected": y};
    each score must be the transformers classifier's logits[0, 0] on those ids."""
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir, dtype=torch.float32).eval()
    lines = [json.loads(line) for line in run(kiln, "score", "--ckpt", rm_dir, "--data", pairs_path, *CPU).splitlines()
             if line.strip()]
    assert lines, "kiln score printed nothing"
    lines = lines[:limit]
    err, wins = 0.0, 0
    with torch.no_grad():
        for line in lines:
            for side in ("chosen", "rejected"):
                want = model(input_ids=torch.tensor([line[side + "_ids"]])).logits[0, 0].item()
                err = max(err, abs(want - line[side]))
            wins += line["chosen"] > line["rejected"]
    print(f"[{name}] {len(lines)} pairs: max |Δscore| {err:.2e}; Kiln ranks chosen first in {wins}/{len(lines)}")
    assert err <= TOL, err
    return err


def check_kiln_reward(kiln, sft, rankings, pairs_path, work):
    """Step 5: Kiln's reward model as transformers' classifier."""
    rm = os.path.join(work, "kiln-rm")
    run(kiln, "reward", "--ckpt", sft, "--rankings", rankings, "--out", rm, "--steps", "30", *CPU)
    config = json.load(open(os.path.join(rm, "config.json")))
    assert config["architectures"] == ["GPT2ForSequenceClassification"], config["architectures"]
    err = check_reward(kiln, rm, pairs_path, limit=20, name="kiln-rm")
    # the pipeline tokenizes text itself: one answer's text, and the classifier on its ids
    tok = AutoTokenizer.from_pretrained(rm)
    clf = transformers.pipeline("text-classification", model=rm, tokenizer=tok, function_to_apply="none")
    line = json.loads(run(kiln, "score", "--ckpt", rm, "--data", pairs_path, *CPU).splitlines()[0])
    text = tok.decode(line["chosen_ids"][1:])  # the tokenizer puts <|bos|> back first
    assert tok(text)["input_ids"] == line["chosen_ids"], "the text does not tokenize back to the ids Kiln scored"
    got = clf(text)[0]["score"]
    print(f"[kiln-rm] pipeline('text-classification'): {got:.6f}, kiln score {line['chosen']:.6f}")
    assert abs(got - line["chosen"]) <= TOL
    return err


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kiln", default=os.path.join(ROOT, "target", "release", "kiln"))
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    args = p.parse_args()
    start = time.time()
    torch.manual_seed(0)
    # quiet: progress bars, the new score head's "MISSING" report, TRL's use of transformers'
    # deprecated gradient_checkpointing names
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning)
    work = tempfile.mkdtemp(prefix="kiln-trl-")
    print(f"[work] {work}")
    sft, pairs, pairs_path, chats = make_kiln_model(args.kiln, work)
    kiln_rm = check_kiln_reward(args.kiln, sft, os.path.join(work, "rankings.jsonl"), pairs_path, work)
    results = train_trl(sft, pairs, chats, work)
    diffs = {"SFTTrainer": check_causal_lm(args.kiln, "trl-sft", results["SFTTrainer"][1]),
             "DPOTrainer": check_causal_lm(args.kiln, "trl-dpo", results["DPOTrainer"][1])}
    try:
        # last, and on its own: it needs `kiln score`; a failure still fails the script
        diffs["RewardTrainer"] = check_reward(args.kiln, results["RewardTrainer"][1], pairs_path)
    finally:
        print(f"\n{'trainer':<14} {'first loss':>10} {'last loss':>10} {'kiln max |Δ|':>13}")
        for name, (loss, _) in results.items():
            diff = f"{diffs[name]:.2e}" if name in diffs else "-"
            print(f"{name:<14} {loss[0]:>10.4f} {loss[-1]:>10.4f} {diff:>13}")
        print(f"Kiln's reward model as GPT2ForSequenceClassification: max |Δscore| {kiln_rm:.2e} on 20 pairs")
        print(f"({time.time() - start:.0f} s after the imports)")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
