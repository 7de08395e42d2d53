"""PyTorch (CPU) training throughput for Kiln's presets, for `npm run bench` to compare.

The same models as Kiln's tiny, small and base presets (transformers' GPT2LMHeadModel:
GPT-2 architecture, tied embeddings, tanh GELU), the same batch (8 rows of the full
context), the same optimizer (AdamW with weight decay on matrices, gradient clipping),
on 2 CPU threads. Prints JSON: tokens/s per preset.

    python tests/bench/torch_train.py [--quick] [--vocab 512]
"""

import argparse
import json
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

PRESETS = {"tiny": (2, 2, 64, 64), "small": (4, 4, 128, 128), "base": (6, 6, 384, 256)}


def tokens_per_s(preset, vocab, batch=8, min_seconds=5.0):
    n_layer, n_head, n_embd, block = PRESETS[preset]
    config = GPT2Config(vocab_size=vocab, n_positions=block, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=1, eos_token_id=2)
    model = GPT2LMHeadModel(config)
    model.train()
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=3e-3, betas=(0.9, 0.99), eps=1e-8)
    gen = torch.Generator().manual_seed(0)

    def step():
        ids = torch.randint(8, vocab, (batch, block + 1), generator=gen)
        out = model(input_ids=ids[:, :-1], labels=None)
        loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, vocab), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    step()  # warm-up
    steps, start = 0, time.perf_counter()
    while steps == 0 or (time.perf_counter() - start < min_seconds and steps < 50):
        step()
        steps += 1
    elapsed = time.perf_counter() - start
    return {"preset": preset, "params": sum(p.numel() for p in params), "batch": batch, "context": block,
            "vocab": vocab, "steps_timed": steps, "tokens_per_s": steps * batch * block / elapsed}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--vocab", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(2)
    presets = ["tiny", "small"] if args.quick else ["tiny", "small", "base"]
    results = [tokens_per_s(p, args.vocab) for p in presets]
    print(json.dumps({"benchmark": "torch_train", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
