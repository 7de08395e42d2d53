//! Dispatch for `shaders/cross_entropy.wgsl`.

use super::{Batch, Buffer, Shader, params};

pub const SHADER: Shader = Shader { name: "cross_entropy", wgsl: include_str!("../../shaders/cross_entropy.wgsl") };

params! {
    struct Params {
        n: u32,
        v: u32,
        _pad: [u32; 2],
    }
}

/// losses (N) = w · (logsumexp(logits) − logits[target]); targets are u32 < V.
pub fn cross_entropy_forward(
    batch: &mut Batch,
    losses: &Buffer,
    logits: &Buffer,
    targets: &Buffer,
    weights: &Buffer,
    n: usize,
    v: usize,
) {
    assert!(losses.len() >= n && logits.len() >= n * v && targets.len() >= n && weights.len() >= n);
    let params = Params { n: n as u32, v: v as u32, _pad: [0; 2] };
    let buffers = [("logits", logits), ("targets", targets), ("weights", weights), ("out", losses)];
    batch.dispatch(SHADER, "cross_entropy_forward", &params, &buffers, batch.grid(n, 1));
}

/// logits (N, V) ← w · (softmax(logits) − onehot(target)): the gradient of Σ losses,
/// written in place of the logits.
pub fn cross_entropy_backward(
    batch: &mut Batch,
    logits: &Buffer,
    targets: &Buffer,
    weights: &Buffer,
    n: usize,
    v: usize,
) {
    assert!(logits.len() >= n * v && targets.len() >= n && weights.len() >= n);
    let params = Params { n: n as u32, v: v as u32, _pad: [0; 2] };
    let buffers = [("targets", targets), ("weights", weights), ("out", logits)];
    batch.dispatch(SHADER, "cross_entropy_backward", &params, &buffers, batch.grid(n, 1));
}
