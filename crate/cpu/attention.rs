//! Causal multi-head self-attention on the fused QKV layout (B, T, 3C).

use super::{cst, Float};

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
    for b in 0..b_size {
        for h in 0..nh {
            for t in t0..t_size {
                let q = &qkv[(b * t_cap + t) * 3 * c + h * hs..][..hs];
                let row = &mut att[((b * nh + h) * rows + t - t0) * t_size..][..t_size];
                // scores and their max, keys 0..=t only
                let mut max = F::neg_infinity();
                for t2 in 0..=t {
                    let k = &qkv[(b * t_cap + t2) * 3 * c + c + h * hs..][..hs];
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
                for (t2, x) in row.iter_mut().enumerate() {
                    *x = if t2 <= t { *x / sum } else { F::zero() };
                }
                // out = att · V
                let o = &mut out[(b * t_cap + t) * c + h * hs..][..hs];
                for (d, o) in o.iter_mut().enumerate() {
                    *o = (0..=t).map(|t2| row[t2] * qkv[(b * t_cap + t2) * 3 * c + 2 * c + h * hs + d]).sum();
                }
            }
        }
    }
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
    let at = |b: usize, t: usize, part: usize, h: usize| (b * t_size + t) * 3 * c + part * c + h * hs;
    dqkv.iter_mut().for_each(|x| *x = F::zero());
    for b in 0..b_size {
        for h in 0..nh {
            for t in 0..t_size {
                let r = ((b * nh + h) * t_size + t) * t_size;
                let g = &dout[(b * t_size + t) * c + h * hs..][..hs];
                // datt = dout · V, then through the softmax: dpre = att ⊙ (datt − Σ att ⊙ datt)
                for t2 in 0..=t {
                    let v = &qkv[at(b, t2, 2, h)..][..hs];
                    datt[r + t2] = g.iter().zip(v).map(|(&x, &y)| x * y).sum();
                }
                let dot: F = (0..=t).map(|t2| att[r + t2] * datt[r + t2]).sum();
                for t2 in 0..t_size {
                    datt[r + t2] = if t2 <= t { att[r + t2] * (datt[r + t2] - dot) } else { F::zero() };
                }
                for t2 in 0..=t {
                    let dpre = datt[r + t2];
                    for d in 0..hs {
                        // dq += dpre · k · scale,  dk += dpre · q · scale,  dv += att · dout
                        dqkv[at(b, t, 0, h) + d] = dqkv[at(b, t, 0, h) + d] + dpre * qkv[at(b, t2, 1, h) + d] * scale;
                        dqkv[at(b, t2, 1, h) + d] = dqkv[at(b, t2, 1, h) + d] + dpre * qkv[at(b, t, 0, h) + d] * scale;
                        dqkv[at(b, t2, 2, h) + d] = dqkv[at(b, t2, 2, h) + d] + att[r + t2] * g[d];
                    }
                }
            }
        }
    }
}
