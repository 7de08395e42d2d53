//! Softmax + cross-entropy with a weight per position.

use super::Float;

/// losses (N) = w · (logsumexp(logits) − logits[target]); 0 where the weight is 0.
/// logits (N, V), targets (N), weights (N).
pub fn cross_entropy_forward<F: Float>(
    losses: &mut [F],
    logits: &[F],
    targets: &[u32],
    weights: &[F],
    n: usize,
    v: usize,
) {
    for i in 0..n {
        let row = &logits[i * v..][..v];
        let max = row.iter().fold(F::neg_infinity(), |m, &x| m.max(x));
        let sum: F = row.iter().map(|&x| (x - max).exp()).sum();
        let nll = sum.ln() + max - row[targets[i] as usize];
        losses[i] = if weights[i] == F::zero() { F::zero() } else { weights[i] * nll };
    }
}

/// dlogits (N, V) = w · (softmax(logits) − onehot(target)); overwritten.
pub fn cross_entropy_backward<F: Float>(
    dlogits: &mut [F],
    logits: &[F],
    targets: &[u32],
    weights: &[F],
    n: usize,
    v: usize,
) {
    for i in 0..n {
        let row = &logits[i * v..][..v];
        let max = row.iter().fold(F::neg_infinity(), |m, &x| m.max(x));
        let sum: F = row.iter().map(|&x| (x - max).exp()).sum();
        for (j, d) in dlogits[i * v..][..v].iter_mut().enumerate() {
            let prob = (row[j] - max).exp() / sum;
            let indicator = if j == targets[i] as usize { F::one() } else { F::zero() };
            *d = if weights[i] == F::zero() { F::zero() } else { weights[i] * (prob - indicator) };
        }
    }
}
