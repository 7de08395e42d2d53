"""Golden fixtures for Kiln's model, from PyTorch (CPU) and Hugging Face's GPT-2.

Run once by a developer, not by CI:
    python3 -m venv /tmp/pt && /tmp/pt/bin/pip install torch transformers safetensors
    /tmp/pt/bin/python tests/golden/make_fixtures.py

Writes tests/golden/tiny/: a small GPT-2 (transformers' GPT2LMHeadModel, so the
reference is the architecture Kiln exports to, not a re-implementation), a batch with
padding masked out, and what PyTorch computes for it: logits, per-position losses, the
loss, every parameter's gradient, and the losses of 10 AdamW steps with gradient
clipping. The initial weights are f32; everything is then computed in float64, so the
fixture holds the exact answer for those weights and the test measures Kiln's f32 error.
"""

import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny")
CFG = dict(vocab_size=37, block_size=16, n_layer=2, n_head=3, n_embd=24)
B, T = 3, 16
OPT = dict(lr=3e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, max_norm=0.5, steps=10)


def main():
    torch.manual_seed(1234)
    config = GPT2Config(
        vocab_size=CFG["vocab_size"],
        n_positions=CFG["block_size"],
        n_embd=CFG["n_embd"],
        n_layer=CFG["n_layer"],
        n_head=CFG["n_head"],
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=1,
    )
    config._attn_implementation = "eager"
    model = GPT2LMHeadModel(config)
    model.eval()  # no dropout anywhere
    # Non-trivial LayerNorm parameters and biases, so their gradients are tested too.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    params = {n.removeprefix("transformer."): p for n, p in model.named_parameters()}
    initial = {n: p.detach().float().contiguous() for n, p in params.items()}
    model.double()

    # Three rows: full, padded after 11 tokens, padded after 3. Targets are inputs shifted.
    ids = torch.randint(0, CFG["vocab_size"], (B, T + 1))
    mask = torch.ones(B, T)
    mask[1, 11:] = 0
    mask[2, 3:] = 0
    tokens, targets = ids[:, :T], ids[:, 1:]
    weights = (mask / mask.sum()).double()

    def loss_of():
        logits = model(input_ids=tokens).logits  # (B, T, V)
        nll = F.cross_entropy(logits.reshape(-1, CFG["vocab_size"]), targets.reshape(-1), reduction="none")
        losses = nll.view(B, T) * weights
        return logits, losses, losses.sum()

    logits, losses, loss = loss_of()
    loss.backward()
    expected = {"logits": logits.detach(), "losses": losses.detach(), "loss": loss.detach().reshape(1)}
    for n, p in params.items():
        expected[f"grad.{n}"] = p.grad.detach().clone()

    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": OPT["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=OPT["lr"], betas=(OPT["beta1"], OPT["beta2"]), eps=OPT["eps"],
    )
    step_losses = []
    for _ in range(OPT["steps"]):
        opt.zero_grad()
        _, _, loss = loss_of()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), OPT["max_norm"])
        opt.step()
        step_losses.append(loss.item())
    expected["step_losses"] = torch.tensor(step_losses, dtype=torch.float64)

    os.makedirs(OUT, exist_ok=True)
    save_file(initial, os.path.join(OUT, "params.safetensors"))
    save_file(
        {"tokens": tokens.int().contiguous(), "targets": targets.int().contiguous(), "weights": weights.float().contiguous()},
        os.path.join(OUT, "batch.safetensors"),
    )
    save_file({k: v.double().contiguous() for k, v in expected.items()}, os.path.join(OUT, "expected.safetensors"))
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump({"model": CFG, "batch": {"b": B, "t": T}, "optimizer": OPT,
                   "torch": torch.__version__, "transformers": __import__("transformers").__version__}, f, indent=2)
    print(f"wrote {OUT}: loss {expected['loss'].item():.6f}, 10 steps {step_losses[0]:.5f} → {step_losses[-1]:.5f}")


if __name__ == "__main__":
    main()
