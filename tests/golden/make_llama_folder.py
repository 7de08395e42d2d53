"""A small imported model as people bring one: a Llama-architecture Hugging Face folder in
the shape of SmolLM2-Instruct (its byte-level BPE tokenizer with <|im_start|>/<|im_end|>,
its published ChatML chat template, bf16 weights), and what transformers does with it.

Run once by a developer, not by CI (the venv of make_fixtures.py):
    /tmp/pt/bin/python tests/golden/make_llama_folder.py

Writes tests/golden/smollm2_like/: config.json, model.safetensors (bf16, as Hub models
ship), tokenizer.json (the small SmolLM2-style tokenizer of
tests/fixtures/chat_templates/smollm2-instruct/), tokenizer_config.json with the model's own
chat template, generation_config.json, and expected.json: for a few conversations,
transformers' apply_chat_template ids with the generation prompt and the ids of its greedy
generate (the model's weights widened to f32, eager attention), which Kiln must reproduce.
"""

import json
import os
import shutil

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "smollm2_like")
SRC = os.path.join(HERE, "..", "fixtures", "chat_templates", "smollm2-instruct")
NEW_TOKENS = 12

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And another one?"},
    ],
    [{"role": "user", "content": "你好，今天天气怎么样？"}],
]


def main():
    torch.manual_seed(2025)
    template = open(os.path.join(SRC, "chat_template.jinja")).read()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(SRC, "tokenizer.json"),
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    tokenizer.chat_template = template
    im_start, im_end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_parameters=dict(rope_type="default", rope_theta=100000.0),
        tie_word_embeddings=True,
        bos_token_id=im_start,
        eos_token_id=im_end,
        pad_token_id=None,
    )
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config)
    # Briefly trained on the chat-template fixtures' conversations, so that greedy decoding
    # says something other than one token over and over (which would test little).
    cases = json.load(open(os.path.join(SRC, "cases.json")))["cases"]
    texts = [c["text"] for c in cases]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(150):
        batch = tokenizer(texts[step % len(texts)], return_tensors="pt")["input_ids"]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"trained 150 steps: last loss {loss.item():.3f}")
    model = model.eval().to(torch.bfloat16)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    model.save_pretrained(OUT, safe_serialization=True)
    tokenizer.save_pretrained(OUT)
    # The weights Kiln reads: bf16 widened to f32 exactly.
    model = model.float()

    expected = []
    for messages in CONVERSATIONS:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        with torch.no_grad():
            out = model.generate(
                torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=im_end, pad_token_id=im_end
            )
        new = out[0, len(ids):].tolist()
        expected.append({"messages": messages, "prompt_ids": ids, "greedy_ids": new})
        print(f"{len(ids)} prompt ids → {new} {tokenizer.decode(new)!r}")
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"made_by": f"tests/golden/make_llama_folder.py (torch {torch.__version__}, transformers "
                              f"{transformers.__version__})", "new_tokens": NEW_TOKENS, "cases": expected},
                  f, indent=1, ensure_ascii=False)
    for file in sorted(os.listdir(OUT)):
        print(f"  {file} {os.path.getsize(os.path.join(OUT, file))} bytes")


if __name__ == "__main__":
    main()
