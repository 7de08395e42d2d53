//! Every WGSL kernel against its CPU twin (in f64), natively — on lavapipe on a machine
//! without a GPU. The same checks run in Chromium in `tests/browser/kernels.test.mjs`.
//!
//! Each family's checks also make the pipeline of every entry point its shader declares,
//! and making a pipeline holds the Rust `Params` struct and binding names against the WGSL
//! (`crate/gpu/shaders.rs`): so every kernel's parameters and bindings are checked here.

use kiln::gpu::{Gpu, SHADERS};
use kiln::selftest::check_family;
use pollster::block_on;

fn run(family: &str) {
    let gpu = block_on(Gpu::new()).expect("a GPU adapter (install mesa-vulkan-drivers for lavapipe)");
    let checks = block_on(check_family(&gpu, family)).expect("GPU error");
    assert!(!checks.is_empty());
    for check in &checks {
        println!("[{}] {check}", gpu.adapter_name());
    }
    let failed: Vec<String> = checks.iter().filter(|c| !c.passed()).map(|c| c.to_string()).collect();
    assert!(failed.is_empty(), "{} of {} checks failed:\n{}", failed.len(), checks.len(), failed.join("\n"));
    let shader = SHADERS.iter().find(|s| s.name == family).expect("a shader per family");
    for entry in shader.entry_points() {
        assert!(gpu.has_pipeline(*shader, entry), "the {family} checks never dispatch {entry}: it goes unchecked");
    }
}

// One test per family, from the list in `crate/gpu/mod.rs`.
macro_rules! one_test_per_family {
    ($($family:ident)*) => {
        $(
            #[test]
            fn $family() {
                run(stringify!($family));
            }
        )*
    };
}
kiln::kernel_families!(one_test_per_family);

/// The CPU backend's fast products alone (no GPU): natively the `gemm` crate's kernels; the
/// browser runs the same checks on its two WebAssembly builds (`cpu_kernels.test.mjs`).
#[test]
fn cpu_fast_paths() {
    let checks = kiln::selftest::check_cpu();
    assert!(checks.len() >= 30, "only {} checks", checks.len());
    for check in &checks {
        println!("[cpu] {check}");
    }
    let failed: Vec<String> = checks.iter().filter(|c| !c.passed()).map(|c| c.to_string()).collect();
    assert!(failed.is_empty(), "{} of {} checks failed:\n{}", failed.len(), checks.len(), failed.join("\n"));
}
