//! A scaled copy between two strided row sets (BLAS's axpy, row by row).

use super::Float;

/// out[r·out_stride + w] (+)= α · src[r·src_stride + w] for r < R, w < W: LoRA's scaled
/// low-rank product into one projection's columns of a fused output, and that slice of
/// the output's gradient back out. A src stride of 0 reads one row for every output row.
#[allow(clippy::too_many_arguments)]
pub fn axpy<F: Float>(
    out: &mut [F],
    out_stride: usize,
    src: &[F],
    src_stride: usize,
    r: usize,
    w: usize,
    alpha: F,
    accumulate: bool,
) {
    for row in 0..r {
        let o = &mut out[row * out_stride..row * out_stride + w];
        let s = &src[row * src_stride..row * src_stride + w];
        for (o, &x) in o.iter_mut().zip(s) {
            *o = if accumulate { *o + alpha * x } else { alpha * x };
        }
    }
}
