"""Golden fixtures for Kiln's Llama-family models, from PyTorch (CPU) and Hugging Face's
LlamaForCausalLM and Qwen2ForCausalLM.

Run once by a developer, not by CI:
    python3 -m venv /tmp/pt && /tmp/pt/bin/pip install torch transformers safetensors
    /tmp/pt/bin/python tests/golden/make_llama_fixtures.py

Writes two folders under tests/golden/, each a genuine Hugging Face model folder
(config.json, model.safetensors, generation_config.json, written by save_pretrained from
the f32 weights, so Kiln's loader reads it exactly as it reads a Hub download) plus what
PyTorch computes for a batch with padding masked out:

- llama_gqa/: LlamaForCausalLM with grouped-query attention (4 query heads sharing 2
  key/value heads), llama3 RoPE scaling small enough to change the frequencies, tied
  embeddings, no biases.
- qwen2_bias/: Qwen2ForCausalLM with q/k/v biases, plain RoPE (theta 1e6), its own
  lm_head, no sliding window.

Besides the model files, each folder holds:
- batch.safetensors: tokens, targets (int32), weights (f32): three rows, full, padded
  after 11 tokens and after 3; targets are the inputs shifted, weights mask / mask.sum().
- expected.safetensors (float64): logits (B,T,V), losses (B,T), loss (1), grad.<name>
  for every parameter under its name in model.safetensors, and step_losses, the losses
  of 10 AdamW steps with gradient clipping (the same optimizer as make_fixtures.py).
- fixture.json: batch shape, optimizer settings, torch/transformers versions, and the
  model's rotary inv_freq.

The 1-D parameters (RMSNorm weights, biases) get 0.1·randn added so their gradients are
tested too. Everything after saving is computed in float64, so the fixture holds the
answer for those f32 weights and the test measures Kiln's f32 error. (transformers
computes the RoPE angles, cos and sin in f32 even in a float64 model; that is part of the
reference, at the 1e-7 level.)
"""

import json
import math
import os

import torch
import torch.nn.functional as F
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

HERE = os.path.dirname(os.path.abspath(__file__))
B, T = 3, 16
OPT = dict(lr=3e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, max_norm=0.5, steps=10)


def llama_gqa():
    config = LlamaConfig(
        vocab_size=41,
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=48,
        num_hidden_layers=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_parameters=dict(
            rope_type="llama3",
            rope_theta=10000.0,
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=64,
        ),
        tie_word_embeddings=True,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=1,
        eos_token_id=2,
        # no pad_token_id: with one, transformers' nn.Embedding(padding_idx=…) never trains
        # the pad row from the input side; Kiln trains every row (they differ only where
        # the pad token is an input inside a sequence, which Kiln's batches never make)
        pad_token_id=None,
    )
    return "llama_gqa", LlamaForCausalLM, config, 1234


def qwen2_bias():
    config = Qwen2Config(
        vocab_size=43,
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=40,
        num_hidden_layers=2,
        max_position_embeddings=16,
        rms_norm_eps=1e-6,
        rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
        tie_word_embeddings=False,
        use_sliding_window=False,
        bos_token_id=1,
        eos_token_id=2,
        # no pad_token_id: with one, transformers' nn.Embedding(padding_idx=…) never trains
        # the pad row from the input side; Kiln trains every row (they differ only where
        # the pad token is an input inside a sequence, which Kiln's batches never make)
        pad_token_id=None,
    )
    return "qwen2_bias", Qwen2ForCausalLM, config, 4321


def plain_inv_freq(theta, dim):
    """Unscaled RoPE frequencies, computed as transformers does (f32)."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def make(name, model_cls, config, seed):
    out = os.path.join(HERE, name)
    torch.manual_seed(seed)
    config._attn_implementation = "eager"
    model = model_cls(config)
    model.eval()  # no dropout anywhere
    # Non-trivial RMSNorm weights and biases, so their gradients are tested too.
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    params = dict(model.named_parameters())  # tied lm_head appears once, as model.embed_tokens.weight

    # The rotary frequencies, and which of them llama3 scaling changed.
    inv_freq = model.model.rotary_emb.inv_freq.detach().float().clone()
    rope = config.rope_parameters
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    plain = plain_inv_freq(rope["rope_theta"], head_dim)
    print(f"[{name}] rope {rope}")
    for i, (f, p) in enumerate(zip(inv_freq.tolist(), plain.tolist())):
        note = "unchanged" if f == p else f"changed from {p:.9g} (÷{p / f:.6g})"
        print(f"[{name}]   inv_freq[{i}] = {f:.9g}  (unscaled wavelength {2 * math.pi / p:.6g})  {note}")

    # The genuine Hugging Face folder, in f32.
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}
    assert sorted(saved) == sorted(params), (sorted(saved), sorted(params))
    for n, p in params.items():
        assert saved[n].dtype == torch.float32 and torch.equal(saved[n], p.detach()), n
    print(f"[{name}] model.safetensors holds exactly the {len(params)} named parameters:")
    for n in sorted(saved):
        print(f"[{name}]   {n} {list(saved[n].shape)}")

    model.double()

    # Three rows: full, padded after 11 tokens, padded after 3. Targets are inputs shifted.
    vocab = config.vocab_size
    ids = torch.randint(0, vocab, (B, T + 1))
    mask = torch.ones(B, T)
    mask[1, 11:] = 0
    mask[2, 3:] = 0
    tokens, targets = ids[:, :T], ids[:, 1:]
    weights = (mask / mask.sum()).double()

    def loss_of():
        logits = model(input_ids=tokens).logits  # (B, T, V)
        nll = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), reduction="none")
        losses = nll.view(B, T) * weights
        return logits, losses, losses.sum()

    logits, losses, loss = loss_of()
    loss.backward()
    expected = {"logits": logits.detach(), "losses": losses.detach(), "loss": loss.detach().reshape(1)}
    for n, p in params.items():
        expected[f"grad.{n}"] = p.grad.detach().clone()

    # The saved folder, loaded as a Hub download would be, must give the same logits (f32).
    reloaded = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    with torch.no_grad():
        got = reloaded(input_ids=tokens).logits.double()
    reload_err = ((got - expected["logits"]).abs().max() / expected["logits"].abs().max()).item()
    print(f"[{name}] from_pretrained({name}) f32 logits vs float64 reference: max rel err {reload_err:.2e}")
    assert reload_err < 1e-5

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

    save_file(
        {"tokens": tokens.int().contiguous(), "targets": targets.int().contiguous(), "weights": weights.float().contiguous()},
        os.path.join(out, "batch.safetensors"),
    )
    save_file({k: v.double().contiguous() for k, v in expected.items()}, os.path.join(out, "expected.safetensors"))
    with open(os.path.join(out, "fixture.json"), "w") as f:
        json.dump({"batch": {"b": B, "t": T}, "optimizer": OPT, "torch": torch.__version__,
                   "transformers": transformers.__version__, "inv_freq": inv_freq.double().tolist()}, f, indent=2)
    print(f"[{name}] wrote {out}: loss {expected['loss'].item():.6f}, 10 steps {step_losses[0]:.5f} → {step_losses[-1]:.5f}")
    for file in sorted(os.listdir(out)):
        print(f"[{name}]   {file} {os.path.getsize(os.path.join(out, file))} bytes")


def main():
    for case in (llama_gqa, qwen2_bias):
        make(*case())


if __name__ == "__main__":
    main()
