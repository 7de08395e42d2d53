//! The CPU twins: one plain-Rust function per GPU kernel, same name and argument order
//! (outputs first, then inputs, then sizes), written to be read rather than to be fast.
//!
//! Sizes follow llm.c: B batch, T time (sequence), C channels, NH heads, HS = C / NH head
//! size, V vocabulary, N rows. Each function is generic over the float type so that tests
//! can run it in f64 as the reference the f32 GPU kernels are held against.
//!
//! Conventions shared with the WGSL: activation gradients of single-use tensors are
//! overwritten (`=`), parameter gradients and residual-stream gradients accumulate (`+=`).

// One twin module per kernel family, from the list in `crate/gpu/mod.rs`.
macro_rules! twin_modules {
    ($($family:ident)*) => {
        $(pub mod $family;)*
    };
}
crate::kernel_families!(twin_modules);
pub mod gemm4;
pub mod half16;

/// The float types the twins run in: f32 (as the GPU) and f64 (the test reference).
pub trait Float: num_traits::Float + std::iter::Sum + std::fmt::Debug + Default + Send + Sync + 'static {}
impl<T: num_traits::Float + std::iter::Sum + std::fmt::Debug + Default + Send + Sync + 'static> Float for T {}

/// A constant in the twin's float type.
#[inline]
pub fn cst<F: Float>(x: f64) -> F {
    F::from(x).expect("a float constant")
}

/// Σ_{j<n} f(j), in eight interleaved running sums (j mod 8) added at the end: the same
/// sum to the reference's f64, and in f32 a loop the compiler can vectorise (a single
/// running sum is a chain of dependent adds it must keep in order).
#[inline]
pub fn sum8<F: Float>(n: usize, f: impl Fn(usize) -> F) -> F {
    let mut partial = [F::zero(); 8];
    let whole = n - n % 8;
    for j0 in (0..whole).step_by(8) {
        for (l, p) in partial.iter_mut().enumerate() {
            *p = *p + f(j0 + l);
        }
    }
    let tail = (whole..n).fold(F::zero(), |acc, j| acc + f(j));
    partial.iter().fold(tail, |acc, &p| acc + p)
}

/// `f(i, chunk)` for each `len`-long chunk `i` of `out`: on every core natively, in order
/// in wasm. The chunks are independent, so the result is the same either way.
pub fn for_chunks<F: Float>(out: &mut [F], len: usize, f: impl Fn(usize, &mut [F]) + Send + Sync) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(len).enumerate().for_each(|(i, c)| f(i, c));
    }
    #[cfg(target_arch = "wasm32")]
    out.chunks_mut(len).enumerate().for_each(|(i, c)| f(i, c));
}

/// [`for_chunks`] over two outputs at once: chunk `i` of `a` (`a_len` long) and of `b`.
pub fn for_chunks2<F: Float>(
    a: &mut [F],
    a_len: usize,
    b: &mut [F],
    b_len: usize,
    f: impl Fn(usize, &mut [F], &mut [F]) + Send + Sync,
) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        a.par_chunks_mut(a_len).zip(b.par_chunks_mut(b_len)).enumerate().for_each(|(i, (x, y))| f(i, x, y));
    }
    #[cfg(target_arch = "wasm32")]
    a.chunks_mut(a_len).zip(b.chunks_mut(b_len)).enumerate().for_each(|(i, (x, y))| f(i, x, y));
}

/// [`for_chunks`] over three outputs at once: chunk `i` of `a`, `b` and `c`.
pub fn for_chunks3<F: Float>(
    (a, a_len): (&mut [F], usize),
    (b, b_len): (&mut [F], usize),
    (c, c_len): (&mut [F], usize),
    f: impl Fn(usize, &mut [F], &mut [F], &mut [F]) + Send + Sync,
) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        let chunks = a.par_chunks_mut(a_len).zip(b.par_chunks_mut(b_len)).zip(c.par_chunks_mut(c_len));
        chunks.enumerate().for_each(|(i, ((x, y), z))| f(i, x, y, z));
    }
    #[cfg(target_arch = "wasm32")]
    a.chunks_mut(a_len)
        .zip(b.chunks_mut(b_len))
        .zip(c.chunks_mut(c_len))
        .enumerate()
        .for_each(|(i, ((x, y), z))| f(i, x, y, z));
}
