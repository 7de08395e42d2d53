// What counts as English left in a Chinese page: words of three or more Latin letters
// once technical names (which Chinese writing keeps) are taken out. Shared by the tables'
// test (i18n.test.mjs) and the whole-path test in Chinese (inside.test.mjs).
export const TECHNICAL = /\b(Kiln|WebGPU|WebAssembly|GPU|CPU|BPE|SFT|PPO|DPO|KTO|RLOO|GRPO|KL|Kendall|Krippendorff|tau|alpha|JSONL|JSON|TRL|Hugging|Face|GPT|Bradley|Terry|Enter|zip|jsonl|prompt|messages|WGSL|Top|MiB|nats?|LoRA|PEFT|PeftModel|from_pretrained|Llama|Qwen2|Mistral|adapter_config|adapter_model|safetensors|json|llama|cpp|gguf|GGUF|Ollama|LM|Studio|relaxed|SIMD|SIMD128)\b/g;

/** The English words left in `text` (placeholders {x} and technical names aside). */
export const englishWords = (text) => text.replace(/\{\w+\}/g, '').replace(TECHNICAL, '').match(/[A-Za-z]{3,}/g) ?? [];
