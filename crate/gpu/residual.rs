//! Dispatch for `shaders/residual.wgsl`.

use super::{Batch, Buffer, Shader, params};

pub const SHADER: Shader = Shader { name: "residual", wgsl: include_str!("../../shaders/residual.wgsl") };

params! {
    struct Params {
        n: u32,
        _pad: [u32; 3],
    }
}

/// out = inp1 + inp2, n elements.
pub fn residual_forward(batch: &mut Batch, out: &Buffer, inp1: &Buffer, inp2: &Buffer, n: usize) {
    assert!(out.len() >= n && inp1.len() >= n && inp2.len() >= n);
    let groups = batch.grid(n, 64);
    let params = Params { n: n as u32, _pad: [0; 3] };
    batch.dispatch(SHADER, "residual_forward", &params, &[("inp1", inp1), ("inp2", inp2), ("out", out)], groups);
}

/// dinp1 += dout, dinp2 += dout.
pub fn residual_backward(batch: &mut Batch, dinp1: &Buffer, dinp2: &Buffer, dout: &Buffer, n: usize) {
    assert!(dinp1.len() >= n && dinp2.len() >= n && dout.len() >= n);
    let groups = batch.grid(n, 64);
    let params = Params { n: n as u32, _pad: [0; 3] };
    batch.dispatch(SHADER, "residual_backward", &params, &[("dout", dout), ("dinp1", dinp1), ("dinp2", dinp2)], groups);
}
