"""Chat-template fixtures for Kiln's Jinja rendering of imported models' templates
(crate/data/template.rs, checked by tests/chat_template.rs), from transformers itself.

Run by hand by a developer, not by CI (the fixtures it writes are committed):
    /tmp/pt/bin/pip install torch transformers    # brings tokenizers and jinja2
    /tmp/pt/bin/python tests/golden/make_chat_template_fixtures.py

For each folder of tests/fixtures/chat_templates/ (its chat_template.jinja is committed by
hand; the folder's README says where each came from) it:
  1. trains a small byte-level BPE tokenizer.json with the `tokenizers` library, built the
     way that family's real one is: its pre-tokenizer (GPT-2's ByteLevel regex for SmolLM2;
     Llama-3's or Qwen2's split regex, then ByteLevel; Qwen2 also NFC), its post-processor,
     and its special tokens placed as in the real vocabulary (SmolLM2's first, Llama-3's and
     Qwen2's after the merges, in their order, reserved gaps included);
  2. wraps it as PreTrainedTokenizerFast with the template and the family's special tokens;
  3. writes cases.json: for each conversation, transformers' rendered text
     (apply_chat_template(tokenize=False)) and ids (apply_chat_template(tokenize=True)),
     and the expected assistant mask, computed here independently of Kiln's method: the
     character span from after each assistant header to the end of the turn's end token
     (found by the family's known strings), mapped to tokens through the tokenizer's offset
     mapping; a token is masked when its characters overlap a span. Where the template has
     {% generation %} markers, transformers' return_assistant_tokens_mask must agree.

strftime_now reads a fixed clock here (DATE below), so the Llama-3.2 text is reproducible;
cases.json records it and the Rust test passes the same date.
"""

import datetime as _dt
import json
import os

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
import transformers
import transformers.utils.chat_template_utils as chat_template_utils
from transformers import PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures", "chat_templates")
DATE = _dt.datetime(2026, 3, 5, 14, 7, 9)
VOCAB = 700

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
]
CHATML = ("<|im_start|>assistant\n", "<|im_end|>")
LLAMA3 = ("<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>")

CORPUS = [
    "The quick brown fox jumps over the lazy dog. The capital of France is Paris.",
    "A helpful assistant answers questions clearly and politely, and says when it does not know.",
    "Red, yellow and blue are the primary colours; green, orange and purple are secondary.",
    "Autumn leaves fall slowly in the cool wind, gold and red under a grey sky.",
    "Count one, two, three. Numbers such as 12345, 67890 and 80235 appear in sums.",
    "Why did the café close? It ran out of naïve beans. Jokes should be short and kind.",
    "Tomorrow it may rain, so remember to take an umbrella when you go out.",
    "你好！今天天气怎么样？今天天气晴朗，气温二十度。",
    "明天可能会下雨，记得带伞。你是一个乐于助人的助手，请用中文回答问题。",
    "我们今天学习语言模型。模型读取文本，然后预测下一个词。",
    "system user assistant: the conversation has turns, and each turn has a role and content.",
]


def bpe_tokenizer(pre_tokenizer, normalizer=None, leading_specials=()):
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[AddedToken(s, special=True, normalized=False) for s in leading_specials],
    )
    tok.train_from_iterator(CORPUS * 3, trainer=trainer)
    return tok


def specials(tok, names, special=True):
    tok.add_tokens([AddedToken(s, special=special, normalized=False) for s in names])


def smollm2_tokenizer():
    # SmolLM2: GPT-2's ByteLevel (its own regex), its special tokens first (ids 0, 1, 2 …).
    tok = bpe_tokenizer(
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        leading_specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    )
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok, {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>", "pad_token": "<|im_end|>"}


def qwen2_tokenizer():
    # Qwen2: NFC, its split regex (single digits), ByteLevel; specials after the merges, then the
    # tool-call markers as added tokens that are not special.
    tok = bpe_tokenizer(
        pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        ),
        normalizer=normalizers.NFC(),
    )
    specials(tok, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    specials(tok, ["<tool_call>", "</tool_call>"], special=False)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}


def llama3_tokenizer():
    # Llama-3: its split regex (digits in threes), ByteLevel; 11 specials after the merges in
    # their real order (<|begin_of_text|> first, <|eot_id|> tenth); <|begin_of_text|> added by
    # the post-processor only when special tokens are asked for.
    tok = bpe_tokenizer(
        pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    )
    specials(tok, LLAMA3_SPECIALS)
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, tok.token_to_id(bos))]
            ),
        ]
    )
    return tok, {"bos_token": bos, "eos_token": "<|eot_id|>"}


