//! Dispatch for `shaders/cross_entropy.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::{Batch, Buffer, Shader};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    v: u32,
    _pad: [u32; 2],
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
    let buffers = [(1, logits), (2, targets), (3, weights), (4, losses)];
    batch.dispatch(Shader::CrossEntropy, "cross_entropy_forward", &params, &buffers, batch.grid(n, 1));
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
    let buffers = [(2, targets), (3, weights), (4, logits)];
    batch.dispatch(Shader::CrossEntropy, "cross_entropy_backward", &params, &buffers, batch.grid(n, 1));
}
