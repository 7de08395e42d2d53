//! Dispatch for `shaders/embedding.wgsl`.

use super::sum_rows::sum_rows;
use super::{Batch, Buffer, GpuError, Shader, View, params};

pub const SHADER: Shader = Shader { name: "embedding", wgsl: include_str!("../../shaders/embedding.wgsl") };

params! {
    struct Params {
        b: u32,
        t: u32,
        c: u32,
        n_buckets: u32,
        wte_offset: u32,
        wpe_offset: u32,
        positions: u32, // 1: add wpe; 0: no position table (rotary families)
        format: u32,    // the tables' (`View::format`): f32 or 16 bits
    }
}

/// Positions grouped by token, for a deterministic embedding backward pass:
/// `[token, first, count]` per distinct token (ascending), padded with empty buckets
/// `[0, 0, 0]` to one per position (so the buffer's size and the kernel's parameters
/// depend on the batch's shape only, and a step's bind group is reused), then the
/// positions. Returns the data and the number of buckets (= tokens.len()).
pub fn token_buckets(tokens: &[u32]) -> (Vec<u32>, usize) {
    let mut order: Vec<u32> = (0..tokens.len() as u32).collect();
    order.sort_by_key(|&i| (tokens[i as usize], i));
    let mut header = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let token = tokens[order[start] as usize];
        let mut end = start;
        while end < order.len() && tokens[order[end] as usize] == token {
            end += 1;
        }
        header.extend([token, start as u32, (end - start) as u32]);
        start = end;
    }
    header.resize(3 * tokens.len(), 0);
    header.extend(order);
    (header, tokens.len())
}

/// The tokens of a batch with their buckets (built on the CPU), written into one of the
/// batch's scratch buffers in order with its kernels.
pub struct TokenBuckets {
    buf: Buffer,
    n_buckets: usize,
}

impl TokenBuckets {
    pub fn new(batch: &mut Batch, tokens: &[u32]) -> Result<TokenBuckets, GpuError> {
        let (data, n_buckets) = token_buckets(tokens);
        let buf = batch.temp(data.len())?;
        batch.write(&buf, 0, &data)?;
        Ok(TokenBuckets { buf, n_buckets })
    }
}

/// out (B, T, C) = wte[tokens] (+ wpe[t] when there is one); tokens (B, T) u32.
pub fn embedding_forward(
    batch: &mut Batch,
    out: &Buffer,
    tokens: &Buffer,
    wte: View,
    wpe: Option<View>,
    b: usize,
    t: usize,
    c: usize,
) {
    assert!(out.len() >= b * t * c && tokens.len() >= b * t);
    assert!(wpe.is_none_or(|wpe| wpe.half == wte.half), "both tables in one format");
    let params = Params {
        b: b as u32,
        t: t as u32,
        c: c as u32,
        n_buckets: 0,
        wte_offset: wte.check(c, "wte"),
        wpe_offset: wpe.map_or(0, |wpe| wpe.check(t * c, "wpe")),
        positions: wpe.is_some() as u32,
        format: wte.format(),
    };
    // without a position table the binding still needs a buffer: wte, never read through it
    let wpe_buf = wpe.map_or(wte.buf, |wpe| wpe.buf);
    let groups = batch.grid(b * t * c, 64);
    batch.dispatch(
        SHADER,
        "embedding_forward",
        &params,
        &[("tokens", tokens), ("wte", wte.buf), ("wpe", wpe_buf), ("out", out)],
        groups,
    );
}

/// dwte (V, C) and dwpe (T, C), when there is one, += the gradients from dout (B, T, C).
pub fn embedding_backward(
    batch: &mut Batch,
    dwte: View,
    dwpe: Option<View>,
    dout: &Buffer,
    tokens: &TokenBuckets,
    b: usize,
    t: usize,
    c: usize,
) -> Result<(), GpuError> {
    assert!(dout.len() >= b * t * c);
    let params = Params {
        b: b as u32,
        t: t as u32,
        c: c as u32,
        n_buckets: tokens.n_buckets as u32,
        wte_offset: dwte.check(c, "dwte"),
        wpe_offset: 0,
        positions: dwpe.is_some() as u32,
        format: 0,
    };
    let groups = batch.grid(tokens.n_buckets * c, 64);
    batch.dispatch(
        SHADER,
        "embedding_backward",
        &params,
        &[("dout", dout), ("dwte", dwte.buf), ("buckets", &tokens.buf)],
        groups,
    );
    // dwpe[t, :] = Σ_b dout[b, t, :]: column sums of dout seen as (B, T·C).
    match dwpe {
        Some(dwpe) => sum_rows(batch, dwpe, dout.view(), b, t * c, true),
        None => Ok(()),
    }
}
