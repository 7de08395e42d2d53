"""Golden fixtures for Kiln's LoRA, from Hugging Face's PEFT on the Llama-family fixtures.

Run once by a developer, not by CI, after make_llama_fixtures.py:
    /tmp/pt/bin/pip install torch transformers safetensors peft
    /tmp/pt/bin/python tests/golden/make_lora_fixtures.py

For each case, loads a base folder written by make_llama_fixtures.py, wraps it with
`peft.get_peft_model`, and writes a folder under tests/golden/ that is a genuine PEFT
adapter folder (adapter_config.json, adapter_model.safetensors, by save_pretrained, with
`base_model_name_or_path` naming the base folder) plus what PyTorch computes for the base
fixture's batch:

- expected.safetensors (float64): logits (B,T,V), losses (B,T), loss (1), grad.<name> for
  every adapter tensor under its name in adapter_model.safetensors, and step_losses, the
  losses of 10 AdamW steps over the adapters alone (the base frozen), with clipping.
- fixture.json: the base folder's name, batch shape, optimizer, versions.

The adapters start random (`init_lora_weights=False`: B is not zero), so both A's and B's
gradients are tested, and the model with adapters differs from the base.

- llama_gqa_lora/: rank 4, α 8, every linear layer ("all-linear": q, k, v, o, gate, up,
  down), on llama_gqa (grouped-query attention, so k and v are narrower than q).
- qwen2_bias_lora/: rank 2, α 5, PEFT's default targets for Qwen2 (q_proj, v_proj), on
  qwen2_bias.
"""

import json
import os

import peft
import torch
import torch.nn.functional as F
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
OPT = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, max_norm=0.5, steps=10)
CASES = [
    ("llama_gqa_lora", "llama_gqa", dict(r=4, lora_alpha=8, target_modules="all-linear"), 77),
    ("qwen2_bias_lora", "qwen2_bias", dict(r=2, lora_alpha=5), 78),
]


def batch_of(base_dir):
    with safe_open(os.path.join(base_dir, "batch.safetensors"), "pt") as f:
        b = {k: f.get_tensor(k) for k in f.keys()}
    return b["tokens"].long(), b["targets"].long(), b["weights"].double()


def make(name, base_name, lora, seed):
    base_dir, out = os.path.join(HERE, base_name), os.path.join(HERE, name)
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="eager", torch_dtype=torch.float32)
    config = LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, bias="none", init_lora_weights=False, **lora)
    model = get_peft_model(base, config)
    model.eval()
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    cfg_path = os.path.join(out, "adapter_config.json")
    with open(cfg_path) as f:
        adapter_config = json.load(f)
    adapter_config["base_model_name_or_path"] = base_name  # a folder beside this one
    with open(cfg_path, "w") as f:
        json.dump(adapter_config, f, indent=2)
    with safe_open(os.path.join(out, "adapter_model.safetensors"), "pt") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    # the saved names drop PEFT's adapter name (".default")
    by_saved = {n.replace(".default", ""): p for n, p in params.items()}
    assert sorted(by_saved) == sorted(saved), (sorted(by_saved), sorted(saved))
    for n, p in by_saved.items():
        assert torch.equal(saved[n], p.detach()), n
    print(f"[{name}] {len(saved)} adapter tensors, targets {sorted(model.peft_config['default'].target_modules)}")

    model.double()
    tokens, targets, weights = batch_of(base_dir)
    B, T = tokens.shape
    vocab = base.config.vocab_size

    def loss_of():
        logits = model(input_ids=tokens).logits
        nll = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), reduction="none")
        losses = nll.view(B, T) * weights
        return logits, losses, losses.sum()

    logits, losses, loss = loss_of()
    loss.backward()
    expected = {"logits": logits.detach(), "losses": losses.detach(), "loss": loss.detach().reshape(1)}
    for n, p in by_saved.items():
        expected[f"grad.{n}"] = p.grad.detach().clone()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert not frozen, frozen

    # PeftModel.from_pretrained on a fresh base gives the same logits (f32)
    fresh = AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="eager", torch_dtype=torch.float32)
    reloaded = PeftModel.from_pretrained(fresh, out).eval()
    with torch.no_grad():
        got = reloaded(input_ids=tokens).logits.double()
    err = ((got - expected["logits"]).abs().max() / expected["logits"].abs().max()).item()
    print(f"[{name}] PeftModel.from_pretrained f32 logits vs float64: max rel err {err:.2e}")
    assert err < 1e-5

    opt = torch.optim.AdamW(
        list(params.values()), lr=OPT["lr"], betas=(OPT["beta1"], OPT["beta2"]), eps=OPT["eps"],
        weight_decay=OPT["weight_decay"],
    )
    step_losses = []
    for _ in range(OPT["steps"]):
        opt.zero_grad()
        _, _, loss = loss_of()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), OPT["max_norm"])
        opt.step()
        step_losses.append(loss.item())
    expected["step_losses"] = torch.tensor(step_losses, dtype=torch.float64)

    save_file({k: v.double().contiguous() for k, v in expected.items()}, os.path.join(out, "expected.safetensors"))
    with open(os.path.join(out, "fixture.json"), "w") as f:
        json.dump({"base": base_name, "batch": {"b": B, "t": T}, "optimizer": OPT, "torch": torch.__version__,
                   "transformers": transformers.__version__, "peft": peft.__version__}, f, indent=2)
    print(f"[{name}] wrote {out}: loss {expected['loss'].item():.6f}, 10 steps {step_losses[0]:.5f} → {step_losses[-1]:.5f}")


def main():
    for case in CASES:
        make(*case)


if __name__ == "__main__":
    main()
