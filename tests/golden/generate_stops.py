"""Shows that a chat model Kiln exports stops where Kiln stops in transformers too: plain
`model.generate` on `tokenizer.apply_chat_template(..., add_generation_prompt=True)`, with
nothing passed but greedy decoding, ends the answer at `<|end|>` (the end of the turn) and
gives Kiln's own greedy answer. Run by a developer (not by CI), with PyTorch and
transformers installed (CPU is enough):

    python3 -m venv /tmp/pt && /tmp/pt/bin/pip install torch transformers
    /tmp/pt/bin/python tests/golden/generate_stops.py

Uses $KILN as the kiln binary when set, else `cargo run --release`. It:

1. makes a small chat model with the CLI: `kiln pretrain` (300 steps on the built-in
   stories, the tiny preset) then `kiln sft` (400 steps on the built-in questions), on the
   CPU backend; about a minute on two cores;
2. loads the export with AutoTokenizer and AutoModelForCausalLM and prints the
   generation_config.json transformers read (its stop ids by name);
3. for held-out questions (the `held-out.jsonl` that `kiln sft` wrote: a story, a newline,
   a question) and for one-line prompts, renders `apply_chat_template(messages,
   add_generation_prompt=True)`, checks the ids are `kiln chat-ids --generation-prompt`'s,
   and runs `model.generate(**inputs, do_sample=False)`; prints whether it stopped at the
   end of the turn and whether its answer is Kiln's greedy one: `kiln chat` for one-line
   prompts (it reads one user turn a line), `kiln candidates --temperature 0` (the same
   prompt rendering and sampler, K rows at once) for the multi-line questions;
4. shows what transformers did before Kiln wrote generation_config.json (the same call
   with only config.json's `eos_token_id`, `<|eos|>`);
5. checks `kiln sample --temperature 0` against plain greedy `generate` on a story prompt
   (no chat template), with no stop or suppressed ids passed.

Exits non-zero when an answer does not stop at the end of the turn or differs from Kiln's.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRETRAIN_STEPS, SFT_STEPS = 300, 400
HELD_OUT = 6  # multi-line held-out questions
ONE_LINE = [  # (system, user) for `kiln chat`, which reads one user turn a line
    (None, "Lily went to the sunny hill. She lost a tiny bell on the way. Soon Anna the duck came to play. Who came to play?"),
    (None, "Who is Lily?"),
    ("You are a kind storyteller.", "Sam went to the dark cave. There, he found an old map. What did Sam find?"),
]
STORY_PROMPT, STORY_TOKENS = "Once upon a time, there was", 24

failures = []


def kiln(*args, stdin=None):
    cmd = [os.environ["KILN"]] if os.environ.get("KILN") else ["cargo", "run", "--quiet", "--release", "--bin", "kiln", "--"]
    run = subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True, input=stdin)
    if run.returncode != 0:
        sys.exit(f"kiln {' '.join(args[:3])} … failed ({run.returncode}):\n{run.stderr[-4000:]}")
    return run.stdout


def names(tokenizer, ids):
    return [tokenizer.convert_ids_to_tokens(i) for i in ids]


def generate(model, tokenizer, ids, **kwargs):
    """Greedy `generate` after `ids`: (new ids, the error when it ran past the context)."""
    inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    try:
        with torch.no_grad():
            out = model.generate(**inputs, do_sample=False, **kwargs)
        return out[0, len(ids):].tolist(), None
    except IndexError as e:  # GPT-2's position table ends at n_positions
        return None, e


def answer_of(tokenizer, new, stops):
    """(the answer's text, the stop token's name or None)."""
    ended = bool(new) and new[-1] in stops
    text = tokenizer.decode(new[:-1] if ended else new, skip_special_tokens=True)
    return text, (tokenizer.convert_ids_to_tokens(new[-1]) if ended else None)


def check_chat(label, messages, mine, model, tokenizer, out):
    """One chat prompt: transformers' plain greedy generate against Kiln's answer `mine`."""
    gc = model.generation_config
    stops = gc.eos_token_id if isinstance(gc.eos_token_id, list) else [gc.eos_token_id]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else list(ids)
    kiln_ids = json.loads(kiln("chat-ids", "--ckpt", out, "--json", json.dumps(messages), "--generation-prompt"))["ids"]
    new, err = generate(model, tokenizer, ids)
    print(f"{label} {messages[-1]['content']!r} ({len(ids)} prompt tokens{', same ids as kiln chat-ids' if ids == kiln_ids else ''})")
    if ids != kiln_ids:
        failures.append(label)
        print(f"     FAIL apply_chat_template ids differ from kiln chat-ids:\n       hf   {ids}\n       kiln {kiln_ids}")
    if err is not None:
        failures.append(label)
        print(f"     FAIL transformers ran past the context without stopping ({err})")
        return
    theirs, stop = answer_of(tokenizer, new, stops)
    same = theirs == mine
    ok = stop == "<|end|>" and same
    if not ok:
        failures.append(label)
    print(f"     transformers: {theirs!r} then {stop or 'no stop'} ({len(new)} new tokens)")
    print(f"     kiln:         {mine!r}")
    print(f"     stopped at the end of the turn: {'yes' if stop == '<|end|>' else 'NO'}; "
          f"same answer as Kiln: {'yes' if same else 'NO'}")
    # what transformers did when the folder had no generation_config.json: config.json's
    # one eos id, <|eos|>
    room = model.config.n_positions - len(ids) + 1
    old, _ = generate(model, tokenizer, ids, eos_token_id=model.config.eos_token_id, max_new_tokens=min(16, room))
    print(f"     with config.json's eos_token_id only (before generation_config.json): {tokenizer.decode(old)!r}")


def main():
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    work = tempfile.mkdtemp(prefix="kiln-stops-")
    base, out = os.path.join(work, "base"), os.path.join(work, "chat")
    started = time.time()
    kiln("pretrain", "--steps", str(PRETRAIN_STEPS), "--out", base, "--sample-every", "0", "--backend", "cpu")
    kiln("sft", "--ckpt", base, "--out", out, "--steps", str(SFT_STEPS), "--sample-every", "0", "--eval", "0",
         "--backend", "cpu")
    print(f"kiln pretrain {PRETRAIN_STEPS} steps + kiln sft {SFT_STEPS} steps (tiny preset, CPU backend): "
          f"{time.time() - started:.0f} s, in {out}")

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    gc = model.generation_config
    print(f"{type(model).__name__}, context {model.config.n_positions}; generation_config.json as transformers read it:")
    print(f"     eos_token_id {gc.eos_token_id} = {names(tokenizer, gc.eos_token_id)}; pad_token_id {gc.pad_token_id} "
          f"= {tokenizer.convert_ids_to_tokens(gc.pad_token_id)}; suppress_tokens {names(tokenizer, gc.suppress_tokens)}")
    print(f"     do_sample {gc.do_sample}, temperature {gc.temperature}, top_k {gc.top_k}, top_p {gc.top_p}, "
          f"max_new_tokens {gc.max_new_tokens}")

    with open(os.path.join(out, "held-out.jsonl")) as f:
        held_out = [json.loads(line)["messages"] for line in f][:HELD_OUT]
    answers = os.path.join(work, "answers.jsonl")
    # each conversation is asked up to its last user turn
    kiln("candidates", "--ckpt", out, "--prompts", os.path.join(out, "held-out.jsonl"), "--n", str(HELD_OUT), "--k", "2", "--temperature", "0",
         "--out", answers, "--backend", "cpu")
    with open(answers) as f:
        greedy = [json.loads(line)["answers"] for line in f]
    for i, (conv, pair) in enumerate(zip(held_out, greedy)):
        assert pair[0] == pair[1], "greedy rows differ"
        check_chat(f"[held-out {i + 1}, kiln candidates]", conv[:1], pair[0], model, tokenizer, out)
        print(f"     expected answer {conv[1]['content']!r}")

    for i, (system, user) in enumerate(ONE_LINE):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        printed = kiln("chat", "--ckpt", out, "--backend", "cpu", *(["--system", system] if system else []),
                       stdin=user + "\n")
        mine = printed[:-1] if printed.endswith("\n") else printed
        check_chat(f"[one line {i + 1}, kiln chat]", messages, mine, model, tokenizer, out)

    # no chat template: a story continued, Kiln's sampler against plain generate
    ids = tokenizer(STORY_PROMPT)["input_ids"]
    new, err = generate(model, tokenizer, ids, max_new_tokens=STORY_TOKENS)
    stops = gc.eos_token_id if isinstance(gc.eos_token_id, list) else [gc.eos_token_id]
    text, stop = answer_of(tokenizer, new or [], stops)
    theirs = tokenizer.decode(ids, skip_special_tokens=True) + text
    printed = kiln("sample", "--ckpt", out, "--prompt", STORY_PROMPT, "--temperature", "0", "--tokens",
                   str(STORY_TOKENS), "--backend", "cpu")
    mine = printed[:-1] if printed.endswith("\n") else printed
    same = err is None and theirs == mine
    if not same:
        failures.append("story")
    print(f"[story, kiln sample --temperature 0] {STORY_PROMPT!r}, up to {STORY_TOKENS} tokens")
    print(f"     transformers: {theirs!r} then {stop or 'no stop'} ({len(new or [])} new tokens)")
    print(f"     kiln:         {mine!r}\n     same: {'yes' if same else 'NO'}")

    total = HELD_OUT + len(ONE_LINE) + 1
    print(f"{total - len(failures)}/{total} prompts stopped where Kiln stops with Kiln's answer"
          f"{'' if not failures else '; failed: ' + ', '.join(failures)}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
