//! Causal multi-head self-attention on the fused QKV layout (B, T, 3C).

use super::{cst, for_chunks2, Float};

/// out (B, T_cap, C), att (B, NH, T − t0, T) ← qkv (B, T_cap, 3C), for query rows
/// t0 .. T. Training uses t0 = 0 and T_cap = T; a KV-cache decode step computes the one
/// new row t0 = T − 1 against a cache of capacity T_cap.
/// att holds the softmax probabilities (zero above the diagonal) for the backward pass.
pub fn attention_forward<F: Float>(
    out: &mut [F],
    att: &mut [F],
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
    // one sequence b per task: out[b] (T_cap, C) and att[b] (NH, T − t0, T)
    for_chunks2(
        &mut out[..b_size * t_cap * c],
        t_cap * c,
        &mut att[..b_size * nh * rows * t_size],
        nh * rows * t_size,
        |b, out, att| {
            let qkv = &qkv[b * t_cap * 3 * c..];
            for h in 0..nh {
                for t in t0..t_size {
                    let q = &qkv[t * 3 * c + h * hs..][..hs];
                    let row = &mut att[(h * rows + t - t0) * t_size..][..t_size];
                    // scores and their max, keys 0..=t only
                    let mut max = F::neg_infinity();
                    for t2 in 0..=t {
                        let k = &qkv[t2 * 3 * c + c + h * hs..][..hs];
                        let s: F = q.iter().zip(k).map(|(&x, &y)| x * y).sum::<F>() * scale;
                        row[t2] = s;
                        max = max.max(s);
                    }
                    // softmax, stable
                    let mut sum = F::zero();
                    for x in row[..=t].iter_mut() {
                        *x = (*x - max).exp();
                        sum = sum + *x;
                    }
                    let inv = F::one() / sum;
                    row[..=t].iter_mut().for_each(|x| *x = *x * inv);
                    row[t + 1..].iter_mut().for_each(|x| *x = F::zero());
                    // out = att · V, as a sum of V's rows
                    let o = &mut out[t * c + h * hs..][..hs];
                    o.iter_mut().for_each(|x| *x = F::zero());
                    for (t2, &a) in row[..=t].iter().enumerate() {
                        let v = &qkv[t2 * 3 * c + 2 * c + h * hs..][..hs];
                        o.iter_mut().zip(v).for_each(|(x, &y)| *x = *x + a * y);
                    }
                }
            }
        },
    );
}

/// dqkv (B, T, 3C) ← dout (B, T, C), using qkv and the saved att.
/// datt (B, NH, T, T) is scratch; it ends holding d(pre-softmax scores), zero above the
/// diagonal. dqkv is overwritten.
pub fn attention_backward<F: Float>(
    dqkv: &mut [F],
    datt: &mut [F],
    dout: &[F],
    qkv: &[F],
    att: &[F],
    b_size: usize,
    t_size: usize,
    c: usize,
    nh: usize,
) {
    let hs = c / nh;
    let scale = F::one() / cst::<F>(hs as f64).sqrt();
    // one sequence b per task: dqkv[b] (T, 3C) and datt[b] (NH, T, T)
    for_chunks2(
        &mut dqkv[..b_size * t_size * 3 * c],
        t_size * 3 * c,
        &mut datt[..b_size * nh * t_size * t_size],
        nh * t_size * t_size,
        |b, dqkv, datt| {
            let (qkv, dout) = (&qkv[b * t_size * 3 * c..], &dout[b * t_size * c..]);
            let att = &att[b * nh * t_size * t_size..];
            let at = |t: usize, part: usize, h: usize| t * 3 * c + part * c + h * hs;
            dqkv.iter_mut().for_each(|x| *x = F::zero());
            for h in 0..nh {
                for t in 0..t_size {
                    let r = (h * t_size + t) * t_size;
                    let g = &dout[t * c + h * hs..][..hs];
                    // datt = dout · V, then through the softmax: dpre = att ⊙ (datt − Σ att ⊙ datt)
                    for t2 in 0..=t {
                        let v = &qkv[at(t2, 2, h)..][..hs];
                        datt[r + t2] = g.iter().zip(v).map(|(&x, &y)| x * y).sum();
                    }
                    let dot: F = (0..=t).map(|t2| att[r + t2] * datt[r + t2]).sum();
                    for t2 in 0..t_size {
                        datt[r + t2] = if t2 <= t { att[r + t2] * (datt[r + t2] - dot) } else { F::zero() };
                    }
                    for t2 in 0..=t {
                        let (dpre, a) = (datt[r + t2] * scale, att[r + t2]);
                        // dq += dpre · k · scale,  dk += dpre · q · scale,  dv += att · dout
                        for d in 0..hs {
                            let (q, k) = (qkv[at(t, 0, h) + d], qkv[at(t2, 1, h) + d]);
                            dqkv[at(t, 0, h) + d] = dqkv[at(t, 0, h) + d] + dpre * k;
                            dqkv[at(t2, 1, h) + d] = dqkv[at(t2, 1, h) + d] + dpre * q;
                            dqkv[at(t2, 2, h) + d] = dqkv[at(t2, 2, h) + d] + a * g[d];
                        }
                    }
                }
            }
        },
    );
}
