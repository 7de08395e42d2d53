"""PyTorch (CPU) time per op over training steps, in the categories `kiln bench profile`
reports, so the two read side by side (`tests/bench/profile.sh` joins them).

The model, batch, optimizer and threads are torch_train.py's. torch.profiler records each
aten op's own time; an op is put in the category of the nearest enclosing range that
names one: a module's forward (GELU, marked by hooks), an autograd backward node
(AddmmBackward0 → matmul, NativeLayerNormBackward0 → layernorm_backward, …), or the
optimizer step and gradient clipping (marked around the calls). What names none is
"other". The profiler's own cost per op is in the figures (a few µs an op).

    python tests/bench/torch_profile.py --preset small [--steps 3] [--vocab 512]
"""

import argparse
import json

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from torch_train import PRESETS

# (substring of an event's name, category): the first match up the event's parents wins
RULES = [
    # backward aten ops first: their names contain the forward op's
    ("flash_attention_for_cpu_backward", "attention_backward"),
    ("native_layer_norm_backward", "layernorm_backward"),
    ("_log_softmax_backward", "cross_entropy_backward"),
    ("nll_loss_backward", "cross_entropy_backward"),
    ("embedding_dense_backward", "embedding_backward"),
    ("embedding_backward", "embedding_backward"),
    ("gelu_forward", "gelu_forward"),
    ("adamw", "adamw"),
    ("grad_norm", "grad_norm"),
    ("ScaledDotProduct", "attention_backward"),
    ("scaled_dot_product", "attention_forward"),
    ("NativeLayerNormBackward", "layernorm_backward"),
    ("layer_norm", "layernorm_forward"),
    ("LogSoftmaxBackward", "cross_entropy_backward"),
    ("NllLossBackward", "cross_entropy_backward"),
    ("cross_entropy", "cross_entropy_forward"),
    ("EmbeddingBackward", "embedding_backward"),
    ("aten::embedding", "embedding_forward"),
    ("AddmmBackward", "matmul"),
    ("MmBackward", "matmul"),
    ("BmmBackward", "matmul"),
    ("aten::addmm", "matmul"),
    ("aten::mm", "matmul"),
    ("aten::bmm", "matmul"),
    ("TanhBackward", "gelu_backward"),
    ("PowBackward", "gelu_backward"),
    ("MulBackward", "gelu_backward"),
    ("AddBackward", "residual"),
    ("aten::add", "residual"),
]


def category(event):
    e = event
    while e is not None:
        for needle, name in RULES:
            if needle in e.name:
                return name
        e = e.cpu_parent
    return "other"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="small", choices=sorted(PRESETS))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(2)
    n_layer, n_head, n_embd, block = PRESETS[args.preset]
    config = GPT2Config(vocab_size=args.vocab, n_positions=block, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=1, eos_token_id=2)
    model = GPT2LMHeadModel(config).train()
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [q for q in params if q.dim() >= 2], "weight_decay": 0.1},
                             {"params": [q for q in params if q.dim() < 2], "weight_decay": 0.0}], lr=3e-3)
    # the GELUs' forward in a named range (their backward nodes are named by autograd)
    ranges = {}
    for i, block_ in enumerate(model.transformer.h):
        act = block_.mlp.act
        act.register_forward_pre_hook(lambda m, x, i=i: ranges.__setitem__(i, torch.autograd.profiler.record_function("gelu_forward").__enter__()))
        act.register_forward_hook(lambda m, x, y, i=i: ranges.pop(i).__exit__(None, None, None))
    gen = torch.Generator().manual_seed(0)

    def step():
        ids = torch.randint(8, args.vocab, (args.batch, block + 1), generator=gen)
        logits = model(input_ids=ids[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, args.vocab), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.autograd.profiler.record_function("grad_norm"):
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        with torch.autograd.profiler.record_function("adamw"):
            opt.step()

    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    totals = {}
    for e in prof.events():
        if e.self_cpu_time_total > 0:
            c = category(e)
            n, s = totals.get(c, (0, 0.0))
            totals[c] = (n + 1, s + e.self_cpu_time_total / 1e6)
    whole = sum(s for _, s in totals.values())
    rows = [{"op": c, "events": n, "seconds": s, "share": s / whole} for c, (n, s) in totals.items()]
    rows.sort(key=lambda r: -r["seconds"])
    print(json.dumps({"preset": args.preset, "steps": args.steps, "batch": args.batch, "threads": 2,
                      "torch": torch.__version__, "ops": rows}, indent=1))


if __name__ == "__main__":
    main()
