//! LayerNorm over the last dimension.

use super::{cst, Float};

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
    for i in 0..n {
        let x = &inp[i * c..][..c];
        let m = x.iter().copied().sum::<F>() / cf;
        let var = x.iter().map(|&v| (v - m) * (v - m)).sum::<F>() / cf;
        let r = F::one() / (var + cst(LAYERNORM_EPS)).sqrt();
        for j in 0..c {
            out[i * c + j] = (x[j] - m) * r * weight[j] + bias[j];
        }
        mean[i] = m;
        rstd[i] = r;
    }
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
    for i in 0..n {
        let (x, g) = (&inp[i * c..][..c], &dout[i * c..][..c]);
        let xhat = |j: usize| (x[j] - mean[i]) * rstd[i];
        let dnorm = |j: usize| g[j] * weight[j];
        let mean_dnorm = (0..c).map(dnorm).sum::<F>() / cf;
        let mean_dnorm_xhat = (0..c).map(|j| dnorm(j) * xhat(j)).sum::<F>() / cf;
        for j in 0..c {
            dinp[i * c + j] = dinp[i * c + j] + (dnorm(j) - mean_dnorm - xhat(j) * mean_dnorm_xhat) * rstd[i];
            dweight[j] = dweight[j] + g[j] * xhat(j);
            dbias[j] = dbias[j] + g[j];
        }
    }
}
