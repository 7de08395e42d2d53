//! The shapes each kernel is checked on: tiny, odd, not multiples of any tile
//! (1, 7, 33, 65, 127 …), larger than one workgroup's stride, and with offsets.

use super::{max_rel_err, Check, TOLERANCE};
use crate::cpu;
use crate::cpu::adamw::AdamWConfig;
use crate::cpu::half16::{self, HalfFormat};
use crate::cpu::matmul::MatmulShape;
use crate::gpu::{self, Gpu, GpuError, View};
use crate::rng::Rng;

type Result<T> = std::result::Result<T, GpuError>;

/// [`FAMILIES`] and [`run`], from the one list in `crate/gpu/mod.rs`: each family NAME is
/// checked by `async fn NAME` below.
macro_rules! families {
    ($($family:ident)*) => {
        /// The kernel families, in order.
        pub const FAMILIES: &[&str] = &[$(stringify!($family)),*];

        pub async fn run(gpu: &Gpu, family: &str) -> Result<Vec<Check>> {
            // A seed per family: a failing case reproduces on its own.
            let seed = FAMILIES.iter().position(|f| *f == family).expect("unknown kernel family") as u64;
            let rng = &mut Rng::new(0x6b696c6e + seed);
            match family {
                $(stringify!($family) => $family(gpu, rng).await,)*
                _ => unreachable!(),
            }
        }
    };
}
crate::kernel_families!(families);

