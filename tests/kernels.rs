//! Every WGSL kernel against its CPU twin (in f64), natively — on lavapipe on a machine
//! without a GPU. The same checks run in Chromium in `tests/browser/kernels.test.mjs`.

use kiln::gpu::Gpu;
use kiln::selftest::{check_family, FAMILIES};
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
}

#[test]
fn every_family_has_a_test() {
    // Keeps this file and the suite's list in step: a new family needs a test below.
    let here = include_str!("kernels.rs");
    for family in FAMILIES {
        assert!(here.contains(&format!("fn {family}()")), "no test for {family}");
    }
}

#[test]
fn matmul() {
    run("matmul");
}

#[test]
fn attention() {
    run("attention");
}

#[test]
fn cross_entropy() {
    run("cross_entropy");
}

#[test]
fn layernorm() {
    run("layernorm");
}

#[test]
fn gelu() {
    run("gelu");
}

#[test]
fn residual() {
    run("residual");
}

#[test]
fn embedding() {
    run("embedding");
}

#[test]
fn sum_rows() {
    run("sum_rows");
}

#[test]
fn adamw() {
    run("adamw");
}

#[test]
fn grad_norm() {
    run("grad_norm");
}
