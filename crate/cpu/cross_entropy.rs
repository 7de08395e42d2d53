//! Softmax + cross-entropy with a weight per position.

use super::{for_chunks, sum8, Float};

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

/// logits (N, V) ← w · (softmax(logits) − onehot(target)): the gradient, in place of
/// the logits (as the GPU kernel, llm.c's fused classifier).
pub fn cross_entropy_backward<F: Float>(logits: &mut [F], targets: &[u32], weights: &[F], n: usize, v: usize) {
    for_chunks(&mut logits[..n * v], v, |i, row| {
        if weights[i] == F::zero() {
            row.iter_mut().for_each(|d| *d = F::zero());
            return;
        }
        // e^(x − max) in place, then scaled: w · (e / Σe − onehot)
        let max = row.iter().fold(F::neg_infinity(), |m, &x| m.max(x));
        row.iter_mut().for_each(|x| *x = (*x - max).exp());
        let scale = weights[i] / sum8(v, |j| row[j]);
        row.iter_mut().for_each(|d| *d = *d * scale);
        let t = targets[i] as usize;
        row[t] = row[t] - weights[i];
    });
}
