//! Every WGSL kernel held against its CPU twin on random inputs.
//!
//! The twin runs in f64 on the same (f32) inputs, so the error measured is the GPU's own:
//! `max_rel_err` = max |gpu − reference| / max |reference| over every output the kernel
//! writes (the whole output buffer, so writes outside a view are caught too).
//! `cargo test` runs these natively (lavapipe here); the browser test runs the same code
//! compiled to wasm32 inside a Web Worker on Chromium's WebGPU adapter.

mod cases;

use serde::Serialize;

use crate::gpu::{Gpu, GpuError};
pub use cases::FAMILIES;

/// The tolerance for f32 kernels against an f64 reference, relative to the output's
/// largest magnitude. Rounding in f32 (ε = 1.2e-7) over the sums these kernels do (up to
/// a few hundred terms here, in tree or sequential order) gives errors around 1e-6;
/// 1e-5 leaves room for that, while any indexing, masking or synchronisation bug shows
/// up as an error of order 1.
pub const TOLERANCE: f64 = 1e-5;

/// The outcome of one kernel on one shape.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub kernel: &'static str,
    pub case: String,
    pub max_rel_err: f64,
    pub tolerance: f64,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.max_rel_err <= self.tolerance
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:<22} {:<44} max rel err {:.2e} (tolerance {:.0e})",
            if self.passed() { "ok  " } else { "FAIL" },
            self.kernel,
            self.case,
            self.max_rel_err,
            self.tolerance
        )
    }
}

/// max |gpu − reference| / max |reference|; infinite when the GPU wrote NaN.
pub fn max_rel_err(gpu: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(gpu.len(), reference.len(), "output lengths differ");
    let scale = reference.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let diff = gpu.iter().zip(reference).fold(0.0f64, |m, (&g, &r)| {
        let d = (g as f64 - r).abs();
        if d.is_nan() {
            f64::INFINITY
        } else {
            m.max(d)
        }
    });
    if scale > 0.0 {
        diff / scale
    } else {
        diff
    }
}

/// The CPU backend's fast products against their twins, with no GPU (see [`cases::cpu`]).
pub fn check_cpu() -> Vec<Check> {
    cases::cpu(&mut crate::rng::Rng::new(0x006b_696c_6e63_7075))
}

/// Runs the checks of one kernel family (a name from [`FAMILIES`]).
pub async fn check_family(gpu: &Gpu, family: &str) -> Result<Vec<Check>, GpuError> {
    cases::run(gpu, family).await
}

/// Runs every family.
pub async fn check_all(gpu: &Gpu) -> Result<Vec<Check>, GpuError> {
    let mut all = Vec::new();
    for family in FAMILIES {
        all.extend(check_family(gpu, family).await?);
    }
    Ok(all)
}
