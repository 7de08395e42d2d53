//! Token + position embedding (the rotary families have no position table: wpe None).

use super::Float;

/// out (B, T, C) = wte[tokens] (+ wpe[t]), with wte (V, C), wpe (maxT, C), tokens (B, T).
pub fn embedding_forward<F: Float>(
    out: &mut [F],
    tokens: &[u32],
    wte: &[F],
    wpe: Option<&[F]>,
    b: usize,
    t: usize,
    c: usize,
) {
    for bt in 0..b * t {
        let (tok, pos) = (tokens[bt] as usize, bt % t);
        for j in 0..c {
            let position = wpe.map_or(F::zero(), |wpe| wpe[pos * c + j]);
            out[bt * c + j] = wte[tok * c + j] + position;
        }
    }
}

/// dwte (V, C) and dwpe (maxT, C) += the gradients from dout (B, T, C).
pub fn embedding_backward<F: Float>(
    dwte: &mut [F],
    mut dwpe: Option<&mut [F]>,
    dout: &[F],
    tokens: &[u32],
    b: usize,
    t: usize,
    c: usize,
) {
    for bt in 0..b * t {
        let (tok, pos) = (tokens[bt] as usize, bt % t);
        for j in 0..c {
            dwte[tok * c + j] = dwte[tok * c + j] + dout[bt * c + j];
            if let Some(dwpe) = dwpe.as_deref_mut() {
                dwpe[pos * c + j] = dwpe[pos * c + j] + dout[bt * c + j];
            }
        }
    }
}
