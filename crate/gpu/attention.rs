//! Dispatch for `shaders/attention.wgsl`.

use super::{Batch, Buffer, Shader, params};
// SLOTS · WG in `shaders/attention.wgsl`
use crate::model::config::MAX_HEAD_SIZE;

pub const SHADER: Shader = Shader { name: "attention", wgsl: include_str!("../../shaders/attention.wgsl") };

params! {
    struct Params {
        b: u32,
        t: u32,
        c: u32,
        nh: u32,
        t0: u32,
        t_cap: u32,
        _pad: [u32; 2],
    }
}

fn params(b: usize, t: usize, c: usize, nh: usize, t0: usize, t_cap: usize) -> Params {
    assert!(nh > 0 && c % nh == 0, "attention: C = {c} is not a multiple of NH = {nh}");
    assert!(c / nh <= MAX_HEAD_SIZE, "attention: head size {} is past {MAX_HEAD_SIZE}", c / nh);
    assert!(t0 < t && t <= t_cap, "attention: needs t0 < T <= T_cap");
    let u = |x: usize| x as u32;
    Params { b: u(b), t: u(t), c: u(c), nh: u(nh), t0: u(t0), t_cap: u(t_cap), _pad: [0; 2] }
}

/// out (B, T_cap, C), lse (B, NH, T − t0) ← qkv (B, T_cap, 3C), for query rows
/// t0 .. T (training: t0 = 0, T_cap = T). One workgroup per (b, h, t); no score matrix.
pub fn attention_forward(
    batch: &mut Batch,
    out: &Buffer,
    lse: &Buffer,
    qkv: &Buffer,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    t0: usize,
    t_cap: usize,
) {
    let p = params(b, t, c, nh, t0, t_cap);
    assert!(qkv.len() >= b * t_cap * 3 * c && out.len() >= b * t_cap * c && lse.len() >= b * nh * (t - t0));
    let groups = batch.grid(b * nh * (t - t0), 1);
    batch.dispatch(SHADER, "attention_forward", &p, &[("qkv", qkv), ("lse", lse), ("out", out)], groups);
}

/// dqkv (B, T, 3C) ← dout (B, T, C), recomputing the probabilities from qkv and the
/// forward pass's lse (B, NH, T); out (B, T, C) is the forward pass's output and delta
/// (B, NH, T) scratch. dqkv is overwritten. Two dispatches: per query row (delta, dq),
/// then per key column (dk, dv).
pub fn attention_backward(
    batch: &mut Batch,
    dqkv: &Buffer,
    delta: &Buffer,
    dout: &Buffer,
    qkv: &Buffer,
    out: &Buffer,
    lse: &Buffer,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let p = params(b, t, c, nh, 0, t);
    let bt = b * t;
    assert!(dqkv.len() >= bt * 3 * c && dout.len() >= bt * c && out.len() >= bt * c);
    assert!(lse.len() >= b * nh * t && delta.len() >= b * nh * t);
    let groups = batch.grid(b * nh * t, 1);
    let query = [("qkv", qkv), ("lse", lse), ("out", out), ("dout", dout), ("delta", delta), ("dqkv", dqkv)];
    batch.dispatch(SHADER, "attention_backward_query", &p, &query, groups);
    let key = [("qkv", qkv), ("lse", lse), ("dout", dout), ("delta", delta), ("dqkv", dqkv)];
    batch.dispatch(SHADER, "attention_backward_key", &p, &key, groups);
}