/// `values` rounded to a 16-bit format, some scaled far down (f16's subnormals, which
/// must widen exactly too).
fn in_format(values: &[f32], format: HalfFormat) -> Vec<f32> {
    let scaled: Vec<f32> = values.iter().enumerate().map(|(i, &x)| if i % 5 == 0 { x * 1e-6 } else { x }).collect();
    half16::widen(
        &half16::pack(&scaled, format).into_iter().map(f32::from_bits).collect::<Vec<_>>(),
        0,
        values.len(),
        format,
    )
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// The worst error over several outputs of one kernel.
fn check(kernel: &'static str, case: String, outputs: &[(&[f32], &[f64])]) -> Check {
    let max_rel_err = outputs.iter().map(|(g, r)| max_rel_err(g, r)).fold(0.0, f64::max);
    Check { kernel, case, max_rel_err, tolerance: TOLERANCE }
}

// ---------------------------------------------------------------- matmul

async fn matmul(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    // the WGSL kernel and the CPU backend's gemm product, on the same cases
    for kernel in [Matmul::Tiled, Matmul::Gemm] {
        // the last size is large enough for gemm to use every core
        let sizes = [(1, 1, 1), (7, 33, 65), (65, 127, 7), (127, 65, 33), (64, 64, 64), (33, 7, 127), (130, 260, 70)];
        for (m, n, k) in sizes {
            for s in [MatmulShape::nn(m, n, k), MatmulShape::nt(m, n, k), MatmulShape::tn(m, n, k)] {
                checks.push(matmul_case(Some(gpu), rng, s, false, false, 0, kernel, None).await?);
            }
        }
        // bias, accumulation, batching and offsets into flat buffers
        checks.push(matmul_case(Some(gpu), rng, MatmulShape::nt(65, 33, 127), true, false, 0, kernel, None).await?);
        checks.push(matmul_case(Some(gpu), rng, MatmulShape::tn(33, 65, 127), false, true, 0, kernel, None).await?);
        checks.push(
            matmul_case(Some(gpu), rng, MatmulShape::nt(17, 33, 9).batched(3), true, true, 5, kernel, None).await?,
        );
        checks.push(
            matmul_case(Some(gpu), rng, MatmulShape::nn(7, 129, 70).batched(2), false, false, 3, kernel, None).await?,
        );
        checks.push(matmul_case(Some(gpu), rng, MatmulShape::tn(130, 260, 70), true, true, 2, kernel, None).await?);
    }
    // B a frozen weight kept in 16 bits, at odd offsets (a word's high half first): the
    // forward (A·Bᵀ) and input-gradient (A·B) products of a linear layer
    for format in [HalfFormat::F16, HalfFormat::Bf16] {
        for (s, offset) in
            [(MatmulShape::nt(65, 33, 127), 3), (MatmulShape::nn(7, 129, 70), 0), (MatmulShape::nt(1, 7, 5), 1)]
        {
            checks.push(
                matmul_case(Some(gpu), rng, s, offset > 0, offset == 1, offset, Matmul::Tiled, Some(format)).await?,
            );
        }
    }
    // the benchmark's baseline kernel is held to the same standard
    checks.push(matmul_case(Some(gpu), rng, MatmulShape::nt(33, 65, 127), true, true, 1, Matmul::Naive, None).await?);
    checks.push(matmul_case(Some(gpu), rng, MatmulShape::tn(7, 1, 65), false, false, 0, Matmul::Naive, None).await?);
    Ok(checks)
}

/// The three matrix products held against the twin.
#[derive(Clone, Copy, PartialEq)]
enum Matmul {
    /// the WGSL kernel the GPU backend runs
    Tiled,
    /// the naive WGSL kernel (the benchmark's baseline)
    Naive,
    /// the CPU backend's product through the gemm crate
    Gemm,
}

#[allow(clippy::too_many_arguments)]
async fn matmul_case(
    gpu: Option<&Gpu>,
    rng: &mut Rng,
    s: MatmulShape,
    with_bias: bool,
    accumulate: bool,
    offset: usize,
    kernel: Matmul,
    half: Option<HalfFormat>,
) -> Result<Check> {
    let a = rng.vec_f32(offset + s.batch * s.a_len(), -1.0, 1.0);
    let b = rng.vec_f32(offset + s.batch * s.b_len(), -1.0, 1.0);
    // B as a frozen weight kept in 16 bits: its values are the format's
    let b = match half {
        Some(format) => in_format(&b, format),
        None => b,
    };
    let bias = rng.vec_f32(offset + s.n, -1.0, 1.0);
    let out0 = rng.vec_f32(offset + s.batch * s.out_len(), -1.0, 1.0);

    let mut reference = f64s(&out0);
    let bias64 = f64s(&bias[offset..]);
    cpu::matmul::matmul(
        &mut reference[offset..],
        &f64s(&a[offset..]),
        &f64s(&b[offset..]),
        with_bias.then_some(&bias64[..]),
        s,
        accumulate,
    );

    let out = if kernel == Matmul::Gemm {
        let mut out = out0.clone();
        let bias = with_bias.then_some(&bias[offset..]);
        cpu::matmul::matmul_gemm(&mut out[offset..], &a[offset..], &b[offset..], bias, s, accumulate);
        out
    } else {
        let gpu = gpu.expect("a GPU for the WGSL kernels");
        let (ga, gbias, gout) = (gpu.upload(&a)?, gpu.upload(&bias)?, gpu.upload(&out0)?);
        let gb = match half {
            Some(format) => gpu.upload(&half16::pack(&b, format))?,
            None => gpu.upload(&b)?,
        };
        let mut batch = gpu.begin();
        let wgsl = if kernel == Matmul::Naive { gpu::matmul::matmul_naive } else { gpu::matmul::matmul };
        wgsl(
            &mut batch,
            gout.at(offset),
            ga.at(offset),
            View { buf: &gb, offset, half },
            with_bias.then(|| gbias.at(offset)),
            s,
            accumulate,
        );
        gpu.submit(batch);
        gpu.read_f32(&gout).await?
    };

    let form = match (s.a_transposed, s.b_transposed) {
        (false, false) => "A·B",
        (false, true) => "A·Bᵀ",
        (true, false) => "Aᵀ·B",
        (true, true) => "Aᵀ·Bᵀ",
    };
    let mut case = format!("{form} M={} N={} K={}", s.m, s.n, s.k);
    if s.batch > 1 {
        case += &format!(" batch={}", s.batch);
    }
    if with_bias {
        case += " +bias";
    }
    if accumulate {
        case += " +=";
    }
    if offset > 0 {
        case += &format!(" offset={offset}");
    }
    if let Some(format) = half {
        case += &format!(" B in {format:?}");
    }
    let name = match kernel {
        Matmul::Tiled => "matmul",
        Matmul::Naive => "matmul_naive",
        Matmul::Gemm => "matmul_gemm (cpu)",
    };
    Ok(check(name, case, &[(&out, &reference)]))
}

// ---------------------------------------------------------------- attention

async fn attention(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    // (B, T, C, NH, NKV): T past two 64-key tiles, HS past one and three 64-wide channel
    // slots; then grouped-query attention (NKV < NH, a kv head's dk and dv summed over its
    // group), multi-query (NKV = 1) and HS = 130 / 200, not multiples of the tile
    for (b, t, c, nh, nkv) in [
        (1, 1, 4, 1, 1),
        (2, 7, 12, 3, 3),
        (1, 33, 16, 2, 2),
        (2, 65, 8, 2, 2),
        (1, 150, 8, 1, 1),
        (1, 9, 130, 1, 1),
        (1, 5, 200, 1, 1),
        (2, 7, 16, 4, 2),
        (1, 70, 24, 4, 2),
        (2, 9, 18, 6, 1),
        (1, 66, 12, 6, 1),
        (1, 9, 260, 2, 1),
        (1, 5, 600, 3, 1),
    ] {
        let w = cpu::attention::qkv_width(c, nh, nkv);
        let (qkv, dout) = (rng.vec_f32(b * t * w, -1.0, 1.0), rng.vec_f32(b * t * c, -1.0, 1.0));
        let [out_ref, lse_ref, dqkv_ref, delta_ref] = attention_reference(&qkv, &dout, (b, t, c, nh, nkv));

        let (gqkv, gdout) = (gpu.upload(&qkv)?, gpu.upload(&dout)?);
        let (gout, glse) = (gpu.zeros(b * t * c)?, gpu.zeros(b * nh * t)?);
        let (gdqkv, gdelta) = (gpu.zeros(b * t * w)?, gpu.zeros(b * nh * t)?);
        let mut batch = gpu.begin();
        gpu::attention::attention_forward(&mut batch, &gout, &glse, &gqkv, b, t, c, nh, nkv, 0, t);
        gpu::attention::attention_backward(&mut batch, &gdqkv, &gdelta, &gdout, &gqkv, &gout, &glse, b, t, c, nh, nkv);
        gpu.submit(batch);
        let (out, lse) = (gpu.read_f32(&gout).await?, gpu.read_f32(&glse).await?);
        let (dqkv, delta) = (gpu.read_f32(&gdqkv).await?, gpu.read_f32(&gdelta).await?);
        let mut case = format!("B={b} T={t} C={c} NH={nh}");
        if nkv != nh {
            case += &format!(" NKV={nkv}");
        }
        checks.push(check("attention_forward", case.clone(), &[(&out, &out_ref), (&lse, &lse_ref)]));
        checks.push(check("attention_backward", case.clone(), &[(&dqkv, &dqkv_ref), (&delta, &delta_ref)]));
        // the CPU backend's gemm path, in f32, against the same reference
        checks.extend(attention_gemm_checks(
            &qkv,
            &dout,
            (b, t, c, nh, nkv),
            [&out_ref, &lse_ref, &dqkv_ref, &delta_ref],
            case,
        ));
    }
    // KV-cache decode: only the last query rows t0..T, inside caches of capacity T_cap;
    // the last two with grouped-query and multi-query caches
    for (b, t, c, nh, nkv, t0, t_cap) in [
        (1, 1, 8, 2, 2, 0, 4),
        (2, 9, 8, 2, 2, 8, 12),
        (1, 70, 16, 4, 4, 65, 80),
        (2, 9, 16, 4, 2, 8, 12),
        (1, 70, 18, 6, 1, 65, 80),
    ] {
        let w = cpu::attention::qkv_width(c, nh, nkv);
        let qkv = rng.vec_f32(b * t_cap * w, -1.0, 1.0);
        let out0 = rng.vec_f32(b * t_cap * c, -1.0, 1.0); // rows outside t0..T stay as they were
        let rows = t - t0;
        let (mut out_ref, mut lse_ref) = (f64s(&out0), vec![0.0; b * nh * rows]);
        cpu::attention::attention_forward(&mut out_ref, &mut lse_ref, &f64s(&qkv), b, t, c, nh, nkv, t0, t_cap);
        let (gqkv, gout, glse) = (gpu.upload(&qkv)?, gpu.upload(&out0)?, gpu.zeros(b * nh * rows)?);
        let mut batch = gpu.begin();
        gpu::attention::attention_forward(&mut batch, &gout, &glse, &gqkv, b, t, c, nh, nkv, t0, t_cap);
        gpu.submit(batch);
        let (out, lse) = (gpu.read_f32(&gout).await?, gpu.read_f32(&glse).await?);
        let mut case = format!("decode B={b} T={t} C={c} NH={nh}");
        if nkv != nh {
            case += &format!(" NKV={nkv}");
        }
        case += &format!(" t0={t0} cap={t_cap}");
        checks.push(check("attention_forward", case.clone(), &[(&out, &out_ref), (&lse, &lse_ref)]));
        let (mut out, mut lse) = (out0.clone(), vec![0.0; b * nh * rows]);
        cpu::attention::attention_forward_gemm(&mut out, &mut lse, &qkv, b, t, c, nh, nkv, t0, t_cap);
        checks.push(check("attention_forward_gemm (cpu)", case, &[(&out, &out_ref), (&lse, &lse_ref)]));
    }
    Ok(checks)
}

type AttentionShape = (usize, usize, usize, usize, usize);

/// attention_forward and attention_backward in f64 on f32 inputs (B, T, C, NH, NKV):
/// [out, lse, dqkv, delta].
fn attention_reference(qkv: &[f32], dout: &[f32], (b, t, c, nh, nkv): AttentionShape) -> [Vec<f64>; 4] {
    let w = cpu::attention::qkv_width(c, nh, nkv);
    let (mut out, mut lse) = (vec![0.0; b * t * c], vec![0.0; b * nh * t]);
    let (mut dqkv, mut delta) = (vec![0.0; b * t * w], vec![0.0; b * nh * t]);
    let qkv64 = f64s(qkv);
    cpu::attention::attention_forward(&mut out, &mut lse, &qkv64, b, t, c, nh, nkv, 0, t);
    cpu::attention::attention_backward(&mut dqkv, &mut delta, &f64s(dout), &qkv64, &out, &lse, b, t, c, nh, nkv);
    [out, lse, dqkv, delta]
}

/// The CPU backend's attention (its gemm path, f32) forward and backward against the
/// reference.
fn attention_gemm_checks(
    qkv: &[f32],
    dout: &[f32],
    (b, t, c, nh, nkv): AttentionShape,
    [out_ref, lse_ref, dqkv_ref, delta_ref]: [&[f64]; 4],
    case: String,
) -> [Check; 2] {
    let w = cpu::attention::qkv_width(c, nh, nkv);
    let (mut out, mut lse) = (vec![0.0; b * t * c], vec![0.0; b * nh * t]);
    cpu::attention::attention_forward_gemm(&mut out, &mut lse, qkv, b, t, c, nh, nkv, 0, t);
    let (mut dqkv, mut delta) = (vec![0.0; b * t * w], vec![0.0; b * nh * t]);
    cpu::attention::attention_backward_gemm(&mut dqkv, &mut delta, dout, qkv, &out, &lse, b, t, c, nh, nkv);
    [
        check("attention_forward_gemm (cpu)", case.clone(), &[(&out, out_ref), (&lse, lse_ref)]),
        check("attention_backward_gemm (cpu)", case, &[(&dqkv, dqkv_ref), (&delta, delta_ref)]),
    ]
}

// ---------------------------------------------------------------- the CPU's fast paths

/// The CPU backend's fast products alone, no GPU: matmul_gemm and attention's gemm paths
/// against the f64 twins, on the matmul family's cases and on shapes past every block of
/// the wasm kernel (crate/cpu/gemm4.rs: k past 256, rows past 64, columns past 512). The
/// browser runs them in each of its two WebAssembly builds (relaxed SIMD and SIMD128).
pub fn cpu(rng: &mut Rng) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut gemm = |s: MatmulShape, bias: bool, accumulate: bool, offset: usize| {
        let case = matmul_case(None, rng, s, bias, accumulate, offset, Matmul::Gemm, None);
        checks.push(ready_now(case).expect("the CPU product needs no GPU"));
    };
    let sizes = [(1, 1, 1), (7, 33, 65), (65, 127, 7), (127, 65, 33), (64, 64, 64), (130, 260, 70), (67, 530, 300)];
    for (m, n, k) in sizes {
        for s in [MatmulShape::nn(m, n, k), MatmulShape::nt(m, n, k), MatmulShape::tn(m, n, k)] {
            gemm(s, false, false, 0);
        }
    }
    gemm(MatmulShape::nt(65, 33, 127), true, false, 0);
    gemm(MatmulShape::tn(300, 70, 520), false, true, 0);
    gemm(MatmulShape::nt(17, 33, 9).batched(3), true, true, 5);
    gemm(MatmulShape::nn(7, 529, 270).batched(2), false, false, 3);
    for (b, t, c, nh, nkv) in
        [(2, 7, 12, 3, 3), (1, 150, 8, 1, 1), (1, 70, 24, 4, 2), (1, 5, 600, 3, 1), (2, 130, 64, 2, 2)]
    {
        let w = cpu::attention::qkv_width(c, nh, nkv);
        let (qkv, dout) = (rng.vec_f32(b * t * w, -1.0, 1.0), rng.vec_f32(b * t * c, -1.0, 1.0));
        let [out, lse, dqkv, delta] = attention_reference(&qkv, &dout, (b, t, c, nh, nkv));
        let case = format!("B={b} T={t} C={c} NH={nh} NKV={nkv}");
        checks.extend(attention_gemm_checks(&qkv, &dout, (b, t, c, nh, nkv), [&out, &lse, &dqkv, &delta], case));
    }
    checks
}

