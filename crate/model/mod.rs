//! The GPT: configuration, parameter layout, activations, and the forward and backward
//! passes written once, llm.c style, against the [`Backend`](crate::backend::Backend) op set.

pub mod config;
pub mod gpt;
pub mod hf_config;
pub mod layers;
pub mod lora;
pub mod params;
pub mod weights;

pub use config::{Family, GptConfig, LlamaArch, LlamaShape, MemoryEstimate, ModelOptions, PRESETS};
pub use gpt::{backward, forward, trunk_backward, trunk_forward, Activations, Gpt, LmHead, ScalarHead};
pub use params::{ParamLayout, ScalarHeadKind};
