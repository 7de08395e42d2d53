//! LayerNorm over the last dimension.

use super::{cst, for_chunks2, for_chunks3, sum8, Float};

/// Rows per parallel chunk. Fixed, so that the parameter gradients' partial sums (one per
/// chunk, added in chunk order) do not depend on the number of threads.
const ROWS: usize = 64;

/// PyTorch's default epsilon.
pub const LAYERNORM_EPS: f64 = 1e-5;

/// out (N, C) = (inp − mean) · rstd · weight + bias; mean, rstd (N) saved for backward.
pub fn layernorm_forward<F: Float>(
    out: &mut [F],
    mean: &mut [F],
    rstd: &mut [F],
    inp: &[F],
    weight: &[F],
    bias: &[F],
    n: usize,
    c: usize,
) {
    let cf = cst::<F>(c as f64);
    for_chunks3(
        (&mut out[..n * c], ROWS * c),
        (&mut mean[..n], ROWS),
        (&mut rstd[..n], ROWS),
        |chunk, out, mean, rstd| {
            for k in 0..mean.len() {
                let x = &inp[(chunk * ROWS + k) * c..][..c];
                let m = sum8(c, |j| x[j]) / cf;
                let var = sum8(c, |j| (x[j] - m) * (x[j] - m)) / cf;
                let r = F::one() / (var + cst(LAYERNORM_EPS)).sqrt();
                for j in 0..c {
                    out[k * c + j] = (x[j] - m) * r * weight[j] + bias[j];
                }
                mean[k] = m;
                rstd[k] = r;
            }
        },
    );
}

/// dinp (N, C), dweight (C), dbias (C) += gradients from dout (N, C). All three accumulate.
pub fn layernorm_backward<F: Float>(
    dinp: &mut [F],
    dweight: &mut [F],
    dbias: &mut [F],
    dout: &[F],
    inp: &[F],
    weight: &[F],
    mean: &[F],
    rstd: &[F],
    n: usize,
    c: usize,
) {
    let cf = cst::<F>(c as f64);
    // each chunk of ROWS rows: its rows of dinp, and its partial dweight and dbias
    let mut partial = vec![F::zero(); n.div_ceil(ROWS) * 2 * c];
    for_chunks2(&mut dinp[..n * c], ROWS * c, &mut partial, 2 * c, |chunk, dinp, partial| {
        let (dw, db) = partial.split_at_mut(c);
        for k in 0..dinp.len() / c {
            let i = chunk * ROWS + k;
            let (x, g) = (&inp[i * c..][..c], &dout[i * c..][..c]);
            let xhat = |j: usize| (x[j] - mean[i]) * rstd[i];
            let dnorm = |j: usize| g[j] * weight[j];
            let mean_dnorm = sum8(c, dnorm) / cf;
            let mean_dnorm_xhat = sum8(c, |j| dnorm(j) * xhat(j)) / cf;
            for j in 0..c {
                dinp[k * c + j] = dinp[k * c + j] + (dnorm(j) - mean_dnorm - xhat(j) * mean_dnorm_xhat) * rstd[i];
                dw[j] = dw[j] + g[j] * xhat(j);
                db[j] = db[j] + g[j];
            }
        }
    });
    for p in partial.chunks_exact(2 * c) {
        dweight.iter_mut().zip(&p[..c]).for_each(|(d, &x)| *d = *d + x);
        dbias.iter_mut().zip(&p[c..]).for_each(|(d, &x)| *d = *d + x);
    }
}
