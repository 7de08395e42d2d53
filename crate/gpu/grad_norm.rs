//! Dispatch for `shaders/grad_norm.wgsl`.

use super::{Batch, Buffer, GpuError, Shader, View, params};

pub const SHADER: Shader = Shader { name: "grad_norm", wgsl: include_str!("../../shaders/grad_norm.wgsl") };

/// Elements one workgroup of `grad_norm_partial` covers (256 invocations × 16).
const PER_GROUP: usize = 4096;

params! {
    struct Params {
        n: u32,
        offset: u32,
        max_norm: f32,
        n_partials: u32,
    }
}

/// result[0] = ‖grads[offset .. offset + n]‖₂, result[1] = the clip scale
/// min("grads", max_norm / (‖g‖ + 1e-6)) (1 when max_norm ≤ 0). Stays on the GPU for AdamW.
pub fn grad_norm(batch: &mut Batch, result: &Buffer, grads: View, n: usize, max_norm: f32) -> Result<(), GpuError> {
    assert!(result.len() >= 2);
    let n_partials = n.div_ceil(PER_GROUP).max(1);
    let partial = batch.temp(n_partials)?;
    let params =
        Params { n: n as u32, offset: grads.check(n, "grad_norm grads"), max_norm, n_partials: n_partials as u32 };
    let groups = batch.grid(n_partials, 1);
    batch.dispatch(SHADER, "grad_norm_partial", &params, &[("grads", grads.buf), ("partial", &partial)], groups);
    batch.dispatch(SHADER, "grad_norm_final", &params, &[("partial", &partial), ("result", result)], [1, 1, 1]);
    Ok(())
}
