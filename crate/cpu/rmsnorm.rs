//! RMSNorm over the last dimension (Llama, Qwen2, Mistral): LayerNorm without the mean
//! subtraction and without a bias.

use super::{cst, for_chunks2, sum8, Float};

/// Rows per parallel chunk. Fixed, so that the weight gradient's partial sums (one per
/// chunk, added in chunk order) do not depend on the number of threads.
const ROWS: usize = 64;

/// out (N, C) = inp · rstd · weight, rstd = 1 / √(mean(inp²) + eps); rstd (N) saved for
/// backward. eps is the model's `rms_norm_eps` (1e-5 or 1e-6 in Llama configs).
pub fn rmsnorm_forward<F: Float>(out: &mut [F], rstd: &mut [F], inp: &[F], weight: &[F], n: usize, c: usize, eps: f64) {
    let cf = cst::<F>(c as f64);
    for_chunks2(&mut out[..n * c], ROWS * c, &mut rstd[..n], ROWS, |chunk, out, rstd| {
        for k in 0..rstd.len() {
            let x = &inp[(chunk * ROWS + k) * c..][..c];
            let mean_square = sum8(c, |j| x[j] * x[j]) / cf;
            let r = F::one() / (mean_square + cst(eps)).sqrt();
            for j in 0..c {
                out[k * c + j] = x[j] * r * weight[j];
            }
            rstd[k] = r;
        }
    });
}

/// dinp (N, C), dweight (C) += gradients from dout (N, C). Both accumulate, as
/// layernorm's do. With xhat = inp · rstd and dxhat = dout ⊙ weight:
///   dinp += rstd · (dxhat − xhat · mean(dxhat ⊙ xhat)),  dweight += Σ_rows dout ⊙ xhat.
pub fn rmsnorm_backward<F: Float>(
    dinp: &mut [F],
    dweight: &mut [F],
    dout: &[F],
    inp: &[F],
    weight: &[F],
    rstd: &[F],
    n: usize,
    c: usize,
) {
    let cf = cst::<F>(c as f64);
    // each chunk of ROWS rows: its rows of dinp, and its partial dweight
    let mut partial = vec![F::zero(); n.div_ceil(ROWS) * c];
    for_chunks2(&mut dinp[..n * c], ROWS * c, &mut partial, c, |chunk, dinp, dw| {
        for k in 0..dinp.len() / c {
            let i = chunk * ROWS + k;
            let (x, g) = (&inp[i * c..][..c], &dout[i * c..][..c]);
            let xhat = |j: usize| x[j] * rstd[i];
            let dxhat = |j: usize| g[j] * weight[j];
            let mean_dxhat_xhat = sum8(c, |j| dxhat(j) * xhat(j)) / cf;
            for j in 0..c {
                dinp[k * c + j] = dinp[k * c + j] + (dxhat(j) - xhat(j) * mean_dxhat_xhat) * rstd[i];
                dw[j] = dw[j] + g[j] * xhat(j);
            }
        }
    });
    for p in partial.chunks_exact(c) {
        dweight.iter_mut().zip(p).for_each(|(d, &x)| *d = *d + x);
    }
}
