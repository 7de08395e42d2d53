//! Global gradient norm and clip scale.

use super::{cst, sum8, Float};

/// (‖grads‖₂, clip scale) with scale = min(1, max_norm / (‖g‖ + 1e-6)); 1 when max_norm ≤ 0.
pub fn grad_norm<F: Float>(grads: &[F], max_norm: F) -> (F, F) {
    let norm = sum8(grads.len(), |i| grads[i] * grads[i]).sqrt();
    let scale = if max_norm > F::zero() { F::one().min(max_norm / (norm + cst(1e-6))) } else { F::one() };
    (norm, scale)
}
