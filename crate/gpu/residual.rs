//! Dispatch for `shaders/residual.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::{Batch, Buffer, Shader};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

/// out = inp1 + inp2, n elements.
pub fn residual_forward(batch: &mut Batch, out: &Buffer, inp1: &Buffer, inp2: &Buffer, n: usize) {
    assert!(out.len() >= n && inp1.len() >= n && inp2.len() >= n);
    let groups = batch.grid(n, 64);
    let params = Params { n: n as u32, _pad: [0; 3] };
    batch.dispatch(Shader::Residual, "residual_forward", &params, &[(1, inp1), (2, inp2), (3, out)], groups);
}

/// dinp1 += dout, dinp2 += dout.
pub fn residual_backward(batch: &mut Batch, dinp1: &Buffer, dinp2: &Buffer, dout: &Buffer, n: usize) {
    assert!(dinp1.len() >= n && dinp2.len() >= n && dout.len() >= n);
    let groups = batch.grid(n, 64);
    let params = Params { n: n as u32, _pad: [0; 3] };
    batch.dispatch(Shader::Residual, "residual_backward", &params, &[(4, dout), (5, dinp1), (6, dinp2)], groups);
}
