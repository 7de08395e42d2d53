//! Dispatch for `shaders/matmul.wgsl`.

use super::{Batch, Shader, View, params};
pub use crate::cpu::matmul::MatmulShape;

pub const SHADER: Shader = Shader { name: "matmul", wgsl: include_str!("../../shaders/matmul.wgsl") };

params! {
    struct Params {
        m: u32,
        n: u32,
        k: u32,
        flags: u32,
        a_offset: u32,
        a_batch: u32,
        a_row: u32,
        a_col: u32,
        b_offset: u32,
        b_batch: u32,
        b_row: u32,
        b_col: u32,
        out_offset: u32,
        out_batch: u32,
        bias_offset: u32,
        _pad: u32,
    }
}

const FLAG_BIAS: u32 = 1;
const FLAG_ACCUMULATE: u32 = 2;
/// B's format (`View::format`) in the flags' bits 2–3.
const FORMAT_SHIFT: u32 = 2;

/// out (batch, M, N) = A · B + bias (N), accumulated into out when `accumulate`; B may
/// hold 16-bit values.
/// Tiled: 64×64 outputs per workgroup, 4×4 per invocation.
pub fn matmul(batch: &mut Batch, out: View, a: View, b: View, bias: Option<View>, s: MatmulShape, accumulate: bool) {
    let groups = [s.n.div_ceil(64) as u32, s.m.div_ceil(64) as u32, s.batch as u32];
    record(batch, "matmul", groups, out, a, b, bias, s, accumulate);
}

/// The same product with one invocation per output: the benchmark's baseline.
pub fn matmul_naive(
    batch: &mut Batch,
    out: View,
    a: View,
    b: View,
    bias: Option<View>,
    s: MatmulShape,
    accumulate: bool,
) {
    let groups = [s.n.div_ceil(16) as u32, s.m.div_ceil(16) as u32, s.batch as u32];
    record(batch, "matmul_naive", groups, out, a, b, bias, s, accumulate);
}

fn record(
    batch: &mut Batch,
    entry: &'static str,
    groups: [u32; 3],
    out: View,
    a: View,
    b: View,
    bias: Option<View>,
    s: MatmulShape,
    accumulate: bool,
) {
    assert!(a.half.is_none() && out.half.is_none() && bias.is_none_or(|v| v.half.is_none()), "only B is read in 16 bits");
    let (a_row, a_col) = s.a_strides();
    let (b_row, b_col) = s.b_strides();
    let params = Params {
        m: s.m as u32,
        n: s.n as u32,
        k: s.k as u32,
        flags: if bias.is_some() { FLAG_BIAS } else { 0 }
            | if accumulate { FLAG_ACCUMULATE } else { 0 }
            | b.format() << FORMAT_SHIFT,
        a_offset: a.check(s.batch * s.a_len(), "matmul A"),
        a_batch: s.a_len() as u32,
        a_row: a_row as u32,
        a_col: a_col as u32,
        b_offset: b.check(s.batch * s.b_len(), "matmul B"),
        b_batch: s.b_len() as u32,
        b_row: b_row as u32,
        b_col: b_col as u32,
        out_offset: out.check(s.batch * s.out_len(), "matmul out"),
        out_batch: s.out_len() as u32,
        bias_offset: bias.map_or(0, |v| v.check(s.n, "matmul bias")),
        _pad: 0,
    };
    // Without a bias the binding still needs a buffer; A's is read-only and harmless.
    let bias_buf = bias.map_or(a.buf, |v| v.buf);
    batch.dispatch(SHADER, entry, &params, &[("a", a.buf), ("b", b.buf), ("bias", bias_buf), ("out", out.buf)], groups);
}
