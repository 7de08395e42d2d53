//! Dispatch for `shaders/rope.wgsl`.

use super::{Batch, Buffer, Shader, View, params};

pub const SHADER: Shader = Shader { name: "rope", wgsl: include_str!("../../shaders/rope.wgsl") };

params! {
    struct Params {
        b: u32,
        t: u32,
        stride: u32,
        heads: u32,
        hs: u32,
        pos0: u32,
        x_offset: u32,
        _pad: [u32; 1],
    }
}

fn dispatch(
    batch: &mut Batch,
    entry: &'static str,
    x: View,
    inv_freq: &Buffer,
    b: usize,
    t: usize,
    stride: usize,
    heads: usize,
    hs: usize,
    pos0: usize,
) {
    assert!(hs % 2 == 0, "rope: head size {hs} is odd");
    assert!(heads * hs <= stride, "rope: {heads} heads of {hs} do not fit a row of {stride}");
    assert!(inv_freq.len() >= hs / 2, "rope: inv_freq has {} of the {} frequencies", inv_freq.len(), hs / 2);
    let u = |x: usize| x as u32;
    let params = Params {
        b: u(b),
        t: u(t),
        stride: u(stride),
        heads: u(heads),
        hs: u(hs),
        pos0: u(pos0),
        x_offset: x.check(b * t * stride, "rope x"),
        _pad: [0],
    };
    let groups = batch.grid(b * t * heads * hs / 2, 64);
    batch.dispatch(SHADER, entry, &params, &[("inv_freq", inv_freq), ("x", x.buf)], groups);
}

/// x (B, T, stride) ← RoPE(x), in place: the first `heads` heads of HS channels of each
/// row turned by θ = (pos0 + t) · inv_freq[i] (inv_freq (HS/2), from `cpu::rope::rope_inv_freq`).
pub fn rope_forward(
    batch: &mut Batch,
    x: View,
    inv_freq: &Buffer,
    b: usize,
    t: usize,
    stride: usize,
    heads: usize,
    hs: usize,
    pos0: usize,
) {
    dispatch(batch, "rope_forward", x, inv_freq, b, t, stride, heads, hs, pos0);
}

/// dx (B, T, stride) ← the gradient through [`rope_forward`], in place (turned by −θ).
pub fn rope_backward(
    batch: &mut Batch,
    dx: View,
    inv_freq: &Buffer,
    b: usize,
    t: usize,
    stride: usize,
    heads: usize,
    hs: usize,
    pos0: usize,
) {
    dispatch(batch, "rope_backward", dx, inv_freq, b, t, stride, heads, hs, pos0);
}
