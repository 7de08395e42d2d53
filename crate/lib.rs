//! Kiln: train tiny GPT-style language models on WebGPU, in the browser or natively.
//!
//! The data path, module by module:
//! - [`tokenizer`]: byte-level BPE or characters, trained on the user's text.
//! - [`data`]: text checks, documents packed into rows with `<|bos|>`/`<|eos|>`, batches
//!   with loss weights; [`data::corpus`] generates the built-in stories, [`data::chat`]
//!   renders conversations (loss on the answers only), [`data::jsonl`] reads instruction
//!   data, [`data::instruct`] generates the built-in story questions.
//! - [`model`]: the GPT-2 model — config, parameter layout, the trunk and the LM head,
//!   forward and backward written once against [`backend::Backend`].
//! - [`backend`]: the op set, on the GPU ([`gpu`]: wgpu plumbing and one typed function
//!   per WGSL kernel in `shaders/`) or the CPU ([`cpu`]: each kernel's twin, written to
//!   be read).
//! - [`train`]: each stage's options (`train::config`), AdamW and the schedule, the shared
//!   step, the `Trainer` (which names no stage), and the stages (`Stage`, registered in
//!   `train::stages`): pretraining, supervised fine-tuning, and the preference stages (a
//!   reward model, DPO, PPO); `train::resume` saves and continues a run bit for bit.
//! - [`session`]: what a person builds up — corpus, tokenizer, the model training, the
//!   models the preference stages keep — driven alike by the page and the CLI.
//! - [`sample`]: generation with a KV cache. [`checkpoint`]: Hugging Face folders, zips
//!   (a reward model as transformers' sequence classifier). [`gguf`]: the GGUF file
//!   llama.cpp and Ollama run, written and read back.
//! - [`inspect`]: what the page's views read — the next token's probabilities, one
//!   head's attention weights, a training row's loss at each position.
//! - [`selftest`]: every kernel against its twin (natively and in Chromium);
//!   [`bench`]: benchmarks. `web.rs` converts between JS and the session; `bin/kiln.rs`,
//!   the CLI, between the command line and the session.

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod clock;
pub mod cpu;
pub mod data;
pub mod error;
pub mod gguf;
pub mod gpu;
pub mod inspect;
pub mod model;
pub mod peft;
pub mod rng;
pub mod sample;
pub mod selftest;
pub mod session;
pub mod tensors;
pub mod tokenizer;
pub mod train;

#[cfg(target_arch = "wasm32")]
mod web;
