//! out = A·B (+ bias) (+ out), with either operand stored transposed.

use super::Float;

/// The shape of a (batched) matrix product out[z] (M×N) = A[z] (M×K) · B[z] (K×N).
/// `a_transposed`: A is stored K×M (so the product is Aᵀ·B of the stored matrix);
/// `b_transposed`: B is stored N×K (the product is A·Bᵀ — a linear layer's forward).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a_transposed: bool,
    pub b_transposed: bool,
}

impl MatmulShape {
    /// A·B with A (m×k), B (k×n).
    pub fn nn(m: usize, n: usize, k: usize) -> Self {
        MatmulShape { batch: 1, m, n, k, a_transposed: false, b_transposed: false }
    }
    /// A·Bᵀ with A (m×k), B stored (n×k).
    pub fn nt(m: usize, n: usize, k: usize) -> Self {
        MatmulShape { b_transposed: true, ..Self::nn(m, n, k) }
    }
    /// Aᵀ·B with A stored (k×m), B (k×n).
    pub fn tn(m: usize, n: usize, k: usize) -> Self {
        MatmulShape { a_transposed: true, ..Self::nn(m, n, k) }
    }
    pub fn batched(self, batch: usize) -> Self {
        MatmulShape { batch, ..self }
    }
    /// Elements in one batch entry of A, B and out.
    pub fn a_len(&self) -> usize {
        self.m * self.k
    }
    pub fn b_len(&self) -> usize {
        self.k * self.n
    }
    pub fn out_len(&self) -> usize {
        self.m * self.n
    }
    /// (row stride, column stride) of A(m, k) in its storage.
    pub fn a_strides(&self) -> (usize, usize) {
        if self.a_transposed {
            (1, self.m)
        } else {
            (self.k, 1)
        }
    }
    /// (row stride, column stride) of B(k, n) in its storage.
    pub fn b_strides(&self) -> (usize, usize) {
        if self.b_transposed {
            (1, self.k)
        } else {
            (self.n, 1)
        }
    }
    /// Floating-point operations of the product (a multiply and an add per term).
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.m * self.n * self.k) as f64
    }
}

/// out (batch, M, N) = A · B + bias (N), accumulated into out when `accumulate`.
///
/// The loop order follows the storage so the innermost loop runs along contiguous
/// memory (and vectorises): with B stored K×N, each out row is a sum of B's rows scaled
/// by A(m, k); with B stored N×K (A·Bᵀ), each output is a dot product of two rows.
pub fn matmul<F: Float>(out: &mut [F], a: &[F], b: &[F], bias: Option<&[F]>, s: MatmulShape, accumulate: bool) {
    let (a_row, a_col) = s.a_strides();
    for z in 0..s.batch {
        let a = &a[z * s.a_len()..];
        let b = &b[z * s.b_len()..];
        let out = &mut out[z * s.out_len()..];
        for m in 0..s.m {
            let row = &mut out[m * s.n..(m + 1) * s.n];
            if !accumulate {
                row.iter_mut().for_each(|o| *o = F::zero());
            }
            if let Some(bias) = bias {
                row.iter_mut().zip(bias).for_each(|(o, &x)| *o = *o + x);
            }
            if s.b_transposed {
                // out[m, n] += Σ_k A(m, k) · B[n, k]: a dot product with B's row n
                let a_m: Vec<F> = (0..s.k).map(|k| a[m * a_row + k * a_col]).collect();
                for (n, o) in row.iter_mut().enumerate() {
                    *o = *o + dot(&a_m, &b[n * s.k..(n + 1) * s.k]);
                }
            } else {
                // out[m, :] += Σ_k A(m, k) · B[k, :]: scaled rows of B
                for k in 0..s.k {
                    let scale = a[m * a_row + k * a_col];
                    let b_row = &b[k * s.n..(k + 1) * s.n];
                    row.iter_mut().zip(b_row).for_each(|(o, &x)| *o = *o + scale * x);
                }
            }
        }
    }
}

