//! Softmax + cross-entropy with a weight per position.

use super::{for_chunks, Float};

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
    for_chunks(&mut losses[..n], 1, |i, loss| {
        let row = &logits[i * v..][..v];
        let max = row.iter().fold(F::neg_infinity(), |m, &x| m.max(x));
        let sum: F = row.iter().map(|&x| (x - max).exp()).sum();
        let nll = sum.ln() + max - row[targets[i] as usize];
        loss[0] = if weights[i] == F::zero() { F::zero() } else { weights[i] * nll };
    });
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
    for_chunks(&mut dlogits[..n * v], v, |i, drow| {
        let row = &logits[i * v..][..v];
        if weights[i] == F::zero() {
            drow.iter_mut().for_each(|d| *d = F::zero());
            return;
        }
        // e^(x − max) once into the gradient row, then scaled: w · (e / Σe − onehot)
        let max = row.iter().fold(F::neg_infinity(), |m, &x| m.max(x));
        drow.iter_mut().zip(row).for_each(|(d, &x)| *d = (x - max).exp());
        let scale = weights[i] / drow.iter().copied().sum::<F>();
        drow.iter_mut().for_each(|d| *d = *d * scale);
        let t = targets[i] as usize;
        drow[t] = drow[t] - weights[i];
    });
}
