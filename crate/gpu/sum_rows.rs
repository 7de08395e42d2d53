//! Dispatch for `shaders/sum_rows.wgsl`.

use super::{Batch, GpuError, Shader, View, params};

pub const SHADER: Shader = Shader { name: "sum_rows", wgsl: include_str!("../../shaders/sum_rows.wgsl") };

/// Rows one invocation adds up before handing a partial sum to the next level.
const CHUNK_ROWS: usize = 64;

params! {
    struct Params {
        r: u32,
        w: u32,
        src_offset: u32,
        out_offset: u32,
        chunk_rows: u32,
        accumulate: u32,
        _pad: [u32; 2],
    }
}

/// out (W) (+)= Σ_r src[r, :] for src (R, W), in a fixed order: chunks of 64 rows, then
/// the chunk sums (recursively while there are more than 64).
pub fn sum_rows(batch: &mut Batch, out: View, src: View, r: usize, w: usize, accumulate: bool) -> Result<(), GpuError> {
    assert!(r > 0, "sum_rows over zero rows");
    let src_offset = src.check(r * w, "sum_rows src");
    let out_offset = out.check(w, "sum_rows out");
    if r <= CHUNK_ROWS {
        let params = Params {
            r: r as u32,
            w: w as u32,
            src_offset,
            out_offset,
            chunk_rows: r as u32,
            accumulate: accumulate as u32,
            _pad: [0; 2],
        };
        let groups = batch.grid(w, 64);
        batch.dispatch(SHADER, "sum_rows", &params, &[("src", src.buf), ("out", out.buf)], groups);
        return Ok(());
    }
    let chunks = r.div_ceil(CHUNK_ROWS);
    let partial = batch.temp(chunks * w)?;
    let params = Params {
        r: r as u32,
        w: w as u32,
        src_offset,
        out_offset: 0,
        chunk_rows: CHUNK_ROWS as u32,
        accumulate: 0,
        _pad: [0; 2],
    };
    let groups = batch.grid(chunks * w, 64);
    batch.dispatch(SHADER, "sum_rows", &params, &[("src", src.buf), ("out", &partial)], groups);
    sum_rows(batch, out, partial.view(), chunks, w, accumulate)
}