/// Σ x·y, in eight interleaved partial sums so that the compiler can vectorise it.
fn dot<F: Float>(x: &[F], y: &[F]) -> F {
    let mut partial = [F::zero(); 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: F = xc.remainder().iter().zip(yc.remainder()).map(|(&a, &b)| a * b).sum();
    for (xs, ys) in xc.zip(yc) {
        for j in 0..8 {
            partial[j] = partial[j] + xs[j] * ys[j];
        }
    }
    partial.iter().fold(tail, |acc, &p| acc + p)
}

/// The same product as [`matmul`], f32 only, fast: natively through the `gemm` crate
/// (cache-blocked AVX2/AVX-512/NEON micro-kernels, on every core), in wasm through Kiln's
/// packed 4-lane kernel ([`super::gemm4`], fused multiply-adds in the relaxed-SIMD build).
/// This is what the CPU backend runs; [`matmul`] stays the readable reference it is tested
/// against (`tests/kernels.rs`, and the kernel checks in Chromium). Each output element is
/// summed by one thread in an order fixed by the shape and the thread count, so a run
/// repeats bit for bit on the same machine.
pub fn matmul_gemm(out: &mut [f32], a: &[f32], b: &[f32], bias: Option<&[f32]>, s: MatmulShape, accumulate: bool) {
    let ((a_row, a_col), (b_row, b_col)) = (s.a_strides(), s.b_strides());
    assert!(a.len() >= s.batch * s.a_len() && b.len() >= s.batch * s.b_len() && out.len() >= s.batch * s.out_len());
    for z in 0..s.batch {
        let out = &mut out[z * s.out_len()..][..s.out_len()];
        if let Some(bias) = bias {
            // the bias is added first, then the product accumulates onto it
            for row in out.chunks_exact_mut(s.n) {
                if accumulate {
                    row.iter_mut().zip(bias).for_each(|(o, &x)| *o += x);
                } else {
                    row.copy_from_slice(&bias[..s.n]);
                }
            }
        }
        let read_dst = accumulate || bias.is_some();
        let (a, b) = (a[z * s.a_len()..].as_ptr(), b[z * s.b_len()..].as_ptr());
        // SAFETY: the assert above keeps every (row, column) of A, B and out, at the
        // strides the shape gives, inside its slice; out does not alias A or B (&mut).
        #[cfg(not(target_arch = "wasm32"))]
        unsafe {
            gemm::gemm(
                s.m,
                s.n,
                s.k,
                out.as_mut_ptr(),
                1,
                s.n as isize,
                read_dst,
                a,
                a_col as isize,
                a_row as isize,
                b,
                b_col as isize,
                b_row as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm_parallelism(s),
            );
        }
        #[cfg(target_arch = "wasm32")]
        unsafe {
            use super::gemm4::{gemm, Operand, Wasm};
            let lhs = Operand { ptr: a, row_stride: a_row, col_stride: a_col };
            let rhs = Operand { ptr: b, row_stride: b_row, col_stride: b_col };
            gemm::<Wasm>((s.m, s.n, s.k), out.as_mut_ptr(), s.n, lhs, rhs, 1.0, read_dst);
        }
    }
}

/// The matrix-product kernels this CPU runs. Natively `gemm`'s, as its dispatch (the `pulp`
/// crate) decides at run time: x86-64-v4 (AVX-512 F/BW/CD/DQ/VL, 16 lanes) where the CPU
/// has all of them, else x86-64-v3 (AVX2 and FMA, 8 lanes); NEON on ARM. In wasm, which of
/// the two builds the page loaded (www/lib/wasm.js chooses at start).
pub fn gemm_kernel() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        let v4 = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512cd")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl");
        let v3 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
        if v4 {
            "x86-64-v4 (AVX-512, 16 f32 lanes)"
        } else if v3 {
            "x86-64-v3 (AVX2 + FMA, 8 f32 lanes)"
        } else {
            "x86-64 (SSE2, 4 f32 lanes)"
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        "aarch64 (NEON, 4 f32 lanes)"
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    {
        "wasm32 relaxed SIMD (f32x4.relaxed_madd, 4 f32 lanes)"
    }
    #[cfg(all(target_arch = "wasm32", not(target_feature = "relaxed-simd")))]
    {
        "wasm32 SIMD128 (f32x4.mul then f32x4.add, 4 f32 lanes)"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "wasm32")))]
    {
        "portable"
    }
}

/// All cores once a product is large enough to pay for waking them (below about a million
/// multiply-adds the threads cost more than they save).
#[cfg(not(target_arch = "wasm32"))]
fn gemm_parallelism(s: MatmulShape) -> gemm::Parallelism {
    if s.m * s.n * s.k >= 1 << 20 {
        return gemm::Parallelism::Rayon(0);
    }
    gemm::Parallelism::None
}
