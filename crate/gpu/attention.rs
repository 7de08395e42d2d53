//! Dispatch for `shaders/attention.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::{Batch, Buffer, Shader};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    b: u32,
    t: u32,
    c: u32,
    nh: u32,
    t0: u32,
    t_cap: u32,
    _pad: [u32; 2],
}

fn params(b: usize, t: usize, c: usize, nh: usize, t0: usize, t_cap: usize) -> Params {
    assert!(nh > 0 && c % nh == 0, "attention: C = {c} is not a multiple of NH = {nh}");
    assert!(t0 < t && t <= t_cap, "attention: needs t0 < T <= T_cap");
    let u = |x: usize| x as u32;
    Params { b: u(b), t: u(t), c: u(c), nh: u(nh), t0: u(t0), t_cap: u(t_cap), _pad: [0; 2] }
}

/// out (B, T_cap, C), att (B, NH, T − t0, T) ← qkv (B, T_cap, 3C), for query rows
/// t0 .. T (training: t0 = 0, T_cap = T). One workgroup per (b, h, t).
pub fn attention_forward(
    batch: &mut Batch,
    out: &Buffer,
    att: &Buffer,
    qkv: &Buffer,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    t0: usize,
    t_cap: usize,
) {
    let p = params(b, t, c, nh, t0, t_cap);
    assert!(qkv.len() >= b * t_cap * 3 * c && out.len() >= b * t_cap * c && att.len() >= b * nh * (t - t0) * t);
    let groups = batch.grid(b * nh * (t - t0), 1);
    batch.dispatch(Shader::Attention, "attention_forward", &p, &[(1, qkv), (2, att), (3, out)], groups);
}

/// dqkv (B, T, 3C) ← dout (B, T, C); datt (B, NH, T, T) is scratch. dqkv is overwritten.
/// Two dispatches: per query row (dq, dpreatt), then per key column (dk, dv).
pub fn attention_backward(
    batch: &mut Batch,
    dqkv: &Buffer,
    datt: &Buffer,
    dout: &Buffer,
    qkv: &Buffer,
    att: &Buffer,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let p = params(b, t, c, nh, 0, t);
    assert!(dqkv.len() >= b * t * 3 * c && dout.len() >= b * t * c && datt.len() >= b * nh * t * t);
    let groups = batch.grid(b * nh * t, 1);
    let bindings = [(1, qkv), (2, att), (4, dout), (5, datt), (6, dqkv)];
    batch.dispatch(Shader::Attention, "attention_backward_query", &p, &bindings, groups);
    batch.dispatch(Shader::Attention, "attention_backward_key", &p, &bindings, groups);
}
