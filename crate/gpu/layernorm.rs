//! Dispatch for `shaders/layernorm.wgsl`.

use super::sum_rows::sum_rows;
use super::{Batch, Buffer, GpuError, Shader, View, params};
use crate::cpu::layernorm::LAYERNORM_EPS;

pub const SHADER: Shader = Shader { name: "layernorm", wgsl: include_str!("../../shaders/layernorm.wgsl") };

/// Rows per partial sum of the weight and bias gradients.
const CHUNK_ROWS: usize = 64;

params! {
    struct Params {
        n: u32,
        c: u32,
        weight_offset: u32,
        bias_offset: u32,
        eps: f32,
        chunk_rows: u32,
        _pad: [u32; 2],
    }
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
        SHADER,
        "layernorm_forward",
        &params,
        &[("inp", inp), ("weight", weight.buf), ("bias", bias.buf), ("out", out), ("mean", mean), ("rstd", rstd)],
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
        SHADER,
        "layernorm_backward",
        &params,
        &[("inp", inp), ("weight", weight.buf), ("mean", mean), ("rstd", rstd), ("dout", dout), ("dinp", dinp)],
        groups,
    );
    // Weight and bias gradients: partial sums per chunk of rows, then the chunks in order.
    let chunks = n.div_ceil(CHUNK_ROWS);
    let partial = batch.temp(2 * chunks * c)?;
    let groups = batch.grid(chunks * c, 64);
    batch.dispatch(
        SHADER,
        "layernorm_backward_params",
        &params,
        &[("inp", inp), ("mean", mean), ("rstd", rstd), ("dout", dout), ("partial", &partial)],
        groups,
    );
    sum_rows(batch, dweight, partial.at(0), chunks, c, true)?;
    sum_rows(batch, dbias, partial.at(chunks * c), chunks, c, true)
}
