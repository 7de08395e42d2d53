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

/// The causal softmax of one query row in place: row[..=t] becomes probabilities (the
/// stable form, max subtracted), row[t + 1..] zero. Returns log Σ exp, the row's lse.
fn causal_softmax<F: Float>(row: &mut [F], t: usize) -> F {
    let max = row[..=t].iter().fold(F::neg_infinity(), |m, &x| m.max(x));
    let mut sum = F::zero();
    for x in row[..=t].iter_mut() {
        *x = (*x - max).exp();
        sum = sum + *x;
    }
    let inv = F::one() / sum;
    row[..=t].iter_mut().for_each(|x| *x = *x * inv);
    row[t + 1..].iter_mut().for_each(|x| *x = F::zero());
    max + sum.ln()
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
                // scores, keys 0..=t only, then their softmax
                for (t2, s) in row[..=t].iter_mut().enumerate() {
                    *s = dot(q, &qkv[t2 * 3 * c + c + h * hs..][..hs]) * scale;
                }
                lse[h * rows + t - t0] = causal_softmax(&mut row, t);
                // out = softmax · V, as a sum of V's rows
                let o = &mut out[t * c + h * hs..][..hs];
                o.iter_mut().for_each(|x| *x = F::zero());
                for (t2, &a) in row[..=t].iter().enumerate() {
                    let v = &qkv[t2 * 3 * c + 2 * c + h * hs..][..hs];
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

/// dst (m, n) = beta · lhs (m, k) · rhs (k, n), each matrix given by its first element and
/// its (row, column) strides in elements, through the `gemm` crate on this thread.
///
/// # Safety
/// Every element the shapes and strides reach must lie inside the slice it points into,
/// and dst must not overlap lhs or rhs.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_into(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    beta: f32,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        false,
        lhs.0,
        lhs.2 as isize,
        lhs.1 as isize,
        rhs.0,
        rhs.2 as isize,
        rhs.1 as isize,
        0.0,
        beta,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// The same attention as [`attention_forward`], f32 only, with each head's products
/// through `gemm` (S = Q·Kᵀ, then out = P·V): what the CPU backend runs. It keeps one
/// (T − t0, T) score matrix per sequence being worked on as scratch, never the whole
/// batch's; selftest holds it to the twin.
pub fn attention_forward_gemm(
    out: &mut [f32],
    lse: &mut [f32],
    qkv: &[f32],
    b_size: usize,
    t_size: usize,
    c: usize,
    nh: usize,
    t0: usize,
    t_cap: usize,
) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    let rows = t_size - t0;
    assert!(qkv.len() >= b_size * t_cap * 3 * c && out.len() >= b_size * t_cap * c && lse.len() >= b_size * nh * rows);
    for_chunks2(&mut out[..b_size * t_cap * c], t_cap * c, &mut lse[..b_size * nh * rows], nh * rows, |b, out, lse| {
        let qkv = &qkv[b * t_cap * 3 * c..][..t_cap * 3 * c];
        let mut p = vec![0.0f32; rows * t_size]; // (T − t0, T) scores, then probabilities
        for h in 0..nh {
            // SAFETY: Q rows t0..T, K and V rows 0..T of head h lie in qkv (T_cap ≥ T rows
            // of 3C); p is rows × T; out rows t0..T of head h lie in out.
            unsafe {
                let q = (qkv[t0 * 3 * c + h * hs..].as_ptr(), 3 * c, 1);
                let k_t = (qkv[c + h * hs..].as_ptr(), 1, 3 * c); // Kᵀ (HS, T)
                gemm_into((rows, t_size, hs), p.as_mut_ptr(), t_size, q, k_t, scale);
            }
            for (i, row) in p.chunks_exact_mut(t_size).enumerate() {
                lse[h * rows + i] = causal_softmax(row, t0 + i);
            }
            // SAFETY: as above; out does not overlap p or qkv.
            unsafe {
                let v = (qkv[2 * c + h * hs..].as_ptr(), 3 * c, 1);
                let dst = out[t0 * c + h * hs..].as_mut_ptr();
                gemm_into((rows, hs, t_size), dst, c, (p.as_ptr(), t_size, 1), v, 1.0);
            }
        }
    });
}

/// The same backward as [`attention_backward`], f32 only, each head's products through
/// `gemm`: S = Q·Kᵀ and P = exp(S − lse) again, dP = dout·Vᵀ, dS = P ⊙ (dP − delta),
/// dq = scale·dS·K, dk = scale·dSᵀ·Q, dv = Pᵀ·dout. Two (T, T) matrices per sequence
/// being worked on as scratch.
pub fn attention_backward_gemm(
    dqkv: &mut [f32],
    delta: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    out: &[f32],
    lse: &[f32],
    b_size: usize,
    t_size: usize,
    c: usize,
    nh: usize,
) {
    let (hs, t) = (c / nh, t_size);
    let scale = 1.0 / (hs as f32).sqrt();
    assert!(qkv.len() >= b_size * t * 3 * c && dout.len() >= b_size * t * c && out.len() >= b_size * t * c);
    assert!(dqkv.len() >= b_size * t * 3 * c && delta.len() >= b_size * nh * t && lse.len() >= b_size * nh * t);
    for_chunks2(&mut dqkv[..b_size * t * 3 * c], t * 3 * c, &mut delta[..b_size * nh * t], nh * t, |b, dqkv, delta| {
        let qkv = &qkv[b * t * 3 * c..][..t * 3 * c];
        let (dout, out, lse) = (&dout[b * t * c..][..t * c], &out[b * t * c..][..t * c], &lse[b * nh * t..][..nh * t]);
        let (mut p, mut ds) = (vec![0.0f32; t * t], vec![0.0f32; t * t]);
        for h in 0..nh {
            let (q, k, v) = (&qkv[h * hs..], &qkv[c + h * hs..], &qkv[2 * c + h * hs..]);
            let g = &dout[h * hs..];
            // SAFETY (every block below): Q, K, V (rows of 3C) and dout (rows of C) hold T
            // rows of head h; p and ds are T × T; dqkv's q, k and v columns of head h are
            // written, and overlap none of the inputs.
            unsafe {
                gemm_into((t, t, hs), p.as_mut_ptr(), t, (q.as_ptr(), 3 * c, 1), (k.as_ptr(), 1, 3 * c), scale);
                gemm_into((t, t, hs), ds.as_mut_ptr(), t, (g.as_ptr(), c, 1), (v.as_ptr(), 1, 3 * c), 1.0);
            }
            for i in 0..t {
                let d = dot(&dout[i * c + h * hs..][..hs], &out[i * c + h * hs..][..hs]);
                delta[h * t + i] = d;
                let l = lse[h * t + i];
                let (pr, dr) = (&mut p[i * t..][..t], &mut ds[i * t..][..t]);
                for j in 0..t {
                    let pij = if j <= i { (pr[j] - l).exp() } else { 0.0 };
                    pr[j] = pij;
                    dr[j] = pij * (dr[j] - d);
                }
            }
            unsafe {
                let dq = dqkv[h * hs..].as_mut_ptr();
                gemm_into((t, hs, t), dq, 3 * c, (ds.as_ptr(), t, 1), (k.as_ptr(), 3 * c, 1), scale);
                let dk = dqkv[c + h * hs..].as_mut_ptr();
                gemm_into((t, hs, t), dk, 3 * c, (ds.as_ptr(), 1, t), (q.as_ptr(), 3 * c, 1), scale);
                let dv = dqkv[2 * c + h * hs..].as_mut_ptr();
                gemm_into((t, hs, t), dv, 3 * c, (p.as_ptr(), 1, t), (g.as_ptr(), c, 1), 1.0);
            }
        }
    });
}
