//! Kiln: train tiny GPT-style language models on WebGPU, in the browser or natively.
//!
//! - [`gpu`]: wgpu plumbing and one typed function per WGSL kernel in `shaders/`.
//! - [`cpu`]: the CPU twin of every kernel, same names, written to be read.
//! - [`selftest`]: every kernel held against its twin; run by `cargo test` natively and
//!   inside a Web Worker in Chromium.
//! - [`bench`]: matmul throughput, tiled vs naive vs CPU.

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod clock;
pub mod cpu;
pub mod data;
pub mod error;
pub mod gpu;
pub mod model;
pub mod rng;
pub mod sample;
pub mod selftest;
pub mod tokenizer;
pub mod train;

#[cfg(target_arch = "wasm32")]
mod web;
