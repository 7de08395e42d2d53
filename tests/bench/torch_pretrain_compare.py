"""Kiln's pretraining against PyTorch's on real prose, judged on the same held-out text.

Run by a developer (not by CI), with PyTorch and transformers installed:

    /tmp/pt/bin/python tests/bench/torch_pretrain_compare.py [CORPUS.txt] [--steps 400]

Without CORPUS, writes one with tests/bench/python_docs.py (the docstrings of the local
Python standard library). Then:

1. Splits the corpus into documents the way Kiln does (blank lines), holds out a fixed,
   seeded share of them as validation text, and writes the rest to TRAIN.txt.
2. Runs `kiln pretrain --corpus TRAIN.txt --preset P --steps N --backend cpu
   --sample-every 0` (Kiln's defaults otherwise; it holds out its own 10% of TRAIN.txt
   for its own validation loss).
3. Loads Kiln's exported folder in transformers and measures the mean per-token loss on
   the held-out documents, prepared two ways: packed (every document as
   `<|bos|> ids <|eos|>`, one after another, cut into windows of the context, each window
   one token longer than the context so every token is predicted once) and one row per
   document (the same, but each document starts its own row, as unpacked Kiln trains).
4. Trains a fresh transformers GPT-2 of the same shape, with the same tokenizer (Kiln's),
   batch, steps, learning-rate schedule (linear warmup, cosine to lr/10), AdamW settings
   (weight decay on matrices only) and clipping, on all of TRAIN.txt packed the same way,
   and measures it on the same held-out windows. As a control, trains it again on one
   padded row per document (as unpacked Kiln batches), so a gap splits into what the
   batching explains and what it does not (torch_unpacked_*).
5. Measures the share of padding in batches of one row per document (Kiln's unpacked
   batching) and of packed windows.

Prints one JSON object. The defaults (tiny preset, BPE vocabulary 512, 400 steps) take
a few minutes on two CPU cores.
"""

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
import transformers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))

# Kiln's PretrainConfig::default (crate/train/pretrain.rs); `--lr X` sets min_lr to X/10.
BATCH, WARMUP, BETAS, EPS, WEIGHT_DECAY, CLIP = 8, 20, (0.9, 0.99), 1e-8, 0.1, 1.0


def kiln_command():
    """The kiln binary: $KILN, else the release build in $CARGO_TARGET_DIR or target/,
    else `cargo run --release`."""
    if os.environ.get("KILN"):
        return [os.environ["KILN"]]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    binary = os.path.join(target, "release", "kiln")
    if os.path.exists(binary):
        return [binary]
    return ["cargo", "run", "--quiet", "--release", "--bin", "kiln", "--"]


def documents(text):
    """crate/data/mod.rs documents(): split on blank lines, trim, drop empty."""
    text = text.replace("\r\n", "\n")
    return [d.strip() for d in text.split("\n\n") if d.strip()]


def rows_of(ids, t, bos, eos):
    """crate/data/mod.rs rows_of(): `<|bos|> ids <|eos|>` cut every t tokens into rows
    of at most t + 1 (consecutive rows overlap by one)."""
    seq = [bos] + ids + [eos]
    return [seq[s:s + t + 1] for s in range(0, len(seq) - 1, t)]


def packed_windows(docs_ids, t, bos, eos):
    """Every document as `<|bos|> ids <|eos|>`, one after another, cut into windows of
    t + 1 tokens overlapping by one (the last may be shorter)."""
    stream = []
    for ids in docs_ids:
        stream += [bos] + ids + [eos]
    return [stream[s:s + t + 1] for s in range(0, len(stream) - 1, t)]


def padding_share(rows, t):
    """Share of the t positions of each row that carry no target."""
    real = sum(len(r) - 1 for r in rows)
    return 1.0 - real / (len(rows) * t)


def to_batch(rows, t, pad):
    """Rows of ≤ t + 1 tokens → inputs (B, t) and targets (B, t), -100 where padding."""
    x = torch.full((len(rows), t), pad, dtype=torch.long)
    y = torch.full((len(rows), t), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r) - 1
        x[i, :n] = torch.tensor(r[:-1])
        y[i, :n] = torch.tensor(r[1:])
    return x, y


