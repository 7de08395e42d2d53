//! wgpu plumbing: one code path for native (Vulkan/Metal/DX12) and the browser (WebGPU).
//!
//! `Gpu` owns the device, the queue and a pipeline cache. Kernels are recorded into a
//! [`Batch`] (one command encoder) and submitted together, so a whole training step is
//! one submit. Reading a buffer back is the only await.

mod batch;
mod context;
mod shaders;

pub mod adamw;
pub mod attention;
pub mod cross_entropy;
pub mod embedding;
pub mod gelu;
pub mod grad_norm;
pub mod layernorm;
pub mod matmul;
pub mod residual;
pub mod sum_rows;

pub use batch::{grid_1d, Batch};
pub use context::{required_limits, Buffer, Gpu, GpuError, KernelTimes, View};
pub use shaders::Shader;
