//! Dispatch for `shaders/gelu.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::{Batch, Buffer, Shader};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

/// out = gelu(inp), n elements.
pub fn gelu_forward(batch: &mut Batch, out: &Buffer, inp: &Buffer, n: usize) {
    assert!(out.len() >= n && inp.len() >= n);
    let groups = batch.grid(n, 64);
    let params = Params { n: n as u32, _pad: [0; 3] };
    batch.dispatch(Shader::Gelu, "gelu_forward", &params, &[(1, inp), (2, out)], groups);
}

/// dinp = gelu'(inp) · dout, overwritten.
pub fn gelu_backward(batch: &mut Batch, dinp: &Buffer, inp: &Buffer, dout: &Buffer, n: usize) {
    assert!(dinp.len() >= n && inp.len() >= n && dout.len() >= n);
    let groups = batch.grid(n, 64);
    let params = Params { n: n as u32, _pad: [0; 3] };
    batch.dispatch(Shader::Gelu, "gelu_backward", &params, &[(1, inp), (3, dout), (4, dinp)], groups);
}
