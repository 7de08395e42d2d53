"""PyTorch + PEFT: LoRA SFT on a model of SmolLM2-135M's shape, the same shapes, rank,
batch and threads as `kiln bench lora` (crate/bench/lora.rs), for tests/bench/lora.sh.

LlamaForCausalLM from SmolLM2-135M's config (randomly initialised: speed does not depend
on the weights), float32 on the CPU with 2 threads, PEFT LoRA rank 8, α 16 on q_proj and
v_proj (PEFT's default for Llama), AdamW over the adapters, cross-entropy at every
position of B × 512 random tokens. Prints JSON: tokens/s over the timed steps after one
warm-up step, and the process's peak resident memory.
"""

import argparse
import json
import resource
import time

import peft
import torch
import torch.nn.functional as F
import transformers
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    T = 512
    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=T,
        rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
    )
    config._attn_implementation = "sdpa"
    base = LlamaForCausalLM(config)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM"))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.1)
    ids = torch.randint(0, config.vocab_size, (a.batch, T + 1))
    tokens, targets = ids[:, :T], ids[:, 1:]

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=tokens).logits
        loss = F.cross_entropy(logits.reshape(-1, config.vocab_size), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(a.steps):
        step()
    elapsed = time.perf_counter() - start
    print(json.dumps({
        "benchmark": "torch_lora",
        "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
        "threads": a.threads, "batch": a.batch, "context": T,
        "params": sum(p.numel() for p in base.parameters() if not p.requires_grad),
        "trainable_params": sum(p.numel() for p in trainable),
        "tokens_per_s": a.steps * a.batch * T / elapsed,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "steps": a.steps,
    }))


if __name__ == "__main__":
    main()
