//! Causal self-attention on the fused QKV layout (B, T, QKV), without a stored score
//! matrix: the forward pass saves one log-sum-exp per query row, the backward pass
//! recomputes each probability from it (as `shaders/attention.wgsl` does).
//!
//! Each position holds [q: NH·HS | k: NKV·HS | v: NKV·HS], QKV = C + 2·NKV·HS channels:
//! grouped-query attention, kv head j serving query heads j·G .. j·G + G − 1 (G = NH / NKV,
//! transformers' repeat_kv). NKV = NH is GPT-2's multi-head attention, (B, T, 3C).

use super::{cst, for_chunks, for_chunks2, Float};

/// x·y over eight running sums: a float sum taken in order cannot be vectorised (its
/// rounding would change), eight independent ones can (SIMD natively and in wasm).
fn dot<F: Float>(x: &[F], y: &[F]) -> F {
    let mut acc = [F::zero(); 8];
    let (xs, ys) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: F = xs.remainder().iter().zip(ys.remainder()).map(|(&a, &b)| a * b).sum();
    for (a, b) in xs.zip(ys) {
        for i in 0..8 {
            acc[i] = acc[i] + a[i] * b[i];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// The causal softmax of one query row in place: row[..=t] becomes probabilities (the
/// stable form, max subtracted), row[t + 1..] zero. Returns log Σ exp, the row's lse.
fn causal_softmax<F: Float>(row: &mut [F], t: usize) -> F {
    let max = row[..=t].iter().fold(F::neg_infinity(), |m, &x| m.max(x));
    let mut sum = F::zero();
    for x in row[..=t].iter_mut() {
        *x = (*x - max).exp();
        sum = sum + *x;
    }
    let inv = F::one() / sum;
    row[..=t].iter_mut().for_each(|x| *x = *x * inv);
    row[t + 1..].iter_mut().for_each(|x| *x = F::zero());
    max + sum.ln()
}

/// Channels per position of the fused qkv: NH·HS query, NKV·HS key and NKV·HS value
/// channels, C + 2·NKV·HS in all (3C when NKV = NH, multi-head attention).
pub fn qkv_width(c: usize, nh: usize, nkv: usize) -> usize {
    layout(c, nh, nkv).1
}

/// (HS, the qkv row width QKV, G = NH / NKV query heads per kv head), after checking
/// that the heads divide evenly.
fn layout(c: usize, nh: usize, nkv: usize) -> (usize, usize, usize) {
    assert!(nh > 0 && c % nh == 0, "attention: C = {c} is not a multiple of NH = {nh}");
    assert!(nkv > 0 && nh % nkv == 0, "attention: NH = {nh} is not a multiple of NKV = {nkv}");
    let hs = c / nh;
    (hs, c + 2 * nkv * hs, nh / nkv)
}

/// Where query head h's key and value channels start in a qkv row: those of kv head
/// h / G, which serves query heads j·G .. j·G + G − 1 (transformers' repeat_kv).
fn kv_channels(h: usize, c: usize, hs: usize, nkv: usize, group: usize) -> (usize, usize) {
    let j = h / group;
    (c + j * hs, c + (nkv + j) * hs)
}

/// out (B, T_cap, C), lse (B, NH, T − t0) ← qkv (B, T_cap, QKV), for query rows t0 .. T.
/// QKV = C + 2·NKV·HS (see [`qkv_width`]); query head h attends with kv head h / (NH/NKV).
/// Training uses t0 = 0 and T_cap = T; a KV-cache decode step computes the one new row
/// t0 = T − 1 against a cache of capacity T_cap.
/// lse[b, h, t − t0] = log Σ_{t2 ≤ t} exp(q_t·k_t2 / sqrt(HS)): the softmax's normaliser,
/// all the backward pass needs to recompute a probability.
pub fn attention_forward<F: Float>(
    out: &mut [F],
    lse: &mut [F],
    qkv: &[F],
    b_size: usize,
    t_size: usize,
    c: usize,
    nh: usize,
    nkv: usize,
    t0: usize,
    t_cap: usize,
) {
    let (hs, w, group) = layout(c, nh, nkv);
    let scale = F::one() / cst::<F>(hs as f64).sqrt();
    let rows = t_size - t0;
    // one sequence b per task: out[b] (T_cap, C) and lse[b] (NH, T − t0)
    for_chunks2(&mut out[..b_size * t_cap * c], t_cap * c, &mut lse[..b_size * nh * rows], nh * rows, |b, out, lse| {
        let qkv = &qkv[b * t_cap * w..];
        let mut row = vec![F::zero(); t_size]; // one query row's scores, then probabilities
        for h in 0..nh {
            let (k0, v0) = kv_channels(h, c, hs, nkv, group);
            for t in t0..t_size {
                let q = &qkv[t * w + h * hs..][..hs];
                // scores, keys 0..=t only, then their softmax
                for (t2, s) in row[..=t].iter_mut().enumerate() {
                    *s = dot(q, &qkv[t2 * w + k0..][..hs]) * scale;
                }
                lse[h * rows + t - t0] = causal_softmax(&mut row, t);
                // out = softmax · V, as a sum of V's rows
                let o = &mut out[t * c + h * hs..][..hs];
                o.iter_mut().for_each(|x| *x = F::zero());
                for (t2, &a) in row[..=t].iter().enumerate() {
                    let v = &qkv[t2 * w + v0..][..hs];
                    o.iter_mut().zip(v).for_each(|(x, &y)| *x = *x + a * y);
                }
            }
        }
    });
}

/// dqkv (B, T, QKV) ← dout (B, T, C), recomputing the probabilities from qkv (B, T, QKV)
/// and the saved lse (B, NH, T); out (B, T, C) is the forward pass's output. delta
/// (B, NH, T) is scratch; it ends holding dout·out per query row. dqkv is overwritten.
/// With p = exp(s − lse) and dp = dout·v:  ds = p (dp − delta),
///   dq += scale · ds · k,  dk += scale · ds · q,  dv += p · dout,
/// where a kv head's dk and dv sum over the G query heads it serves, in head order.
pub fn attention_backward<F: Float>(
    dqkv: &mut [F],
    delta: &mut [F],
    dout: &[F],
    qkv: &[F],
    out: &[F],
    lse: &[F],
    b_size: usize,
    t_size: usize,
    c: usize,
    nh: usize,
    nkv: usize,
) {
    let (hs, w, group) = layout(c, nh, nkv);
    let scale = F::one() / cst::<F>(hs as f64).sqrt();
    // one sequence b per task: dqkv[b] (T, QKV) and delta[b] (NH, T)
    for_chunks2(&mut dqkv[..b_size * t_size * w], t_size * w, &mut delta[..b_size * nh * t_size], nh * t_size, |b, dqkv, delta| {
        let (qkv, dout, out) = (&qkv[b * t_size * w..], &dout[b * t_size * c..], &out[b * t_size * c..]);
        let lse = &lse[b * nh * t_size..];
        let mut dq = vec![F::zero(); hs];
        dqkv.iter_mut().for_each(|x| *x = F::zero());
        for h in 0..nh {
            let (k0, v0) = kv_channels(h, c, hs, nkv, group);
            for t in 0..t_size {
                let (q, g) = (&qkv[t * w + h * hs..][..hs], &dout[t * c + h * hs..][..hs]);
                let d = dot(g, &out[t * c + h * hs..][..hs]);
                delta[h * t_size + t] = d;
                let l = lse[h * t_size + t];
                dq.iter_mut().for_each(|x| *x = F::zero());
                for t2 in 0..=t {
                    let kv = &qkv[t2 * w..];
                    let (k, v) = (&kv[k0..][..hs], &kv[v0..][..hs]);
                    let p = (dot(q, k) * scale - l).exp();
                    let ds = p * (dot(g, v) - d) * scale;
                    dq.iter_mut().zip(k).for_each(|(x, &y)| *x = *x + ds * y);
                    // k0 < v0: the key channels lie before the value channels
                    let (dk, dv) = dqkv[t2 * w..].split_at_mut(v0);
                    dk[k0..][..hs].iter_mut().zip(q).for_each(|(x, &y)| *x = *x + ds * y);
                    dv[..hs].iter_mut().zip(g).for_each(|(x, &y)| *x = *x + p * y);
                }
                dqkv[t * w + h * hs..][..hs].copy_from_slice(&dq);
            }
        }
    });
}

/// dst (m, n) = beta · lhs (m, k) · rhs (k, n), or dst += that when `accumulate`, each
/// matrix given by its first element and its (row, column) strides in elements, on this
/// thread: through the `gemm` crate natively (whose alpha multiplies dst, read only with
/// read_dst), through Kiln's packed kernel in wasm (as the CPU backend's matmul_gemm).
///
/// # Safety
/// Every element the shapes and strides reach must lie inside the slice it points into,
/// and dst must not overlap lhs or rhs.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_into(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    beta: f32,
    accumulate: bool,
) {
    #[cfg(target_arch = "wasm32")]
    unsafe {
        use super::gemm4::{gemm, Operand, Wasm};
        let lhs = Operand { ptr: lhs.0, row_stride: lhs.1, col_stride: lhs.2 };
        let rhs = Operand { ptr: rhs.0, row_stride: rhs.1, col_stride: rhs.2 };
        gemm::<Wasm>((m, n, k), dst, dst_rs, lhs, rhs, beta, accumulate);
    }
    #[cfg(not(target_arch = "wasm32"))]
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs.0,
        lhs.2 as isize,
        lhs.1 as isize,
        rhs.0,
        rhs.2 as isize,
        rhs.1 as isize,
        if accumulate { 1.0 } else { 0.0 },
        beta,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// Query rows per block in the gemm paths: a block's rows attend to the keys up to its
/// last row only, so the causal half of the score matrix is mostly never computed.
const BLOCK: usize = 64;

/// The same attention as [`attention_forward`], f32 only, with each query head's products
/// through `gemm` (S = Q·Kᵀ, then out = P·V, K and V those of its kv head): what the CPU
/// backend runs, a block of query rows at a time. One task per (sequence, head), so a
/// batch of one still fills every thread; each keeps one block's scores as scratch and
/// writes its head's rows (T − t0, HS) into a (B, NH, T − t0, HS) buffer that is then
/// copied into place.
/// selftest holds it to the twin.
pub fn attention_forward_gemm(
    out: &mut [f32],
    lse: &mut [f32],
    qkv: &[f32],
    b_size: usize,
    t_size: usize,
    c: usize,
    nh: usize,
    nkv: usize,
    t0: usize,
    t_cap: usize,
) {
    let (hs, w, group) = layout(c, nh, nkv);
    let scale = 1.0 / (hs as f32).sqrt();
    let rows = t_size - t0;
    assert!(qkv.len() >= b_size * t_cap * w && out.len() >= b_size * t_cap * c && lse.len() >= b_size * nh * rows);
    let mut heads = vec![0.0f32; b_size * nh * rows * hs];
    for_chunks2(&mut heads, rows * hs, &mut lse[..b_size * nh * rows], rows, |bh, o, lse| {
        let (b, h) = (bh / nh, bh % nh);
        let qkv = &qkv[b * t_cap * w..][..t_cap * w];
        let (k0, v0) = kv_channels(h, c, hs, nkv, group);
        let mut p = vec![0.0f32; BLOCK.min(rows) * t_size]; // a block's scores, then probabilities
        for r0 in (0..rows).step_by(BLOCK) {
            // query rows t0 + r0 .. t0 + r1 see keys 0 .. t0 + r1 at most
            let (r1, keys) = ((r0 + BLOCK).min(rows), t0 + (r0 + BLOCK).min(rows));
            let n = r1 - r0;
            // SAFETY: Q rows t0 + r0 .. t0 + r1 of head h, K and V rows 0..keys of its kv
            // head lie in qkv (T_cap ≥ T rows of QKV); p holds n × keys; o's rows r0..r1
            // (HS each) overlap neither.
            unsafe {
                let q = (qkv[(t0 + r0) * w + h * hs..].as_ptr(), w, 1);
                let k_t = (qkv[k0..].as_ptr(), 1, w); // Kᵀ (HS, keys)
                gemm_into((n, keys, hs), p.as_mut_ptr(), keys, q, k_t, scale, false);
            }
            for (i, row) in p[..n * keys].chunks_exact_mut(keys).enumerate() {
                lse[r0 + i] = causal_softmax(row, t0 + r0 + i);
            }
            unsafe {
                let v = (qkv[v0..].as_ptr(), w, 1);
                gemm_into((n, hs, keys), o[r0 * hs..].as_mut_ptr(), hs, (p.as_ptr(), keys, 1), v, 1.0, false);
            }
        }
    });
    // each sequence's rows t0..T: the heads side by side
    for_chunks(&mut out[..b_size * t_cap * c], t_cap * c, |b, out| {
        for h in 0..nh {
            let head = &heads[(b * nh + h) * rows * hs..][..rows * hs];
            for (i, x) in head.chunks_exact(hs).enumerate() {
                out[(t0 + i) * c + h * hs..][..hs].copy_from_slice(x);
            }
        }
    });
}

/// The same backward as [`attention_backward`], f32 only, each query head's products
/// through `gemm`: S = Q·Kᵀ and P = exp(S − lse) again, dP = dout·Vᵀ, dS = P ⊙ (dP − delta),
/// dq = scale·dS·K, dk = scale·dSᵀ·Q, dv = Pᵀ·dout, a block of query rows at a time. One
/// task per (sequence, head), each with a block's P and dS as scratch, writing its head's
/// dq, dk and dv (T, HS) into a (B, NH, 3, T, HS) buffer; then a kv head's dk and dv are
/// the sums over its group, in head order, so a run repeats bit for bit whatever the
/// threads.
pub fn attention_backward_gemm(
    dqkv: &mut [f32],
    delta: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    out: &[f32],
    lse: &[f32],
    b_size: usize,
    t_size: usize,
    c: usize,
    nh: usize,
    nkv: usize,
) {
    let (hs, w, group) = layout(c, nh, nkv);
    let t = t_size;
    let scale = 1.0 / (hs as f32).sqrt();
    assert!(qkv.len() >= b_size * t * w && dout.len() >= b_size * t * c && out.len() >= b_size * t * c);
    assert!(dqkv.len() >= b_size * t * w && delta.len() >= b_size * nh * t && lse.len() >= b_size * nh * t);
    let th = t * hs;
    let mut parts = vec![0.0f32; b_size * nh * 3 * th];
    for_chunks2(&mut parts, 3 * th, &mut delta[..b_size * nh * t], t, |bh, part, delta| {
        let (b, h) = (bh / nh, bh % nh);
        let qkv = &qkv[b * t * w..][..t * w];
        let (dout, out, lse) = (&dout[b * t * c..][..t * c], &out[b * t * c..][..t * c], &lse[bh * t..][..t]);
        let (k0, v0) = kv_channels(h, c, hs, nkv, group);
        let (q, k, v) = (&qkv[h * hs..], &qkv[k0..], &qkv[v0..]);
        let g = &dout[h * hs..];
        let (dq, rest) = part.split_at_mut(th);
        let (dk, dv) = rest.split_at_mut(th);
        let block = BLOCK.min(t);
        let (mut p, mut ds) = (vec![0.0f32; block * t], vec![0.0f32; block * t]);
        for r0 in (0..t).step_by(BLOCK) {
            // query rows r0..r1 see keys 0..r1 at most
            let r1 = (r0 + BLOCK).min(t);
            let (n, keys) = (r1 - r0, r1);
            // SAFETY (both blocks): Q, K, V (rows of QKV) and dout (rows of C) hold T rows
            // of head h (K and V: of its kv head); p and ds hold n × keys; dq's rows
            // r0..r1 and dk's and dv's rows 0..keys (HS each) overlap none of the inputs.
            unsafe {
                let (qb, gb) = ((q[r0 * w..].as_ptr(), w, 1), (g[r0 * c..].as_ptr(), c, 1));
                gemm_into((n, keys, hs), p.as_mut_ptr(), keys, qb, (k.as_ptr(), 1, w), scale, false);
                gemm_into((n, keys, hs), ds.as_mut_ptr(), keys, gb, (v.as_ptr(), 1, w), 1.0, false);
            }
            for i in 0..n {
                let row = r0 + i;
                let d = dot(&dout[row * c + h * hs..][..hs], &out[row * c + h * hs..][..hs]);
                delta[row] = d;
                let l = lse[row];
                let (pr, dr) = (&mut p[i * keys..][..keys], &mut ds[i * keys..][..keys]);
                for j in 0..keys {
                    let pij = if j <= row { (pr[j] - l).exp() } else { 0.0 };
                    pr[j] = pij;
                    dr[j] = pij * (dr[j] - d);
                }
            }
            // dq's rows r0..r1 once; dk and dv gather every block's share, in block order
            unsafe {
                let (qb, gb) = ((q[r0 * w..].as_ptr(), w, 1), (g[r0 * c..].as_ptr(), c, 1));
                let dq = dq[r0 * hs..].as_mut_ptr();
                gemm_into((n, hs, keys), dq, hs, (ds.as_ptr(), keys, 1), (k.as_ptr(), w, 1), scale, false);
                gemm_into((keys, hs, n), dk.as_mut_ptr(), hs, (ds.as_ptr(), 1, keys), qb, scale, true);
                gemm_into((keys, hs, n), dv.as_mut_ptr(), hs, (p.as_ptr(), 1, keys), gb, 1.0, true);
            }
        }
    });
    // each sequence's rows: dq per query head; dk, dv per kv head, summed over its group
    for_chunks(&mut dqkv[..b_size * t * w], t * w, |b, dqkv| {
        let part = |h: usize, which: usize, i: usize| &parts[((b * nh + h) * 3 + which) * th + i * hs..][..hs];
        for (i, row) in dqkv.chunks_exact_mut(w).enumerate() {
            for h in 0..nh {
                row[h * hs..][..hs].copy_from_slice(part(h, 0, i));
            }
            for j in 0..nkv {
                for (which, col) in [(1, c + j * hs), (2, c + (nkv + j) * hs)] {
                    let sum = &mut row[col..][..hs];
                    sum.copy_from_slice(part(j * group, which, i));
                    for h in j * group + 1..(j + 1) * group {
                        sum.iter_mut().zip(part(h, which, i)).for_each(|(x, &y)| *x += y);
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Grouped-query attention is multi-head attention on K and V with each kv head
    /// repeated for its G query heads (transformers' repeat_kv: kv head j serves query
    /// heads j·G .. j·G + G − 1), and its dk, dv are the sums of the repeated heads'.
    #[test]
    fn gqa_is_mha_with_repeat_kv() {
        let (b, t, nh, nkv, hs) = (2, 6, 6, 2, 3);
        let (c, group) = (nh * hs, nh / nkv);
        let w = qkv_width(c, nh, nkv);
        let rng = &mut Rng::new(7);
        let qkv: Vec<f64> = (0..b * t * w).map(|_| rng.range(-1.0, 1.0)).collect();
        let dout: Vec<f64> = (0..b * t * c).map(|_| rng.range(-1.0, 1.0)).collect();
        // the same inputs as MHA's (B, T, 3C): q as it is, kv head h / G copied to head h
        let mut mha = vec![0.0; b * t * 3 * c];
        for (row, src) in mha.chunks_exact_mut(3 * c).zip(qkv.chunks_exact(w)) {
            row[..c].copy_from_slice(&src[..c]);
            for h in 0..nh {
                let j = h / group;
                row[c + h * hs..][..hs].copy_from_slice(&src[c + j * hs..][..hs]);
                row[2 * c + h * hs..][..hs].copy_from_slice(&src[c + (nkv + j) * hs..][..hs]);
            }
        }
        let run = |qkv: &[f64], nkv: usize| {
            let w = qkv_width(c, nh, nkv);
            let (mut out, mut lse) = (vec![0.0; b * t * c], vec![0.0; b * nh * t]);
            attention_forward(&mut out, &mut lse, qkv, b, t, c, nh, nkv, 0, t);
            let (mut dqkv, mut delta) = (vec![0.0; b * t * w], vec![0.0; b * nh * t]);
            attention_backward(&mut dqkv, &mut delta, &dout, qkv, &out, &lse, b, t, c, nh, nkv);
            (out, lse, dqkv)
        };
        let (out, lse, dqkv) = run(&qkv, nkv);
        let (out_mha, lse_mha, dqkv_mha) = run(&mha, nh);
        assert_eq!((&out, &lse), (&out_mha, &lse_mha), "the forward pass differs from MHA's");
        for (row, mha) in dqkv.chunks_exact(w).zip(dqkv_mha.chunks_exact(3 * c)) {
            let mut want = mha[..c].to_vec(); // dq as it is, then each kv head's group sums
            for part in [c, 2 * c] {
                for j in 0..nkv {
                    want.extend((0..hs).map(|d| (0..group).map(|g| mha[part + (j * group + g) * hs + d]).sum::<f64>()));
                }
            }
            for (i, (got, want)) in row.iter().zip(&want).enumerate() {
                assert!((got - want).abs() < 1e-12, "dqkv channel {i}: {got}, MHA's summed {want}");
            }
        }
    }
}
