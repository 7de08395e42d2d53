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
}

fn params(b: usize, t: usize, c: usize, nh: usize) -> Params {
    assert!(
        nh > 0 && c % nh == 0,
        "attention: C = {c} is not a multiple of NH = {nh}"
    );
    Params {
        b: b as u32,
        t: t as u32,
        c: c as u32,
        nh: nh as u32,
    }
}

/// out (B, T, C), att (B, NH, T, T) ← qkv (B, T, 3C). One workgroup per (b, h, t).
pub fn attention_forward(
    batch: &mut Batch,
    out: &Buffer,
    att: &Buffer,
    qkv: &Buffer,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let p = params(b, t, c, nh);
    assert!(qkv.len() >= b * t * 3 * c && out.len() >= b * t * c && att.len() >= b * nh * t * t);
    let groups = batch.grid(b * nh * t, 1);
    batch.dispatch(
        Shader::Attention,
        "attention_forward",
        &p,
        &[(1, qkv), (2, att), (3, out)],
        groups,
    );
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
    let p = params(b, t, c, nh);
    assert!(dqkv.len() >= b * t * 3 * c && dout.len() >= b * t * c && datt.len() >= b * nh * t * t);
    let groups = batch.grid(b * nh * t, 1);
    let bindings = [(1, qkv), (2, att), (4, dout), (5, datt), (6, dqkv)];
    batch.dispatch(
        Shader::Attention,
        "attention_backward_query",
        &p,
        &bindings,
        groups,
    );
    batch.dispatch(
        Shader::Attention,
        "attention_backward_key",
        &p,
        &bindings,
        groups,
    );
}