/// The value of a future that never waits (matmul_case without a GPU awaits nothing).
fn ready_now<T>(future: impl std::future::Future<Output = T>) -> T {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => value,
        Poll::Pending => unreachable!("a CPU case awaited something"),
    }
}

// ---------------------------------------------------------------- cross-entropy

async fn cross_entropy(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    // (N, V, logit scale): V past the 256-wide stride; large logits test the max shift
    for (n, v, scale) in [(1, 1, 1.0), (1, 7, 1.0), (33, 65, 3.0), (7, 1000, 5.0), (5, 3001, 60.0), (127, 127, 1.0)] {
        let logits = rng.vec_f32(n * v, -scale, scale);
        let targets: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
        // about a quarter of the positions masked out with weight 0
        let weights: Vec<f32> =
            (0..n).map(|i| if i > 0 && rng.uniform() < 0.25 { 0.0 } else { rng.range(0.1, 1.0) as f32 }).collect();
        let (logits64, weights64) = (f64s(&logits), f64s(&weights));
        let (mut losses_ref, mut dlogits_ref) = (vec![0.0; n], logits64.clone());
        cpu::cross_entropy::cross_entropy_forward(&mut losses_ref, &logits64, &targets, &weights64, n, v);
        cpu::cross_entropy::cross_entropy_backward(&mut dlogits_ref, &targets, &weights64, n, v);

        // the forward reads the logits, then the backward overwrites them with the gradient
        let (gl, gt, gw) = (gpu.upload(&logits)?, gpu.upload(&targets)?, gpu.upload(&weights)?);
        let glosses = gpu.zeros(n)?;
        let mut batch = gpu.begin();
        gpu::cross_entropy::cross_entropy_forward(&mut batch, &glosses, &gl, &gt, &gw, n, v);
        gpu::cross_entropy::cross_entropy_backward(&mut batch, &gl, &gt, &gw, n, v);
        gpu.submit(batch);
        let (losses, dlogits) = (gpu.read_f32(&glosses).await?, gpu.read_f32(&gl).await?);
        let case = format!("N={n} V={v} logits ±{scale}");
        checks.push(check("cross_entropy_forward", case.clone(), &[(&losses, &losses_ref)]));
        checks.push(check("cross_entropy_backward", case, &[(&dlogits, &dlogits_ref)]));
    }
    Ok(checks)
}

