//! Dispatch for `shaders/adamw.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::{Batch, Buffer, Shader};
pub use crate::cpu::adamw::AdamWConfig;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    offset: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bias_correction1: f32,
    bias_correction2_sqrt: f32,
    _pad: [u32; 3],
}

/// One AdamW update of elements offset..offset + n of params, m, v from grads · clip
/// scale, where `norm` = [grad norm, clip scale] as written by `grad_norm`.
/// `step` counts from 1.
pub fn adamw(
    batch: &mut Batch,
    params: &Buffer,
    grads: &Buffer,
    m: &Buffer,
    v: &Buffer,
    norm: &Buffer,
    offset: usize,
    n: usize,
    cfg: AdamWConfig,
    step: u32,
) {
    assert!(step >= 1, "AdamW steps count from 1");
    for (buf, name) in [(params, "params"), (grads, "grads"), (m, "m"), (v, "v")] {
        assert!(offset + n <= buf.len(), "adamw: {name} too short");
    }
    let p = Params {
        n: n as u32,
        offset: offset as u32,
        lr: cfg.lr as f32,
        beta1: cfg.beta1 as f32,
        beta2: cfg.beta2 as f32,
        eps: cfg.eps as f32,
        weight_decay: cfg.weight_decay as f32,
        bias_correction1: (1.0 - cfg.beta1.powi(step as i32)) as f32,
        bias_correction2_sqrt: (1.0 - cfg.beta2.powi(step as i32)).sqrt() as f32,
        _pad: [0; 3],
    };
    let groups = batch.grid(n, 64);
    batch.dispatch(Shader::Adamw, "adamw", &p, &[(1, params), (2, grads), (3, m), (4, v), (5, norm)], groups);
}
