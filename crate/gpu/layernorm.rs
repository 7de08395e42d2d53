//! Dispatch for `shaders/layernorm.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::sum_rows::sum_rows;
use super::{Batch, Buffer, GpuError, Shader, View};
use crate::cpu::layernorm::LAYERNORM_EPS;

/// Rows per partial sum of the weight and bias gradients.
const CHUNK_ROWS: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    c: u32,
    weight_offset: u32,
    bias_offset: u32,
    eps: f32,
    chunk_rows: u32,
    _pad: [u32; 2],
}

/// out (N, C) = layernorm(inp) · weight + bias; saves mean, rstd (N).
pub fn layernorm_forward(
    batch: &mut Batch,
    out: &Buffer,
    mean: &Buffer,
    rstd: &Buffer,
    inp: &Buffer,
    weight: View,
    bias: View,
    n: usize,
    c: usize,
) {
    assert!(inp.len() >= n * c && out.len() >= n * c && mean.len() >= n && rstd.len() >= n);
    let params = Params {
        n: n as u32,
        c: c as u32,
        weight_offset: weight.check(c, "layernorm weight"),
        bias_offset: bias.check(c, "layernorm bias"),
        eps: LAYERNORM_EPS as f32,
        chunk_rows: CHUNK_ROWS as u32,
        _pad: [0; 2],
    };
    let groups = batch.grid(n, 1);
    batch.dispatch(
        Shader::Layernorm,
        "layernorm_forward",
        &params,
        &[(1, inp), (2, weight.buf), (3, bias.buf), (4, out), (5, mean), (6, rstd)],
        groups,
    );
}

/// dinp (N, C), dweight (C), dbias (C) += the gradients from dout (N, C).
pub fn layernorm_backward(
    batch: &mut Batch,
    dinp: &Buffer,
    dweight: View,
    dbias: View,
    dout: &Buffer,
    inp: &Buffer,
    weight: View,
    mean: &Buffer,
    rstd: &Buffer,
    n: usize,
    c: usize,
) -> Result<(), GpuError> {
    assert!(dinp.len() >= n * c && dout.len() >= n * c);
    let params = Params {
        n: n as u32,
        c: c as u32,
        weight_offset: weight.check(c, "layernorm weight"),
        bias_offset: 0,
        eps: LAYERNORM_EPS as f32,
        chunk_rows: CHUNK_ROWS as u32,
        _pad: [0; 2],
    };
    let groups = batch.grid(n, 1);
    batch.dispatch(
        Shader::Layernorm,
        "layernorm_backward",
        &params,
        &[(1, inp), (2, weight.buf), (5, mean), (6, rstd), (7, dout), (8, dinp)],
        groups,
    );
    // Weight and bias gradients: partial sums per chunk of rows, then the chunks in order.
    let chunks = n.div_ceil(CHUNK_ROWS);
    let partial = batch.temp(2 * chunks * c)?;
    let groups = batch.grid(chunks * c, 64);
    batch.dispatch(
        Shader::Layernorm,
        "layernorm_backward_params",
        &params,
        &[(1, inp), (5, mean), (6, rstd), (7, dout), (9, &partial)],
        groups,
    );
    sum_rows(batch, dweight, partial.at(0), chunks, c, true)?;
    sum_rows(batch, dbias, partial.at(chunks * c), chunks, c, true)
}
