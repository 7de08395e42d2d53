//! Dispatch for `shaders/rmsnorm.wgsl`.

use super::sum_rows::sum_rows;
use super::{Batch, Buffer, GpuError, Shader, View, params};

pub const SHADER: Shader = Shader { name: "rmsnorm", wgsl: include_str!("../../shaders/rmsnorm.wgsl") };

/// Rows per partial sum of the weight gradient.
const CHUNK_ROWS: usize = 64;

params! {
    struct Params {
        n: u32,
        c: u32,
        weight_offset: u32,
        eps: f32,
        chunk_rows: u32,
        _pad: [u32; 3],
    }
}

/// out (N, C) = inp · rstd · weight, rstd = 1 / √(mean(inp²) + eps); saves rstd (N).
pub fn rmsnorm_forward(
    batch: &mut Batch,
    out: &Buffer,
    rstd: &Buffer,
    inp: &Buffer,
    weight: View,
    n: usize,
    c: usize,
    eps: f64,
) {
    assert!(inp.len() >= n * c && out.len() >= n * c && rstd.len() >= n);
    let params = Params {
        n: n as u32,
        c: c as u32,
        weight_offset: weight.check(c, "rmsnorm weight"),
        eps: eps as f32,
        chunk_rows: CHUNK_ROWS as u32,
        _pad: [0; 3],
    };
    let groups = batch.grid(n, 1);
    batch.dispatch(
        SHADER,
        "rmsnorm_forward",
        &params,
        &[("inp", inp), ("weight", weight.buf), ("out", out), ("rstd", rstd)],
        groups,
    );
}

/// dinp (N, C), dweight (C) += the gradients from dout (N, C).
pub fn rmsnorm_backward(
    batch: &mut Batch,
    dinp: &Buffer,
    dweight: View,
    dout: &Buffer,
    inp: &Buffer,
    weight: View,
    rstd: &Buffer,
    n: usize,
    c: usize,
) -> Result<(), GpuError> {
    assert!(dinp.len() >= n * c && dout.len() >= n * c && inp.len() >= n * c && rstd.len() >= n);
    let params = Params {
        n: n as u32,
        c: c as u32,
        weight_offset: weight.check(c, "rmsnorm weight"),
        eps: 0.0, // rstd is saved: backward needs no eps
        chunk_rows: CHUNK_ROWS as u32,
        _pad: [0; 3],
    };
    let groups = batch.grid(n, 1);
    batch.dispatch(
        SHADER,
        "rmsnorm_backward",
        &params,
        &[("inp", inp), ("weight", weight.buf), ("rstd", rstd), ("dout", dout), ("dinp", dinp)],
        groups,
    );
    // Weight gradient: partial sums per chunk of rows, then the chunks in order.
    let chunks = n.div_ceil(CHUNK_ROWS);
    let partial = batch.temp(chunks * c)?;
    let groups = batch.grid(chunks * c, 64);
    batch.dispatch(
        SHADER,
        "rmsnorm_backward_params",
        &params,
        &[("inp", inp), ("rstd", rstd), ("dout", dout), ("partial", &partial)],
        groups,
    );
    sum_rows(batch, dweight, partial.view(), chunks, c, true)
}
