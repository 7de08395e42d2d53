//! Dispatch for `shaders/swiglu.wgsl`.

use super::{Batch, Buffer, Shader, params};

pub const SHADER: Shader = Shader { name: "swiglu", wgsl: include_str!("../../shaders/swiglu.wgsl") };

params! {
    struct Params {
        n: u32,
        h: u32,
        _pad: [u32; 2],
    }
}

/// out (N, H) = silu(gate) ⊙ up, inp (N, 2H) holding each row as [gate (H) | up (H)].
pub fn swiglu_forward(batch: &mut Batch, out: &Buffer, inp: &Buffer, n: usize, h: usize) {
    assert!(out.len() >= n * h && inp.len() >= n * 2 * h);
    let groups = batch.grid(n * h, 64);
    let params = Params { n: n as u32, h: h as u32, _pad: [0; 2] };
    batch.dispatch(SHADER, "swiglu_forward", &params, &[("inp", inp), ("out", out)], groups);
}

/// dinp (N, 2H) = [dgate | dup] from dout (N, H), overwritten.
pub fn swiglu_backward(batch: &mut Batch, dinp: &Buffer, inp: &Buffer, dout: &Buffer, n: usize, h: usize) {
    assert!(dinp.len() >= n * 2 * h && inp.len() >= n * 2 * h && dout.len() >= n * h);
    let groups = batch.grid(n * h, 64);
    let params = Params { n: n as u32, h: h as u32, _pad: [0; 2] };
    batch.dispatch(SHADER, "swiglu_backward", &params, &[("inp", inp), ("dout", dout), ("dinp", dinp)], groups);
}