@torch.no_grad()
def mean_loss(model, rows, t, pad, batch=64):
    """Mean next-token loss per predicted token over all rows."""
    model.eval()
    total, count = 0.0, 0
    for s in range(0, len(rows), batch):
        x, y = to_batch(rows[s:s + batch], t, pad)
        logits = model(input_ids=x).logits.float()
        total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-100,
                                 reduction="sum").item()
        count += (y != -100).sum().item()
    return total / count


def lr_at(step, steps, lr, min_lr, warmup=WARMUP):
    """crate/train/optimizer.rs lr_at()."""
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if step >= steps:
        return min_lr
    ratio = (step - warmup) / max(steps - warmup, 1)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def train_torch(config, rows, steps, lr, seed, pad):
    """A fresh GPT-2 trained like Kiln trains: B rows a step, drawn in a seeded order
    reshuffled every epoch; mean loss over the step's real (unpadded) tokens; AdamW with
    weight decay on matrices only; global-norm clipping; warmup then cosine to lr/10."""
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.train()
    t = config.n_positions
    params = list(model.parameters())  # the tied output layer is wte, listed once
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=lr, betas=BETAS, eps=EPS)
    rng = random.Random(seed)
    order, pos = [], 0
    losses = []
    for step in range(steps):
        batch = []
        while len(batch) < BATCH:
            if pos == len(order):
                order, pos = list(range(len(rows))), 0
                rng.shuffle(order)
            batch.append(rows[order[pos]])
            pos += 1
        x, y = to_batch(batch, t, pad)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, lr / 10)
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        losses.append(loss.item())
    return model, losses


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", nargs="?", help="UTF-8 text, documents separated by blank lines "
                        "(default: write one with python_docs.py)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--val-share", type=float, default=0.1, help="share of documents held out")
    parser.add_argument("--seed", type=int, default=0, help="the hold-out split and PyTorch's run")
    parser.add_argument("--max-bytes", type=int, default=2_000_000, help="for the written corpus")
    parser.add_argument("--work", help="keep TRAIN.txt, VAL.txt and Kiln's folder here")
    parser.add_argument("--kiln-dir", help="skip training Kiln: use this exported folder")
    args = parser.parse_args()
    torch.set_num_threads(1)  # leave the other core free
    transformers.logging.set_verbosity_error()  # long documents and unmasked batches are meant
    started = time.perf_counter()
    work = args.work or tempfile.mkdtemp(prefix="kiln-compare-")
    os.makedirs(work, exist_ok=True)

    corpus = args.corpus
    if corpus is None:
        corpus = os.path.join(work, "python_docs.txt")
        subprocess.run([sys.executable, os.path.join(HERE, "python_docs.py"), corpus,
                        "--max-bytes", str(args.max_bytes)], check=True, stdout=subprocess.DEVNULL)
    with open(corpus, encoding="utf-8") as f:
        text = f.read()
    docs = documents(text)
    order = list(range(len(docs)))
    random.Random(args.seed).shuffle(order)
    n_val = max(1, math.ceil(len(docs) * args.val_share))
    val_set = set(order[:n_val])
    train_docs = [d for i, d in enumerate(docs) if i not in val_set]
    val_docs = [d for i, d in enumerate(docs) if i in val_set]
    train_path = os.path.join(work, "TRAIN.txt")
    with open(train_path, "w", encoding="utf-8") as f:
        f.write("\n\n".join(train_docs) + "\n")
    with open(os.path.join(work, "VAL.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(val_docs) + "\n")

    # Kiln
    kiln_out = args.kiln_dir or os.path.join(work, "kiln-run")
    kiln_val_own, kiln_s = None, None
    if not args.kiln_dir:
        shutil.rmtree(kiln_out, ignore_errors=True)
        cmd = kiln_command() + ["pretrain", "--corpus", train_path, "--preset", args.preset, "--steps",
                                str(args.steps), "--lr", str(args.lr), "--vocab", str(args.vocab), "--out", kiln_out,
                                "--backend", "cpu", "--sample-every", "0", "--log-json"]
        t0 = time.perf_counter()
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        kiln_s = time.perf_counter() - t0
        if run.returncode != 0:
            sys.exit(f"kiln pretrain failed:\n{run.stderr[-4000:]}")
        vals = [json.loads(line)["valLoss"] for line in run.stdout.splitlines() if line.startswith("{")]
        vals = [v for v in vals if v is not None]
        kiln_val_own = vals[-1] if vals else None

    tokenizer = PreTrainedTokenizerFast.from_pretrained(kiln_out)
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id

    def encode(ds):
        # without special tokens: the markers are added explicitly, as Kiln's rows have them
        return tokenizer(ds, add_special_tokens=False)["input_ids"]

    train_ids, val_ids = encode(train_docs), encode(val_docs)
    kiln_model = GPT2LMHeadModel.from_pretrained(kiln_out)
    config = GPT2Config.from_pretrained(kiln_out)
    t = config.n_positions
    train_rows = [r for ids in train_ids for r in rows_of(ids, t, bos, eos)]
    train_windows = packed_windows(train_ids, t, bos, eos)
    val_windows = packed_windows(val_ids, t, bos, eos)
    val_rows = [r for ids in val_ids for r in rows_of(ids, t, bos, eos)]

    kiln_packed = mean_loss(kiln_model, val_windows, t, pad)
    kiln_rows = mean_loss(kiln_model, val_rows, t, pad)

    t0 = time.perf_counter()
    full_windows = [w for w in train_windows if len(w) == t + 1]
    torch_model, torch_losses = train_torch(config, full_windows, args.steps, args.lr, args.seed, pad)
    torch_s = time.perf_counter() - t0
    torch_packed = mean_loss(torch_model, val_windows, t, pad)
    torch_rows = mean_loss(torch_model, val_rows, t, pad)
    # The same PyTorch run on one padded row per document, as unpacked Kiln trains: tells
    # how much of a gap the batching explains and how much is left to something else.
    unpacked_model, _ = train_torch(config, train_rows, args.steps, args.lr, args.seed, pad)
    unpacked_packed = mean_loss(unpacked_model, val_windows, t, pad)
    unpacked_rows = mean_loss(unpacked_model, val_rows, t, pad)

    print(json.dumps({
        "corpus": os.path.abspath(corpus),
        "corpus_bytes": len(text.encode()),
        "documents": len(docs),
        "train_documents": len(train_docs),
        "val_documents": len(val_docs),
        "train_tokens": sum(len(ids) + 2 for ids in train_ids),
        "val_tokens": sum(len(ids) + 2 for ids in val_ids),
        "context": t,
        "padding_share_per_document_rows": round(padding_share(train_rows, t), 4),
        "padding_share_packed": round(padding_share(train_windows, t), 4),
        "train_rows_per_document": len(train_rows),
        "train_windows_packed": len(train_windows),
        "kiln_val_loss": round(kiln_packed, 4),
        "kiln_val_loss_per_document_rows": round(kiln_rows, 4),
        "kiln_own_val_loss": kiln_val_own,
        "torch_val_loss": round(torch_packed, 4),
        "torch_val_loss_per_document_rows": round(torch_rows, 4),
        "torch_final_train_loss": round(sum(torch_losses[-10:]) / len(torch_losses[-10:]), 4),
        "torch_unpacked_val_loss": round(unpacked_packed, 4),
        "torch_unpacked_val_loss_per_document_rows": round(unpacked_rows, 4),
        "preset": args.preset,
        "vocab": config.vocab_size,
        "steps": args.steps,
        "batch": BATCH,
        "lr": args.lr,
        "min_lr": round(args.lr / 10, 12),
        "warmup": WARMUP,
        "kiln_seconds": None if kiln_s is None else round(kiln_s, 1),
        "torch_seconds": round(torch_s, 1),  # the packed run
        "total_seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
    }, indent=2))


if __name__ == "__main__":
    main()
