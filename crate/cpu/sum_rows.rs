//! Column sums of a row-major matrix.

use super::Float;

/// out (W) (+)= Σ_r src[r, :] for src (R, W). Walks src row by row (contiguous, and the
/// per-column adds vectorise); each column is still summed in row order.
pub fn sum_rows<F: Float>(out: &mut [F], src: &[F], r: usize, w: usize, accumulate: bool) {
    let mut sums = vec![F::zero(); w];
    for row in src[..r * w].chunks_exact(w) {
        sums.iter_mut().zip(row).for_each(|(s, &x)| *s = *s + x);
    }
    for (o, s) in out[..w].iter_mut().zip(sums) {
        *o = if accumulate { *o + s } else { s };
    }
}
