//! GELU, tanh approximation (GPT-2's).

use super::{cst, Float};

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_COEFF: f64 = 0.044715;

fn tanh_arg<F: Float>(x: F) -> F {
    cst::<F>(SQRT_2_OVER_PI) * (x + cst::<F>(GELU_COEFF) * x * x * x)
}

/// out = ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
pub fn gelu_forward<F: Float>(out: &mut [F], inp: &[F]) {
    for (o, &x) in out.iter_mut().zip(inp) {
        *o = cst::<F>(0.5) * x * (F::one() + tanh_arg(x).tanh());
    }
}

/// dinp = gelu'(inp) · dout (overwritten).
pub fn gelu_backward<F: Float>(dinp: &mut [F], inp: &[F], dout: &[F]) {
    let half = cst::<F>(0.5);
    for ((d, &x), &g) in dinp.iter_mut().zip(inp).zip(dout) {
        let th = tanh_arg(x).tanh();
        let sech2 = F::one() - th * th;
        let darg = cst::<F>(SQRT_2_OVER_PI) * (F::one() + cst::<F>(3.0 * GELU_COEFF) * x * x);
        *d = (half * (F::one() + th) + half * x * sech2 * darg) * g;
    }
}
