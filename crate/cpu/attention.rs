//! Causal multi-head self-attention on the fused QKV layout (B, T, 3C), without a stored
//! score matrix: the forward pass saves one log-sum-exp per query row, the backward pass
//! recomputes each probability from it (as `shaders/attention.wgsl` does).

use super::{cst, for_chunks2, Float};

/// x·y over eight running sums: a float sum taken in order cannot be vectorised (its
/// rounding would change), eight independent ones can (SIMD natively and in wasm).
fn dot<F: Float>(x: &[F], y: &[F]) -> F {
    let mut acc = [F::zero(); 8];
    let (xs, ys) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: F = xs.remainder().iter().zip(ys.remainder()).map(|(&a, &b)| a * b).sum();
    for (a, b) in xs.zip(ys) {
        for i in 0..8 {
            acc[i] = acc[i] + a[i] * b[i];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// out (B, T_cap, C), lse (B, NH, T − t0) ← qkv (B, T_cap, 3C), for query rows t0 .. T.
/// Training uses t0 = 0 and T_cap = T; a KV-cache decode step computes the one new row
/// t0 = T − 1 against a cache of capacity T_cap.
/// lse[b, h, t − t0] = log Σ_{t2 ≤ t} exp(q_t·k_t2 / sqrt(HS)): the softmax's normaliser,
/// all the backward pass needs to recompute a probability.
pub fn attention_forward<F: Float>(
    out: &mut [F],
    lse: &mut [F],
    qkv: &[F],
    b_size: usize,
    t_size: usize,
    c: usize,
    nh: usize,
    t0: usize,
    t_cap: usize,
) {
    let hs = c / nh;
    let scale = F::one() / cst::<F>(hs as f64).sqrt();
    let rows = t_size - t0;
    // one sequence b per task: out[b] (T_cap, C) and lse[b] (NH, T − t0)
    for_chunks2(&mut out[..b_size * t_cap * c], t_cap * c, &mut lse[..b_size * nh * rows], nh * rows, |b, out, lse| {
        let qkv = &qkv[b * t_cap * 3 * c..];
        let mut row = vec![F::zero(); t_size]; // one query row's scores, then probabilities
        for h in 0..nh {
            for t in t0..t_size {
                let q = &qkv[t * 3 * c + h * hs..][..hs];
                // scores and their max, keys 0..=t only
                let mut max = F::neg_infinity();
                for (t2, s) in row[..=t].iter_mut().enumerate() {
                    *s = dot(q, &qkv[t2 * 3 * c + c + h * hs..][..hs]) * scale;
                    max = max.max(*s);
                }
                // softmax, stable
                let mut sum = F::zero();
                for x in row[..=t].iter_mut() {
                    *x = (*x - max).exp();
                    sum = sum + *x;
                }
                lse[h * rows + t - t0] = max + sum.ln();
                // out = softmax · V, as a sum of V's rows
                let inv = F::one() / sum;
                let o = &mut out[t * c + h * hs..][..hs];
                o.iter_mut().for_each(|x| *x = F::zero());
                for (t2, &e) in row[..=t].iter().enumerate() {
                    let (a, v) = (e * inv, &qkv[t2 * 3 * c + 2 * c + h * hs..][..hs]);
                    o.iter_mut().zip(v).for_each(|(x, &y)| *x = *x + a * y);
                }
            }
        }
    });
}

/// dqkv (B, T, 3C) ← dout (B, T, C), recomputing the probabilities from qkv and the saved
/// lse (B, NH, T); out (B, T, C) is the forward pass's output. delta (B, NH, T) is
/// scratch; it ends holding dout·out per query row. dqkv is overwritten.
/// With p = exp(s − lse) and dp = dout·v:  ds = p (dp − delta),
///   dq += scale · ds · k,  dk += scale · ds · q,  dv += p · dout.
pub fn attention_backward<F: Float>(
    dqkv: &mut [F],
    delta: &mut [F],
    dout: &[F],
    qkv: &[F],
    out: &[F],
    lse: &[F],
    b_size: usize,
    t_size: usize,
    c: usize,
    nh: usize,
) {
    let hs = c / nh;
    let scale = F::one() / cst::<F>(hs as f64).sqrt();
    // one sequence b per task: dqkv[b] (T, 3C) and delta[b] (NH, T)
    for_chunks2(
        &mut dqkv[..b_size * t_size * 3 * c],
        t_size * 3 * c,
        &mut delta[..b_size * nh * t_size],
        nh * t_size,
        |b, dqkv, delta| {
            let (qkv, dout, out) = (&qkv[b * t_size * 3 * c..], &dout[b * t_size * c..], &out[b * t_size * c..]);
            let lse = &lse[b * nh * t_size..];
            let mut dq = vec![F::zero(); hs];
            dqkv.iter_mut().for_each(|x| *x = F::zero());
            for h in 0..nh {
                for t in 0..t_size {
                    let (q, g) = (&qkv[t * 3 * c + h * hs..][..hs], &dout[t * c + h * hs..][..hs]);
                    let d = dot(g, &out[t * c + h * hs..][..hs]);
                    delta[h * t_size + t] = d;
                    let l = lse[h * t_size + t];
                    dq.iter_mut().for_each(|x| *x = F::zero());
                    for t2 in 0..=t {
                        let kv = &qkv[t2 * 3 * c..];
                        let (k, v) = (&kv[c + h * hs..][..hs], &kv[2 * c + h * hs..][..hs]);
                        let p = (dot(q, k) * scale - l).exp();
                        let ds = p * (dot(g, v) - d) * scale;
                        dq.iter_mut().zip(k).for_each(|(x, &y)| *x = *x + ds * y);
                        let (dk, dv) = dqkv[t2 * 3 * c + c..].split_at_mut(c);
                        dk[h * hs..][..hs].iter_mut().zip(q).for_each(|(x, &y)| *x = *x + ds * y);
                        dv[h * hs..][..hs].iter_mut().zip(g).for_each(|(x, &y)| *x = *x + p * y);
                    }
                    dqkv[t * 3 * c + h * hs..][..hs].copy_from_slice(&dq);
                }
            }
        },
    );
}
