//! Residual connection.

use super::Float;

/// out = inp1 + inp2.
pub fn residual_forward<F: Float>(out: &mut [F], inp1: &[F], inp2: &[F]) {
    for ((o, &a), &b) in out.iter_mut().zip(inp1).zip(inp2) {
        *o = a + b;
    }
}

/// dinp1 += dout, dinp2 += dout.
pub fn residual_backward<F: Float>(dinp1: &mut [F], dinp2: &mut [F], dout: &[F]) {
    for ((a, b), &g) in dinp1.iter_mut().zip(dinp2.iter_mut()).zip(dout) {
        *a = *a + g;
        *b = *b + g;
    }
}
