//! Column sums of a row-major matrix.

use super::Float;

/// out (W) (+)= Σ_r src[r, :] for src (R, W).
pub fn sum_rows<F: Float>(out: &mut [F], src: &[F], r: usize, w: usize, accumulate: bool) {
    for j in 0..w {
        let s: F = (0..r).map(|i| src[i * w + j]).sum();
        out[j] = if accumulate { out[j] + s } else { s };
    }
}
