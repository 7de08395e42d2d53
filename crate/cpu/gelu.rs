//! GELU, tanh approximation (GPT-2's).

use super::{cst, for_chunks, Float};

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_COEFF: f64 = 0.044715;
/// Elements per parallel chunk.
const CHUNK: usize = 4096;

fn tanh_arg<F: Float>(x: F) -> F {
    cst::<F>(SQRT_2_OVER_PI) * (x + cst::<F>(GELU_COEFF) * x * x * x)
}

/// With y = √(2/π)(x + 0.044715x³): s = (1 + tanh y) / 2 = 1 / (1 + e^{−2y}) and
/// 1 − s, each without cancellation (1 + tanh y itself loses digits where tanh y ≈ −1,
/// and all of them past x ≈ −5 in f32). One exp.
fn halves<F: Float>(x: F, exp: impl Fn(F) -> F) -> (F, F) {
    let y = tanh_arg(x);
    let e = exp(-(y + y));
    let s = F::one() / (F::one() + e);
    (s, if e > F::one() { F::one() - s } else { e * s })
}

/// out = ½x(1 + tanh(√(2/π)(x + 0.044715x³))) = x·s, with `exp` as the exponential.
fn forward_with<F: Float>(out: &mut [F], inp: &[F], exp: impl Fn(F) -> F + Copy + Send + Sync) {
    for_chunks(out, CHUNK, |i, out| {
        for (o, &x) in out.iter_mut().zip(&inp[i * CHUNK..]) {
            *o = x * halves(x, exp).0;
        }
    });
}

/// dinp = gelu'(inp) · dout (overwritten), with `exp` as the exponential:
/// gelu' = ½(1 + tanh y) + ½x·sech²y·y' = s + 2x·s(1 − s)·y'.
fn backward_with<F: Float>(dinp: &mut [F], inp: &[F], dout: &[F], exp: impl Fn(F) -> F + Copy + Send + Sync) {
    for_chunks(dinp, CHUNK, |i, dinp| {
        for ((d, &x), &g) in dinp.iter_mut().zip(&inp[i * CHUNK..]).zip(&dout[i * CHUNK..]) {
            let (s, one_minus_s) = halves(x, exp);
            let darg = cst::<F>(SQRT_2_OVER_PI) * (F::one() + cst::<F>(3.0 * GELU_COEFF) * x * x);
            *d = (s + cst::<F>(2.0) * x * s * one_minus_s * darg) * g;
        }
    });
}

/// out = ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
pub fn gelu_forward<F: Float>(out: &mut [F], inp: &[F]) {
    forward_with(out, inp, F::exp);
}

/// dinp = gelu'(inp) · dout (overwritten).
pub fn gelu_backward<F: Float>(dinp: &mut [F], inp: &[F], dout: &[F]) {
    backward_with(dinp, inp, dout, F::exp);
}

/// [`gelu_forward`] in f32 with [`exp_f32`]: what the CPU backend runs.
pub fn gelu_forward_fast(out: &mut [f32], inp: &[f32]) {
    forward_with(out, inp, exp_f32);
}

/// [`gelu_backward`] in f32 with [`exp_f32`]: what the CPU backend runs.
pub fn gelu_backward_fast(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    backward_with(dinp, inp, dout, exp_f32);
}

/// e^x in f32 without a branch or a library call, so that loops around it vectorise (the
/// C library's expf is one call per element): e^x = 2^n · e^r with n = round(x / ln 2)
/// and |r| ≤ ln 2 / 2, e^r by its Taylor series to r⁶ (relative error under 2e-7), 2^n
/// written into the exponent bits. x is clamped to [−87, 88], where e^x is a normal f32.
pub fn exp_f32(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75; // ln 2 in two parts: n·LN2_HI is exact
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding and subtracting it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}