// ---------------------------------------------------------------- layernorm

async fn layernorm(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    // (N, C, mean shift): C past the 128-wide stride, N past the 64-row gradient chunks,
    // and a shifted mean (|mean| ≫ std) that a one-pass variance would get wrong
    for (n, c, shift) in [(1, 1, 0.0), (7, 33, 0.0), (65, 127, 0.0), (300, 65, 0.0), (3, 1000, 0.0), (33, 64, 8.0)] {
        let offset = 3; // weight and bias live inside a flat parameter buffer
        let inp: Vec<f32> = rng.vec_f32(n * c, -1.0, 1.0).iter().map(|x| x + shift as f32).collect();
        let params = rng.vec_f32(offset + 2 * c, -1.0, 1.0);
        let grads0 = rng.vec_f32(offset + 2 * c, -1.0, 1.0);
        let dout = rng.vec_f32(n * c, -1.0, 1.0);
        let dinp0 = rng.vec_f32(n * c, -1.0, 1.0);

        let (inp64, params64) = (f64s(&inp), f64s(&params));
        let (weight, bias) = (&params64[offset..offset + c], &params64[offset + c..]);
        let (mut out_ref, mut mean_ref, mut rstd_ref) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        cpu::layernorm::layernorm_forward(&mut out_ref, &mut mean_ref, &mut rstd_ref, &inp64, weight, bias, n, c);
        let mut dinp_ref = f64s(&dinp0);
        let mut grads_ref = f64s(&grads0);
        let (dweight, dbias) = grads_ref[offset..].split_at_mut(c);
        cpu::layernorm::layernorm_backward(
            &mut dinp_ref,
            dweight,
            dbias,
            &f64s(&dout),
            &inp64,
            weight,
            &mean_ref,
            &rstd_ref,
            n,
            c,
        );

        let (ginp, gparams, ggrads) = (gpu.upload(&inp)?, gpu.upload(&params)?, gpu.upload(&grads0)?);
        let (gdout, gdinp) = (gpu.upload(&dout)?, gpu.upload(&dinp0)?);
        let (gout, gmean, grstd) = (gpu.zeros(n * c)?, gpu.zeros(n)?, gpu.zeros(n)?);
        let mut batch = gpu.begin();
        let (w, b) = (gparams.at(offset), gparams.at(offset + c));
        gpu::layernorm::layernorm_forward(&mut batch, &gout, &gmean, &grstd, &ginp, w, b, n, c);
        gpu::layernorm::layernorm_backward(
            &mut batch,
            &gdinp,
            ggrads.at(offset),
            ggrads.at(offset + c),
            &gdout,
            &ginp,
            w,
            &gmean,
            &grstd,
            n,
            c,
        )?;
        gpu.submit(batch);
        let out = gpu.read_f32(&gout).await?;
        let (mean, rstd) = (gpu.read_f32(&gmean).await?, gpu.read_f32(&grstd).await?);
        let (dinp, grads) = (gpu.read_f32(&gdinp).await?, gpu.read_f32(&ggrads).await?);
        let case = format!("N={n} C={c}{}", if shift != 0.0 { format!(" mean+{shift}") } else { String::new() });
        checks.push(check(
            "layernorm_forward",
            case.clone(),
            &[(&out, &out_ref), (&mean, &mean_ref), (&rstd, &rstd_ref)],
        ));
        checks.push(check("layernorm_backward", case, &[(&dinp, &dinp_ref), (&grads, &grads_ref)]));
    }
    Ok(checks)
}

// ---------------------------------------------------------------- gelu, residual