FAMILIES = {
    "smollm2-instruct": (smollm2_tokenizer, CHATML),
    "qwen2.5-instruct": (qwen2_tokenizer, CHATML),
    "llama-3.3-instruct": (llama3_tokenizer, LLAMA3),
    "llama-3.2-instruct": (llama3_tokenizer, LLAMA3),
    "chatml-generation": (smollm2_tokenizer, CHATML),
}


def msg(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = [
    ("single_turn", False, [msg("user", "What is the capital of France?"), msg("assistant", "The capital of France is Paris.")]),
    (
        "with_system",
        False,
        [
            msg("system", "You are a concise assistant."),
            msg("user", "Name two primary colours."),
            msg("assistant", "Red and blue."),
        ],
    ),
    (
        "multi_turn_chinese",
        False,
        [
            msg("system", "你是一个乐于助人的助手。"),
            msg("user", "你好！今天天气怎么样？"),
            msg("assistant", "今天天气晴朗，气温二十度。"),
            msg("user", "Thanks! And tomorrow? 🌧"),
            msg("assistant", "明天可能会下雨，记得带伞 ☂️."),
        ],
    ),
    ("prompt_only", True, [msg("user", "Write a haiku about autumn leaves.")]),
    (
        "multi_turn_prompt",
        True,
        [msg("user", "Count to three."), msg("assistant", "1, 2, 3."), msg("user", "Now in French, s'il vous plaît.")],
    ),
    (
        "whitespace_and_digits",
        False,
        [
            msg("system", "  Answer with numbers.\n"),
            msg("user", "\nWhat is 12345 + 67890?  "),
            msg("assistant", "  80235\n\nDone.  "),
        ],
    ),
    (
        "two_answers_no_system",
        False,
        [
            msg("user", "Hi"),
            msg("assistant", "Hello! How can I help?"),
            msg("user", "Tell me a joke."),
            msg("assistant", "Why did the café close? It ran out of naïve beans."),
        ],
    ),
]


def expected_mask(text, offsets, markers):
    """Tokens overlapping [after an assistant header, end of that turn's end token)."""
    header, end = markers
    spans, at = [], 0
    while (h := text.find(header, at)) != -1:
        start = h + len(header)
        stop = text.find(end, start)
        if stop == -1:  # the generation prompt: a header with no answer yet
            break
        spans.append((start, stop + len(end)))
        at = stop + len(end)
    return [any(a < s_end and b > s_start for s_start, s_end in spans) for a, b in offsets]


class FixedClock(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return DATE


def make(name, build, markers):
    folder = os.path.join(FIXTURES, name)
    with open(os.path.join(folder, "chat_template.jinja"), encoding="utf-8") as f:
        template = f.read()
    raw, special_tokens = build()
    hf = PreTrainedTokenizerFast(tokenizer_object=raw, chat_template=template, **special_tokens)
    # The tokenizer.json transformers itself encodes with (wrapping may touch it).
    backend = hf.backend_tokenizer
    backend.save(os.path.join(folder, "tokenizer.json"))
    generation = "{%- generation" in template or "{% generation" in template
    cases = []
    for case, add_generation_prompt, messages in CONVERSATIONS:
        text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        ids = hf.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=False
        )
        enc = hf(text, add_special_tokens=False, return_offsets_mapping=True)
        assert enc["input_ids"] == ids, (name, case)
        mask = expected_mask(text, enc["offset_mapping"], markers)
        if generation:
            out = hf.apply_chat_template(
                messages,
                tokenize=True,
                add_generation_prompt=add_generation_prompt,
                return_dict=True,
                return_assistant_tokens_mask=True,
            )
            assert [bool(m) for m in out["assistant_masks"]] == mask, (name, case)
        cases.append(
            {
                "name": case,
                "messages": messages,
                "add_generation_prompt": add_generation_prompt,
                "text": text,
                "ids": ids,
                "mask": mask,
            }
        )
    fixture = {
        "made_by": f"tests/golden/make_chat_template_fixtures.py (transformers {transformers.__version__})",
        "special_tokens": special_tokens,
        "date": DATE.strftime("%Y-%m-%dT%H:%M:%S"),
        "cases": cases,
    }
    with open(os.path.join(folder, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=1)
        f.write("\n")
    masked = sum(sum(c["mask"]) for c in cases)
    print(f"{name}: vocabulary {backend.get_vocab_size()}, {len(cases)} cases, {masked} masked tokens")


def main():
    chat_template_utils.datetime = FixedClock  # strftime_now reads this module's datetime
    for name, (build, markers) in FAMILIES.items():
        make(name, build, markers)


if __name__ == "__main__":
    main()
