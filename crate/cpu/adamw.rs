//! AdamW, in PyTorch's order of operations.

use super::{cst, for_chunks3, Float};

/// AdamW hyper-parameters for one update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// Values in AdamW's per-step buffer on the GPU: [grad norm, clip scale] from grad_norm,
/// then lr, weight decay and the two bias corrections (see `shaders/adamw.wgsl`).
pub const STEP_VALUES: usize = 6;

/// One AdamW update of params with grads · clip_scale; m, v are the moments;
/// `step` counts from 1 (bias correction 1 − β^step). Weight decay applies to the
/// elements whose bit is set in `decay`, bit i % 32 of word i / 32 (matrices; not biases
/// or LayerNorm parameters).
pub fn adamw<F: Float>(
    params: &mut [F],
    grads: &[F],
    m: &mut [F],
    v: &mut [F],
    decay: &[u32],
    clip_scale: F,
    cfg: AdamWConfig,
    step: u32,
) {
    let (b1, b2) = (cst::<F>(cfg.beta1), cst::<F>(cfg.beta2));
    let bias_correction1 = cst::<F>(1.0 - cfg.beta1.powi(step as i32));
    let bias_correction2_sqrt = cst::<F>((1.0 - cfg.beta2.powi(step as i32)).sqrt());
    let lr = cst::<F>(cfg.lr);
    let n = params.len();
    let (keep, eps) = ([F::one(), F::one() - lr * cst(cfg.weight_decay)], cst::<F>(cfg.eps));
    // elements are independent: chunks of CHUNK (a multiple of the mask's 32) on every core,
    // a mask word's 32 elements at a time (a loop without branches, which vectorises)
    for_chunks3((params, CHUNK), (&mut m[..n], CHUNK), (&mut v[..n], CHUNK), |chunk, params, m, v| {
        for w0 in (0..params.len()).step_by(32) {
            let word = decay[(chunk * CHUNK + w0) / 32];
            for j in w0..(w0 + 32).min(params.len()) {
                let g = grads[chunk * CHUNK + j] * clip_scale;
                params[j] = params[j] * keep[(word >> (j - w0)) as usize & 1];
                m[j] = m[j] + (F::one() - b1) * (g - m[j]);
                v[j] = b2 * v[j] + (F::one() - b2) * g * g;
                let denom = v[j].sqrt() / bias_correction2_sqrt + eps;
                params[j] = params[j] - (lr / bias_correction1) * m[j] / denom;
            }
        }
    });
}

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 14;
