//! Which backend the session's models train on, and whether a model fits it: `auto`
//! times each new model on WebGPU (when there is an adapter) and on the CPU and keeps the
//! faster; `gpu` and `cpu` are taken as asked.

use serde::{Deserialize, Serialize};

use super::Session;
use crate::backend::{cpu_memory_budget, BackendChoice, BackendKind};
use crate::error::Result;
use crate::gpu::{Gpu, GpuError};
use crate::model::GptConfig;
use crate::train::check_fits_within;

/// Workers a CPU step is shared by unless asked: each holds a copy of the model and its
/// activations, and past four the per-step copies of weights and gradients eat the gain.
pub const DEFAULT_THREADS: usize = 4;
/// The most a caller may ask for.
pub const MAX_THREADS: usize = 16;

/// The backend a session trains on, and why.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendInfo {
    /// The backend models train on now (with `auto`, the faster for the last model made).
    pub kind: BackendKind,
    pub adapter: String,
    /// Why this backend: asked for, no WebGPU, or both timed on the model (`auto`).
    pub reason: Option<String>,
    pub max_buffer_bytes: Option<u64>,
    /// `auto`: each new model is timed on both backends and trains on the faster.
    pub auto: bool,
    /// WebGPU here renders in software on the CPU (SwiftShader, WARP): not a GPU.
    pub software: bool,
    /// `auto`'s measurements on the last model made (training tokens/s).
    pub gpu_tokens_per_s: Option<f64>,
    pub cpu_tokens_per_s: Option<f64>,
    /// Workers that share a CPU training step (this one and its helpers; train::parallel).
    pub threads: usize,
    /// The CPU backend's matrix-product kernels here: in the browser, which of the two
    /// WebAssembly builds runs ("wasm32 relaxed SIMD …" or "wasm32 SIMD128 …").
    pub cpu_kernel: &'static str,
    /// In the browser, the WebAssembly build: "relaxed" (relaxed SIMD) or "simd128".
    pub simd: Option<&'static str>,
}

/// The WebAssembly build this is (www/build.sh makes two); None natively.
fn simd_build() -> Option<&'static str> {
    if cfg!(all(target_arch = "wasm32", target_feature = "relaxed-simd")) {
        Some("relaxed")
    } else if cfg!(target_arch = "wasm32") {
        Some("simd128")
    } else {
        None
    }
}

/// The CPU backend's name for the badge: which WebAssembly build, or the native CPU.
fn cpu_adapter() -> &'static str {
    if cfg!(all(target_arch = "wasm32", target_feature = "relaxed-simd")) {
        "WebAssembly (relaxed SIMD)"
    } else if cfg!(target_arch = "wasm32") {
        "WebAssembly (SIMD128)"
    } else {
        "the native CPU"
    }
}

/// What the page's WebGPU adapter says of itself (wgpu leaves the name empty in browsers).
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(default)]
pub struct AdapterDescription {
    pub description: String,
    /// `isFallbackAdapter`, or a software rasteriser's name
    pub software: bool,
}

/// A model's size and memory before it is made, and whether the backend takes it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    pub config: GptConfig,
    pub params: usize,
    pub memory_bytes: u64,
    pub memory: String,
    pub fits: bool,
    pub problem: Option<String>,
}

fn cpu_info(reason: String, threads: usize) -> BackendInfo {
    BackendInfo {
        kind: BackendKind::Cpu,
        adapter: cpu_adapter().into(),
        reason: Some(reason),
        max_buffer_bytes: None,
        auto: false,
        software: false,
        gpu_tokens_per_s: None,
        cpu_tokens_per_s: None,
        threads,
        cpu_kernel: crate::cpu::matmul::gemm_kernel(),
        simd: simd_build(),
    }
}

impl Session {
    /// A session on `backend`: auto (WebGPU, when there is an adapter, and the CPU; each
    /// model trains on whichever is faster for it, timed when the model is made), gpu or
    /// cpu. `threads`: the workers a CPU step is shared by (1 to [`MAX_THREADS`]).
    pub async fn start(backend: BackendChoice, adapter: AdapterDescription, threads: usize) -> Result<Session> {
        let threads = threads.clamp(1, MAX_THREADS);
        let auto = backend == BackendChoice::Auto;
        let (gpu, info) = match backend {
            BackendChoice::Cpu => (None, cpu_info("the CPU backend was asked for".into(), threads)),
            BackendChoice::Gpu | BackendChoice::Auto => match Gpu::new().await {
                Ok(gpu) => {
                    let limits = gpu.limits();
                    let software = adapter.software || gpu.is_software();
                    let name = if adapter.description.is_empty() { gpu.adapter_name() } else { adapter.description };
                    let info = BackendInfo {
                        // before a model is timed, auto expects a software adapter to lose
                        kind: if auto && software { BackendKind::Cpu } else { BackendKind::Gpu },
                        adapter: name,
                        reason: auto.then(|| {
                            "WebGPU and the CPU are both here: each model is timed on both when it is made and \
                             trains on the faster"
                                .into()
                        }),
                        max_buffer_bytes: Some(limits.max_storage_buffer_binding_size.min(limits.max_buffer_size)),
                        auto,
                        software,
                        gpu_tokens_per_s: None,
                        cpu_tokens_per_s: None,
                        threads,
                        cpu_kernel: crate::cpu::matmul::gemm_kernel(),
                        simd: simd_build(),
                    };
                    (Some(gpu), info)
                }
                Err(GpuError::NoAdapter(_)) if auto => {
                    let why = "WebGPU is not available here: this browser offers no GPU adapter";
                    (None, cpu_info(why.into(), threads))
                }
                Err(e) if auto => (None, cpu_info(format!("WebGPU is not available here: {e}"), threads)),
                Err(e) => return Err(e.into()),
            },
        };
        let mut session = Session::new(gpu, info.kind);
        session.info = Some(BackendInfo { threads, ..info });
        Ok(session)
    }

    /// With `auto` and WebGPU at hand, times `config` on both backends and makes the
    /// faster the session's.
    pub async fn choose_backend(&mut self, config: GptConfig) -> Result<()> {
        let (Some(gpu), Some(info), Some(tok)) = (&self.gpu, &self.info, &self.tokenizer) else { return Ok(()) };
        if !info.auto {
            return Ok(());
        }
        let choice = crate::train::choose::choose(Some((gpu, info.software)), tok, config).await?;
        self.backend = choice.kind;
        self.info = Some(BackendInfo {
            kind: choice.kind,
            reason: Some(choice.reason),
            gpu_tokens_per_s: choice.gpu_tokens_per_s,
            cpu_tokens_per_s: Some(choice.cpu_tokens_per_s),
            ..info.clone()
        });
        Ok(())
    }

    /// `config`'s size and memory at batch `batch`, and whether the session's backend
    /// takes it (the device's buffer limit; on the CPU, the memory budget).
    pub fn estimate(&self, config: GptConfig, batch: usize) -> ModelInfo {
        let memory = config.memory(batch, config.block_size);
        let limit = self.info.as_ref().and_then(|i| i.max_buffer_bytes);
        let on_cpu = self.info.as_ref().is_none_or(|i| i.kind == BackendKind::Cpu);
        let budget = if on_cpu { cpu_memory_budget() } else { None };
        let problem = check_fits_within(limit, budget, &config, batch, config.block_size).err().map(|e| e.to_string());
        ModelInfo {
            config,
            params: config.num_params(),
            memory_bytes: memory.total(),
            memory: memory.to_string(),
            fits: problem.is_none(),
            problem,
        }
    }
}
