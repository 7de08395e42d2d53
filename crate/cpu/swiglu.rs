//! SwiGLU, the gated MLP activation of Llama, Qwen2 and Mistral:
//! out = silu(gate) ⊙ up, silu(g) = g · sigmoid(g).
//!
//! gate and up come from one fused gate_up projection: inp (N, 2H) holds row n as
//! [gate (H) | up (H)] — what a linear layer whose weight stacks gate_proj's rows over
//! up_proj's gives — and the gradient dinp (N, 2H) has the same layout.

use super::{for_chunks, Float};

/// sigmoid(g) and 1 − sigmoid(g), each without cancellation and without overflow: the
/// exponential only ever sees −|g|.
fn sigmoid_halves<F: Float>(g: F) -> (F, F) {
    let e = (-g.abs()).exp();
    let (big, small) = (F::one() / (F::one() + e), e / (F::one() + e));
    if g >= F::zero() {
        (big, small)
    } else {
        (small, big)
    }
}

/// out (N, H) = silu(gate) ⊙ up, with gate = inp[:, :H] and up = inp[:, H:] (inp (N, 2H)).
pub fn swiglu_forward<F: Float>(out: &mut [F], inp: &[F], n: usize, h: usize) {
    for_chunks(&mut out[..n * h], h, |row, out| {
        let (gate, up) = inp[row * 2 * h..][..2 * h].split_at(h);
        for j in 0..h {
            let (s, _) = sigmoid_halves(gate[j]);
            out[j] = gate[j] * s * up[j];
        }
    });
}

/// dinp (N, 2H) = [dgate | dup] from dout (N, H), overwritten:
///   dgate = dout ⊙ up ⊙ silu'(gate),  silu'(g) = s + g · s(1 − s), s = sigmoid(g)
///   dup   = dout ⊙ silu(gate)
pub fn swiglu_backward<F: Float>(dinp: &mut [F], inp: &[F], dout: &[F], n: usize, h: usize) {
    for_chunks(&mut dinp[..n * 2 * h], 2 * h, |row, dinp| {
        let (gate, up) = inp[row * 2 * h..][..2 * h].split_at(h);
        let g = &dout[row * h..][..h];
        let (dgate, dup) = dinp.split_at_mut(h);
        for j in 0..h {
            let (s, one_minus_s) = sigmoid_halves(gate[j]);
            dgate[j] = g[j] * up[j] * (s + gate[j] * s * one_minus_s);
            dup[j] = g[j] * gate[j] * s;
        }
    });
}
