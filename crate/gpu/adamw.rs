//! Dispatch for `shaders/adamw.wgsl`.

use super::{Batch, Buffer, Shader, params};
pub use crate::cpu::adamw::{AdamWConfig, STEP_VALUES};

pub const SHADER: Shader = Shader { name: "adamw", wgsl: include_str!("../../shaders/adamw.wgsl") };

params! {
    struct Params {
        n: u32,
        beta1: f32,
        beta2: f32,
        eps: f32,
    }
}

/// One AdamW update of every element of params, m, v from grads · clip scale, in one
/// dispatch. `step` holds [grad norm, clip scale] as `grad_norm` wrote them and room for 4
/// more values, which this writes (lr, weight decay, the bias corrections of `t`, counting
/// from 1); bit j of `decay` (u32 words) says whether element j decays.
pub fn adamw(
    batch: &mut Batch,
    params: &Buffer,
    grads: &Buffer,
    m: &Buffer,
    v: &Buffer,
    step: &Buffer,
    decay: &Buffer,
    n: usize,
    cfg: AdamWConfig,
    t: u32,
) -> Result<(), super::GpuError> {
    assert!(t >= 1, "AdamW steps count from 1");
    for (buf, name) in [(params, "params"), (grads, "grads"), (m, "m"), (v, "v")] {
        assert!(n <= buf.len(), "adamw: {name} too short");
    }
    assert!(step.len() >= STEP_VALUES && decay.len() >= n.div_ceil(32), "adamw: step or decay too short");
    let per_step = [
        cfg.lr as f32,
        cfg.weight_decay as f32,
        (1.0 - cfg.beta1.powi(t as i32)) as f32,
        (1.0 - cfg.beta2.powi(t as i32)).sqrt() as f32,
    ];
    batch.write(step, 2, &per_step)?;
    let p = Params { n: n as u32, beta1: cfg.beta1 as f32, beta2: cfg.beta2 as f32, eps: cfg.eps as f32 };
    let groups = batch.grid(n, 64);
    let buffers = [("params", params), ("grads", grads), ("m", m), ("v", v), ("step", step), ("decay", decay)];
    batch.dispatch(SHADER, "adamw", &p, &buffers, groups);
    Ok(())
}
