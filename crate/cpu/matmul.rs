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
        MatmulShape {
            batch: 1,
            m,
            n,
            k,
            a_transposed: false,
            b_transposed: false,
        }
    }
    /// A·Bᵀ with A (m×k), B stored (n×k).
    pub fn nt(m: usize, n: usize, k: usize) -> Self {
        MatmulShape {
            b_transposed: true,
            ..Self::nn(m, n, k)
        }
    }
    /// Aᵀ·B with A stored (k×m), B (k×n).
    pub fn tn(m: usize, n: usize, k: usize) -> Self {
        MatmulShape {
            a_transposed: true,
            ..Self::nn(m, n, k)
        }
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
pub fn matmul<F: Float>(
    out: &mut [F],
    a: &[F],
    b: &[F],
    bias: Option<&[F]>,
    s: MatmulShape,
    accumulate: bool,
) {
    let (a_row, a_col) = s.a_strides();
    let (b_row, b_col) = s.b_strides();
    for z in 0..s.batch {
        let a = &a[z * s.a_len()..];
        let b = &b[z * s.b_len()..];
        let out = &mut out[z * s.out_len()..];
        for m in 0..s.m {
            for n in 0..s.n {
                let mut acc = F::zero();
                for k in 0..s.k {
                    acc = acc + a[m * a_row + k * a_col] * b[k * b_row + n * b_col];
                }
                if let Some(bias) = bias {
                    acc = acc + bias[n];
                }
                let o = &mut out[m * s.n + n];
                *o = if accumulate { *o + acc } else { acc };
            }
        }
    }
}
