//! Dispatch for `shaders/attention.wgsl`.

use super::{Batch, Buffer, Shader, params};
use crate::cpu::attention::qkv_width;
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
        nkv: u32,
        _pad: u32,
    }
}

fn params(b: usize, t: usize, c: usize, nh: usize, nkv: usize, t0: usize, t_cap: usize) -> Params {
    assert!(nh > 0 && c % nh == 0, "attention: C = {c} is not a multiple of NH = {nh}");
    assert!(nkv > 0 && nh % nkv == 0, "attention: NH = {nh} is not a multiple of NKV = {nkv}");
    assert!(c / nh <= MAX_HEAD_SIZE, "attention: head size {} is past {MAX_HEAD_SIZE}", c / nh);
    assert!(t0 < t && t <= t_cap, "attention: needs t0 < T <= T_cap");
    let u = |x: usize| x as u32;
    Params { b: u(b), t: u(t), c: u(c), nh: u(nh), t0: u(t0), t_cap: u(t_cap), nkv: u(nkv), _pad: 0 }
}

/// out (B, T_cap, C), lse (B, NH, T − t0) ← qkv (B, T_cap, QKV), QKV = C + 2·NKV·HS
/// ([q | k | v], query head h reading kv head h / (NH/NKV)), for query rows t0 .. T
/// (training: t0 = 0, T_cap = T). One workgroup per (b, h, t); no score matrix.
pub fn attention_forward(
    batch: &mut Batch,
    out: &Buffer,
    lse: &Buffer,
    qkv: &Buffer,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    nkv: usize,
    t0: usize,
    t_cap: usize,
) {
    let p = params(b, t, c, nh, nkv, t0, t_cap);
    let w = qkv_width(c, nh, nkv);
    assert!(qkv.len() >= b * t_cap * w && out.len() >= b * t_cap * c && lse.len() >= b * nh * (t - t0));
    let groups = batch.grid(b * nh * (t - t0), 1);
    batch.dispatch(SHADER, "attention_forward", &p, &[("qkv", qkv), ("lse", lse), ("out", out)], groups);
}

/// dqkv (B, T, QKV) ← dout (B, T, C), recomputing the probabilities from qkv (B, T, QKV)
/// and the forward pass's lse (B, NH, T); out (B, T, C) is the forward pass's output and
/// delta (B, NH, T) scratch. dqkv is overwritten. Two dispatches: per query row (delta,
/// dq; B·NH·T workgroups), then per key column of each kv head (dk, dv summed over the
/// head's G query heads in order, no atomics; B·NKV·T workgroups).
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
    nkv: usize,
) {
    let p = params(b, t, c, nh, nkv, 0, t);
    let bt = b * t;
    let w = qkv_width(c, nh, nkv);
    assert!(qkv.len() >= bt * w && dqkv.len() >= bt * w && dout.len() >= bt * c && out.len() >= bt * c);
    assert!(lse.len() >= b * nh * t && delta.len() >= b * nh * t);
    let query = [("qkv", qkv), ("lse", lse), ("out", out), ("dout", dout), ("delta", delta), ("dqkv", dqkv)];
    batch.dispatch(SHADER, "attention_backward_query", &p, &query, batch.grid(b * nh * t, 1));
    let key = [("qkv", qkv), ("lse", lse), ("dout", dout), ("delta", delta), ("dqkv", dqkv)];
    batch.dispatch(SHADER, "attention_backward_key", &p, &key, batch.grid(b * nkv * t, 1));
}