async fn gelu(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    for n in [1, 7, 65, 1000, 70_001] {
        let mut inp = rng.vec_f32(n, -6.0, 6.0);
        if n >= 7 {
            // where tanh saturates (and naive tanh implementations overflow)
            inp[..6].copy_from_slice(&[-100.0, -20.0, -9.5, 9.5, 20.0, 100.0]);
        }
        let dout = rng.vec_f32(n, -1.0, 1.0);
        let (mut out_ref, mut dinp_ref) = (vec![0.0; n], vec![0.0; n]);
        cpu::gelu::gelu_forward(&mut out_ref, &f64s(&inp));
        cpu::gelu::gelu_backward(&mut dinp_ref, &f64s(&inp), &f64s(&dout));

        let (ginp, gdout) = (gpu.upload(&inp)?, gpu.upload(&dout)?);
        let (gout, gdinp) = (gpu.zeros(n)?, gpu.zeros(n)?);
        let mut batch = gpu.begin();
        gpu::gelu::gelu_forward(&mut batch, &gout, &ginp, n);
        gpu::gelu::gelu_backward(&mut batch, &gdinp, &ginp, &gdout, n);
        gpu.submit(batch);
        let (out, dinp) = (gpu.read_f32(&gout).await?, gpu.read_f32(&gdinp).await?);
        checks.push(check("gelu_forward", format!("n={n}"), &[(&out, &out_ref)]));
        checks.push(check("gelu_backward", format!("n={n}"), &[(&dinp, &dinp_ref)]));
        // the CPU backend's f32 path (its own exp), against the same reference
        let (mut out, mut dinp) = (vec![0.0; n], vec![0.0; n]);
        cpu::gelu::gelu_forward_fast(&mut out, &inp);
        cpu::gelu::gelu_backward_fast(&mut dinp, &inp, &dout);
        checks.push(check("gelu_forward_fast (cpu)", format!("n={n}"), &[(&out, &out_ref)]));
        checks.push(check("gelu_backward_fast (cpu)", format!("n={n}"), &[(&dinp, &dinp_ref)]));
    }
    // exp_f32 over its whole range, against f64's exp
    let xs: Vec<f32> = (0..=20_000).map(|i| -87.0 + 175.0 * i as f32 / 20_000.0).collect();
    let exps: Vec<f32> = xs.iter().map(|&x| cpu::gelu::exp_f32(x)).collect();
    let reference: Vec<f64> = xs.iter().map(|&x| (x as f64).exp()).collect();
    checks.push(check("exp_f32 (cpu)", "x in [-87, 88]".into(), &[(&exps, &reference)]));
    Ok(checks)
}

async fn residual(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    for n in [1, 7, 65, 4099] {
        let (a, b, dout) = (rng.vec_f32(n, -1.0, 1.0), rng.vec_f32(n, -1.0, 1.0), rng.vec_f32(n, -1.0, 1.0));
        let (da0, db0) = (rng.vec_f32(n, -1.0, 1.0), rng.vec_f32(n, -1.0, 1.0));
        let mut out_ref = vec![0.0; n];
        let (mut da_ref, mut db_ref) = (f64s(&da0), f64s(&db0));
        cpu::residual::residual_forward(&mut out_ref, &f64s(&a), &f64s(&b));
        cpu::residual::residual_backward(&mut da_ref, &mut db_ref, &f64s(&dout));

        let (ga, gb, gdout, gout) = (gpu.upload(&a)?, gpu.upload(&b)?, gpu.upload(&dout)?, gpu.zeros(n)?);
        let (gda, gdb) = (gpu.upload(&da0)?, gpu.upload(&db0)?);
        let mut batch = gpu.begin();
        gpu::residual::residual_forward(&mut batch, &gout, &ga, &gb, n);
        gpu::residual::residual_backward(&mut batch, &gda, &gdb, &gdout, n);
        gpu.submit(batch);
        let out = gpu.read_f32(&gout).await?;
        let (da, db) = (gpu.read_f32(&gda).await?, gpu.read_f32(&gdb).await?);
        checks.push(check("residual_forward", format!("n={n}"), &[(&out, &out_ref)]));
        checks.push(check("residual_backward", format!("n={n}"), &[(&da, &da_ref), (&db, &db_ref)]));
    }
    Ok(checks)
}

// ---------------------------------------------------------------- embedding

async fn embedding(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    // (B, T, C, V, a position table?): few distinct tokens (many repeats) and many; the
    // rotary families have no position table
    let cases =
        [(1, 1, 1, 1, true), (2, 7, 33, 5, true), (3, 33, 16, 65, true), (2, 65, 8, 1000, true), (2, 9, 12, 30, false)];
    for (b, t, c, v, positions) in cases {
        let (wte_at, wpe_at) = (2, 2 + v * c); // both inside one flat parameter buffer
        let params = rng.vec_f32(wpe_at + t * c, -1.0, 1.0);
        let grads0 = rng.vec_f32(wpe_at + t * c, -1.0, 1.0);
        let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(v as u64) as u32).collect();
        let dout = rng.vec_f32(b * t * c, -1.0, 1.0);
        let params64 = f64s(&params);
        let mut out_ref = vec![0.0; b * t * c];
        let wpe64 = positions.then(|| &params64[wpe_at..]);
        cpu::embedding::embedding_forward(&mut out_ref, &tokens, &params64[wte_at..], wpe64, b, t, c);
        let mut grads_ref = f64s(&grads0);
        let (dwte, dwpe) = grads_ref[wte_at..].split_at_mut(v * c);
        cpu::embedding::embedding_backward(dwte, positions.then_some(dwpe), &f64s(&dout), &tokens, b, t, c);

        let (gparams, ggrads, gtokens) = (gpu.upload(&params)?, gpu.upload(&grads0)?, gpu.upload(&tokens)?);
        let (gdout, gout) = (gpu.upload(&dout)?, gpu.zeros(b * t * c)?);
        let mut batch = gpu.begin();
        let buckets = gpu::embedding::TokenBuckets::new(&mut batch, &tokens)?;
        let wpe = positions.then(|| gparams.at(wpe_at));
        gpu::embedding::embedding_forward(&mut batch, &gout, &gtokens, gparams.at(wte_at), wpe, b, t, c);
        gpu::embedding::embedding_backward(
            &mut batch,
            ggrads.at(wte_at),
            positions.then(|| ggrads.at(wpe_at)),
            &gdout,
            &buckets,
            b,
            t,
            c,
        )?;
        gpu.submit(batch);
        let (out, grads) = (gpu.read_f32(&gout).await?, gpu.read_f32(&ggrads).await?);
        let case = format!("B={b} T={t} C={c} V={v}{}", if positions { "" } else { ", no positions" });
        checks.push(check("embedding_forward", case.clone(), &[(&out, &out_ref)]));
        checks.push(check("embedding_backward", case, &[(&grads, &grads_ref)]));
    }
    // the tables of a frozen model kept in 16 bits, from an odd offset
    for (format, positions) in [(HalfFormat::F16, true), (HalfFormat::Bf16, true), (HalfFormat::Bf16, false)] {
        let (b, t, c, v) = (2, 9, 13, 30);
        let (wte_at, wpe_at) = (1, 1 + v * c);
        let params = in_format(&rng.vec_f32(wpe_at + t * c, -1.0, 1.0), format);
        let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(v as u64) as u32).collect();
        let params64 = f64s(&params);
        let mut out_ref = vec![0.0; b * t * c];
        let wpe64 = positions.then(|| &params64[wpe_at..]);
        cpu::embedding::embedding_forward(&mut out_ref, &tokens, &params64[wte_at..], wpe64, b, t, c);
        let (gparams, gtokens) = (gpu.upload(&half16::pack(&params, format))?, gpu.upload(&tokens)?);
        let gout = gpu.zeros(b * t * c)?;
        let mut batch = gpu.begin();
        let half = Some(format);
        let wpe = positions.then_some(View { buf: &gparams, offset: wpe_at, half });
        let wte = View { buf: &gparams, offset: wte_at, half };
        gpu::embedding::embedding_forward(&mut batch, &gout, &gtokens, wte, wpe, b, t, c);
        gpu.submit(batch);
        let out = gpu.read_f32(&gout).await?;
        let case =
            format!("B={b} T={t} C={c} V={v}{}, tables in {format:?}", if positions { "" } else { ", no positions" });
        checks.push(check("embedding_forward", case, &[(&out, &out_ref)]));
    }
    Ok(checks)
}

