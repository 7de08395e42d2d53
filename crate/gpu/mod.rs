//! wgpu plumbing: one code path for native (Vulkan/Metal/DX12) and the browser (WebGPU).
//!
//! `Gpu` owns the device, the queue and a pipeline cache. Kernels are recorded into a
//! [`Batch`] (one command encoder) and submitted together, so a whole training step is
//! one submit. Reading a buffer back is the only await.

mod batch;
mod context;
mod shaders;

pub use batch::{grid_1d, Batch};
pub use context::{required_limits, Buffer, Gpu, GpuError, KernelTimes, View};
pub(crate) use shaders::params;
pub use shaders::{Layout, Params, Shader};

/// Every kernel family, written once, in the self-test's order (a family's place seeds its
/// random cases). A family NAME is `shaders/NAME.wgsl`; its dispatch `crate/gpu/NAME.rs`,
/// which declares `pub const SHADER`; its CPU twin `crate/cpu/NAME.rs`; and its checks,
/// `async fn NAME` in `crate/selftest/cases.rs`. From this list come the `gpu` and `cpu`
/// modules, [`SHADERS`], the self-test's families (`selftest::FAMILIES`, which the browser
/// test reads from the wasm) and one native test per family in `tests/kernels.rs`.
///
/// `kernel_families!(then)` calls the macro `then! { matmul attention … }`.
#[macro_export]
macro_rules! kernel_families {
    ($then:ident) => {
        $then! {
            matmul attention cross_entropy layernorm gelu residual embedding sum_rows adamw grad_norm
            rmsnorm rope swiglu axpy
        }
    };
}

macro_rules! dispatch_modules {
    ($($family:ident)*) => {
        $(pub mod $family;)*

        /// Every family's WGSL, in the order of [`kernel_families!`](crate::kernel_families).
        pub const SHADERS: &[Shader] = &[$($family::SHADER),*];
    };
}
crate::kernel_families!(dispatch_modules);
