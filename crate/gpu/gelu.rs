//! Dispatch for `shaders/gelu.wgsl`.

use super::{Batch, Buffer, Shader, params};

pub const SHADER: Shader = Shader { name: "gelu", wgsl: include_str!("../../shaders/gelu.wgsl") };

params! {
    struct Params {
        n: u32,
        _pad: [u32; 3],
    }
}

/// out = gelu(inp), n elements.
pub fn gelu_forward(batch: &mut Batch, out: &Buffer, inp: &Buffer, n: usize) {
    assert!(out.len() >= n && inp.len() >= n);
    let groups = batch.grid(n, 64);
    let params = Params { n: n as u32, _pad: [0; 3] };
    batch.dispatch(SHADER, "gelu_forward", &params, &[("inp", inp), ("out", out)], groups);
}

/// dinp = gelu'(inp) · dout, overwritten.
pub fn gelu_backward(batch: &mut Batch, dinp: &Buffer, inp: &Buffer, dout: &Buffer, n: usize) {
    assert!(dinp.len() >= n && inp.len() >= n && dout.len() >= n);
    let groups = batch.grid(n, 64);
    let params = Params { n: n as u32, _pad: [0; 3] };
    batch.dispatch(SHADER, "gelu_backward", &params, &[("inp", inp), ("dout", dout), ("dinp", dinp)], groups);
}
