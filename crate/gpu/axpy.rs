//! Dispatch for `shaders/axpy.wgsl`.

use super::{params, Batch, Shader, View};

pub const SHADER: Shader = Shader { name: "axpy", wgsl: include_str!("../../shaders/axpy.wgsl") };

params! {
    struct Params {
        r: u32,
        w: u32,
        src_offset: u32,
        src_stride: u32,
        out_offset: u32,
        out_stride: u32,
        alpha: f32,
        flags: u32, // 1: accumulate; src's format (`View::format`) times 2
    }
}

/// out[r·out_stride + w] (+)= α · src[r·src_stride + w] for r < R, w < W.
#[allow(clippy::too_many_arguments)]
pub fn axpy(
    batch: &mut Batch,
    out: View,
    out_stride: usize,
    src: View,
    src_stride: usize,
    r: usize,
    w: usize,
    alpha: f32,
    accumulate: bool,
) {
    assert!(out.half.is_none(), "axpy writes f32");
    // src stride 0 reads one row for every output row
    assert!(w <= out_stride && (w <= src_stride || src_stride == 0), "axpy rows overlap");
    if r == 0 || w == 0 {
        return;
    }
    let src_offset = src.check((r - 1) * src_stride + w, "axpy src");
    let out_offset = out.check((r - 1) * out_stride + w, "axpy out");
    let params = Params {
        r: r as u32,
        w: w as u32,
        src_offset,
        src_stride: src_stride as u32,
        out_offset,
        out_stride: out_stride as u32,
        alpha,
        flags: accumulate as u32 | src.format() << 1,
    };
    let groups = batch.grid(r * w, 64);
    batch.dispatch(SHADER, "axpy", &params, &[("src", src.buf), ("out", out.buf)], groups);
}