// ---------------------------------------------------------------- sum_rows

async fn sum_rows(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    // R past one chunk (64) and past two levels (5000 = 79 chunks of 64, then 2)
    for (r, w, accumulate) in [(1, 1, false), (7, 33, true), (65, 127, false), (300, 7, true), (5000, 3, false)] {
        let src = rng.vec_f32(1 + r * w, -1.0, 1.0);
        let out0 = rng.vec_f32(2 + w, -1.0, 1.0);
        let mut reference = f64s(&out0);
        cpu::sum_rows::sum_rows(&mut reference[2..], &f64s(&src[1..]), r, w, accumulate);
        let (gsrc, gout) = (gpu.upload(&src)?, gpu.upload(&out0)?);
        let mut batch = gpu.begin();
        gpu::sum_rows::sum_rows(&mut batch, gout.at(2), gsrc.at(1), r, w, accumulate)?;
        gpu.submit(batch);
        let out = gpu.read_f32(&gout).await?;
        let case = format!("R={r} W={w}{}", if accumulate { " +=" } else { "" });
        checks.push(check("sum_rows", case, &[(&out, &reference)]));
    }
    Ok(checks)
}

// ---------------------------------------------------------------- adamw, grad_norm

async fn adamw(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    for (n, step, weight_decay, clip_scale) in
        [(1, 1, 0.0, 1.0), (7, 10, 0.1, 0.5), (1000, 3, 0.01, 1.0), (4099, 100, 0.1, 0.25)]
    {
        let cfg = AdamWConfig { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay };
        let params = rng.vec_f32(n, -1.0, 1.0);
        let grads = rng.vec_f32(n, -1.0, 1.0);
        let m0 = rng.vec_f32(n, -0.1, 0.1);
        let v0 = rng.vec_f32(n, 0.0, 0.01);
        // runs of decaying and non-decaying elements, as a model's matrices and biases
        let decay: Vec<u32> = (0..n.div_ceil(32)).map(|w| if w % 3 == 1 { 0 } else { 0xffff_00ff }).collect();
        let mut step_values = vec![0.0f32; cpu::adamw::STEP_VALUES];
        step_values[..2].copy_from_slice(&[1.0, clip_scale as f32]);
        let (mut p_ref, mut m_ref, mut v_ref) = (f64s(&params), f64s(&m0), f64s(&v0));
        cpu::adamw::adamw(&mut p_ref, &f64s(&grads), &mut m_ref, &mut v_ref, &decay, clip_scale, cfg, step);

        let (gp, gg, gm, gv) = (gpu.upload(&params)?, gpu.upload(&grads)?, gpu.upload(&m0)?, gpu.upload(&v0)?);
        let (gstep, gdecay) = (gpu.upload(&step_values)?, gpu.upload(&decay)?);
        let mut batch = gpu.begin();
        gpu::adamw::adamw(&mut batch, &gp, &gg, &gm, &gv, &gstep, &gdecay, n, cfg, step)?;
        gpu.submit(batch);
        let (p, m) = (gpu.read_f32(&gp).await?, gpu.read_f32(&gm).await?);
        let v = gpu.read_f32(&gv).await?;
        let case = format!("n={n} step={step} wd={weight_decay} (some elements) clip×{clip_scale}");
        checks.push(check("adamw", case, &[(&p, &p_ref), (&m, &m_ref), (&v, &v_ref)]));
    }
    Ok(checks)
}

async fn grad_norm(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    // n past one workgroup's 4096 elements; clipping off, engaged, and not needed
    for (n, max_norm) in [(1, 0.0), (7, 1.0), (4097, 1.0), (100_000, 1e9), (100_000, 5.0)] {
        let grads = rng.vec_f32(n + 1, -1.0, 1.0);
        let (norm_ref, scale_ref) = cpu::grad_norm::grad_norm(&f64s(&grads[1..]), max_norm);
        let (gg, gresult) = (gpu.upload(&grads)?, gpu.zeros(2)?);
        let mut batch = gpu.begin();
        gpu::grad_norm::grad_norm(&mut batch, &gresult, gg.at(1), n, max_norm as f32)?;
        gpu.submit(batch);
        let result = gpu.read_f32(&gresult).await?;
        let case = format!("n={n} max_norm={max_norm}");
        checks.push(check("grad_norm", case, &[(&result[..1], &[norm_ref]), (&result[1..], &[scale_ref])]));
    }
    Ok(checks)
}

// ---------------------------------------------------------------- rmsnorm, rope, swiglu (Llama)

