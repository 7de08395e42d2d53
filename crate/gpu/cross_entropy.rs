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

fn record(
    batch: &mut Batch,
    entry: &'static str,
    out: &Buffer,
    logits: &Buffer,
    targets: &Buffer,
    weights: &Buffer,
    n: usize,
    v: usize,
) {
    assert!(logits.len() >= n * v && targets.len() >= n && weights.len() >= n);
    let groups = batch.grid(n, 1);
    let params = Params { n: n as u32, v: v as u32, _pad: [0; 2] };
    batch.dispatch(Shader::CrossEntropy, entry, &params, &[(1, logits), (2, targets), (3, weights), (4, out)], groups);
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
    assert!(losses.len() >= n);
    record(batch, "cross_entropy_forward", losses, logits, targets, weights, n, v);
}

/// dlogits (N, V) = w · (softmax(logits) − onehot(target)), overwritten.
pub fn cross_entropy_backward(
    batch: &mut Batch,
    dlogits: &Buffer,
    logits: &Buffer,
    targets: &Buffer,
    weights: &Buffer,
    n: usize,
    v: usize,
) {
    assert!(dlogits.len() >= n * v);
    record(batch, "cross_entropy_backward", dlogits, logits, targets, weights, n, v);
}