async fn rmsnorm(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    // (N, C, input scale, eps): C past the 128-wide stride, N past the 64-row gradient
    // chunks, and inputs so small that eps weighs in the mean square
    for (n, c, scale, eps) in [
        (1, 1, 1.0, 1e-5),
        (7, 33, 1.0, 1e-6),
        (65, 127, 1.0, 1e-5),
        (300, 65, 1.0, 1e-6),
        (3, 1000, 1.0, 1e-5),
        (33, 64, 1e-3, 1e-5),
    ] {
        let offset = 3; // the weight lives inside a flat parameter buffer
        let inp = rng.vec_f32(n * c, -scale, scale);
        let params = rng.vec_f32(offset + c, -1.0, 1.0);
        let grads0 = rng.vec_f32(offset + c, -1.0, 1.0);
        let dout = rng.vec_f32(n * c, -1.0, 1.0);
        let dinp0 = rng.vec_f32(n * c, -1.0, 1.0);

        let (inp64, params64) = (f64s(&inp), f64s(&params));
        let weight = &params64[offset..];
        let (mut out_ref, mut rstd_ref) = (vec![0.0; n * c], vec![0.0; n]);
        cpu::rmsnorm::rmsnorm_forward(&mut out_ref, &mut rstd_ref, &inp64, weight, n, c, eps);
        let (mut dinp_ref, mut grads_ref) = (f64s(&dinp0), f64s(&grads0));
        let dout64 = f64s(&dout);
        let dweight = &mut grads_ref[offset..];
        cpu::rmsnorm::rmsnorm_backward(&mut dinp_ref, dweight, &dout64, &inp64, weight, &rstd_ref, n, c);

        let (ginp, gparams, ggrads) = (gpu.upload(&inp)?, gpu.upload(&params)?, gpu.upload(&grads0)?);
        let (gdout, gdinp) = (gpu.upload(&dout)?, gpu.upload(&dinp0)?);
        let (gout, grstd) = (gpu.zeros(n * c)?, gpu.zeros(n)?);
        let mut batch = gpu.begin();
        let w = gparams.at(offset);
        gpu::rmsnorm::rmsnorm_forward(&mut batch, &gout, &grstd, &ginp, w, n, c, eps);
        gpu::rmsnorm::rmsnorm_backward(&mut batch, &gdinp, ggrads.at(offset), &gdout, &ginp, w, &grstd, n, c)?;
        gpu.submit(batch);
        let (out, rstd) = (gpu.read_f32(&gout).await?, gpu.read_f32(&grstd).await?);
        let (dinp, grads) = (gpu.read_f32(&gdinp).await?, gpu.read_f32(&ggrads).await?);
        let case =
            format!("N={n} C={c} eps={eps:e}{}", if scale != 1.0 { format!(" x±{scale:e}") } else { String::new() });
        checks.push(check("rmsnorm_forward", case.clone(), &[(&out, &out_ref), (&rstd, &rstd_ref)]));
        checks.push(check("rmsnorm_backward", case, &[(&dinp, &dinp_ref), (&grads, &grads_ref)]));
    }
    Ok(checks)
}

/// One RoPE shape: x (B, T, stride) from element `offset` of a buffer of `len`, its first
/// `heads` heads of HS turned at positions pos0 + t.
struct RopeCase {
    b: usize,
    t: usize,
    stride: usize,
    heads: usize,
    hs: usize,
    pos0: usize,
    offset: usize,
    len: usize,
    inv_freq: Vec<f32>,
    what: &'static str,
}

async fn rope(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>> {
    use cpu::rope::{rope_inv_freq, RopeScaling};
    let plain = |hs: usize, theta: f64| rope_inv_freq(hs, theta, RopeScaling::None);
    // wavelengths 6.3, 63, 628, 6283 against bands at 250 and 1000: one frequency of each kind
    let llama3 = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 1000.0,
    };
    // (B, T, C, NH) of a fused qkv (B, T, 3C): heads = 2·NH, q's and k's
    let qkv = |b: usize, t: usize, c: usize, nh: usize, inv_freq: Vec<f32>, what| RopeCase {
        b,
        t,
        stride: 3 * c,
        heads: 2 * nh,
        hs: c / nh,
        pos0: 0,
        offset: 0,
        len: b * t * 3 * c,
        inv_freq,
        what,
    };
    let cases = [
        RopeCase { pos0: 5, ..qkv(1, 1, 2, 1, plain(2, 10_000.0), "qkv") },
        qkv(2, 7, 12, 3, plain(4, 10_000.0), "qkv"),
        qkv(1, 9, 128, 2, plain(64, 10_000.0), "qkv"),
        qkv(2, 5, 256, 2, plain(128, 500_000.0), "qkv"),
        qkv(1, 33, 16, 2, rope_inv_freq(8, 10_000.0, llama3), "qkv llama3"),
        // grouped-query qkv (B, T, (NH + 2·NKV)·HS), NH = 4, NKV = 2: q's and k's 6 heads
        RopeCase { stride: 64, heads: 6, len: 2 * 17 * 64, ..qkv(2, 17, 32, 4, plain(8, 10_000.0), "gqa NH=4 NKV=2") },
        // a decode step: row 65 of a (1, 80, 3C) cache, the rows around it left alone
        RopeCase { t: 1, pos0: 65, offset: 65 * 48, len: 80 * 48, ..qkv(1, 1, 16, 4, plain(4, 10_000.0), "decode") },
        // a batched decode step: B sequences' new rows side by side, all at position 40
        RopeCase { pos0: 40, ..qkv(3, 1, 8, 2, plain(4, 10_000.0), "decode") },
        // far positions with angles f32 holds exactly (power-of-two frequencies): sin and
        // cos of angles near 4000 (the range reduction) against f64
        RopeCase { pos0: 4000, ..qkv(1, 4, 16, 2, vec![1.0, 0.5, 0.25, 0.125], "angles exact") },
    ];
    let mut checks = Vec::new();
    for s in cases {
        let (x, dx) = (rng.vec_f32(s.len, -1.0, 1.0), rng.vec_f32(s.len, -1.0, 1.0));
        let (mut x_ref, mut dx_ref, inv_freq64) = (f64s(&x), f64s(&dx), f64s(&s.inv_freq));
        let (b, t, stride, heads, hs, pos0) = (s.b, s.t, s.stride, s.heads, s.hs, s.pos0);
        cpu::rope::rope_forward(&mut x_ref[s.offset..], &inv_freq64, b, t, stride, heads, hs, pos0);
        cpu::rope::rope_backward(&mut dx_ref[s.offset..], &inv_freq64, b, t, stride, heads, hs, pos0);

        let (gx, gdx, ginv_freq) = (gpu.upload(&x)?, gpu.upload(&dx)?, gpu.upload(&s.inv_freq)?);
        let mut batch = gpu.begin();
        gpu::rope::rope_forward(&mut batch, gx.at(s.offset), &ginv_freq, b, t, stride, heads, hs, pos0);
        gpu::rope::rope_backward(&mut batch, gdx.at(s.offset), &ginv_freq, b, t, stride, heads, hs, pos0);
        gpu.submit(batch);
        let (x, dx) = (gpu.read_f32(&gx).await?, gpu.read_f32(&gdx).await?);
        let case = format!("{} B={b} T={t} S={stride} heads={heads} HS={hs} pos0={pos0}", s.what);
        checks.push(check("rope_forward", case.clone(), &[(&x, &x_ref)]));
        checks.push(check("rope_backward", case, &[(&dx, &dx_ref)]));
    }
    Ok(checks)
}

async fn swiglu(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    // (N, H): H past a workgroup, and rows that do not fill one
    for (n, h) in [(1, 1), (7, 33), (65, 127), (3, 1000), (300, 70)] {
        let mut inp = rng.vec_f32(n * 2 * h, -6.0, 6.0);
        if h >= 6 {
            // gates where the sigmoid saturates (and a naive exp(−g) overflows)
            inp[..6].copy_from_slice(&[-100.0, -30.0, -9.5, 9.5, 30.0, 100.0]);
        }
        let dout = rng.vec_f32(n * h, -1.0, 1.0);
        let (mut out_ref, mut dinp_ref) = (vec![0.0; n * h], vec![0.0; n * 2 * h]);
        cpu::swiglu::swiglu_forward(&mut out_ref, &f64s(&inp), n, h);
        cpu::swiglu::swiglu_backward(&mut dinp_ref, &f64s(&inp), &f64s(&dout), n, h);

        let (ginp, gdout) = (gpu.upload(&inp)?, gpu.upload(&dout)?);
        let (gout, gdinp) = (gpu.zeros(n * h)?, gpu.zeros(n * 2 * h)?);
        let mut batch = gpu.begin();
        gpu::swiglu::swiglu_forward(&mut batch, &gout, &ginp, n, h);
        gpu::swiglu::swiglu_backward(&mut batch, &gdinp, &ginp, &gdout, n, h);
        gpu.submit(batch);
        let (out, dinp) = (gpu.read_f32(&gout).await?, gpu.read_f32(&gdinp).await?);
        checks.push(check("swiglu_forward", format!("N={n} H={h}"), &[(&out, &out_ref)]));
        checks.push(check("swiglu_backward", format!("N={n} H={h}"), &[(&dinp, &dinp_ref)]));
    }
    Ok(checks)
}

// ---------------------------------------------------------------- axpy (LoRA)

async fn axpy(gpu: &Gpu, rng: &mut Rng) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    // (R, W, src stride, out stride): whole rows, a column window of a wider row (LoRA's
    // q or v slice of q|k|v), past one workgroup
    // (and stride 0: one source row for every output row, how LoRA clears B's off-blocks)
    for (r, w, ss, os, alpha, accumulate) in [
        (1, 1, 1, 1, 1.0, false),
        (7, 33, 33, 100, 2.0, true),
        (65, 8, 40, 8, -0.5, false),
        (300, 70, 71, 210, 0.125, true),
        (9, 5, 0, 12, 0.0, false),
    ] {
        let src = rng.vec_f32(3 + (r - 1) * ss + w, -1.0, 1.0);
        let out0 = rng.vec_f32(2 + (r - 1) * os + w + 5, -1.0, 1.0);
        let mut reference = f64s(&out0);
        cpu::axpy::axpy(&mut reference[2..], os, &f64s(&src[3..]), ss, r, w, alpha as f64, accumulate);
        let (gsrc, gout) = (gpu.upload(&src)?, gpu.upload(&out0)?);
        let mut batch = gpu.begin();
        gpu::axpy::axpy(&mut batch, gout.at(2), os, gsrc.at(3), ss, r, w, alpha, accumulate);
        gpu.submit(batch);
        let out = gpu.read_f32(&gout).await?;
        let case = format!("R={r} W={w} strides {ss}→{os} α={alpha}{}", if accumulate { " +=" } else { "" });
        checks.push(check("axpy", case, &[(&out, &reference)]));
    }
    // a source kept in 16 bits from an odd offset: α = 1 widens it, exactly
    for (format, r, w, ss, alpha, accumulate) in
        [(HalfFormat::F16, 1, 301, 301, 1.0, false), (HalfFormat::Bf16, 7, 33, 35, -0.5, true)]
    {
        let src = in_format(&rng.vec_f32(3 + (r - 1) * ss + w, -1.0, 1.0), format);
        let out0 = rng.vec_f32(r * w, -1.0, 1.0);
        let mut reference = f64s(&out0);
        cpu::axpy::axpy(&mut reference, w, &f64s(&src[3..]), ss, r, w, alpha as f64, accumulate);
        let (gsrc, gout) = (gpu.upload(&half16::pack(&src, format))?, gpu.upload(&out0)?);
        let mut batch = gpu.begin();
        let view = View { buf: &gsrc, offset: 3, half: Some(format) };
        gpu::axpy::axpy(&mut batch, gout.at(0), w, view, ss, r, w, alpha, accumulate);
        gpu.submit(batch);
        let out = gpu.read_f32(&gout).await?;
        let case = format!("R={r} W={w} src in {format:?} α={alpha}{}", if accumulate { " +=" } else { "" });
        checks.push(check("axpy", case, &[(&out, &reference)]));
    }
    Ok(checks)
}
