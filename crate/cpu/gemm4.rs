//! dst (m×n) = scale · lhs (m×k) · rhs (k×n) (+ dst), on 4-lane vectors: the CPU backend's
//! matrix product in the browser, in both WebAssembly builds. With relaxed SIMD each
//! lane-term is one `f32x4.relaxed_madd` (a fused multiply-add on x86 with FMA and on
//! ARM); with SIMD128 alone, `f32x4.mul` then `f32x4.add`. It replaced the `gemm` crate's
//! simd128 kernels there: 57-61 GFLOP/s against their 42 on one Chromium thread (AMD EPYC,
//! Zen 5), where 4 lanes × 2 FMA pipes bound it near 60.
//!
//! The classic packed layout (the Goto/BLIS loops): for each NC-wide column block and
//! KC-deep slice of k, the rhs slice is copied once into NR-wide panels (kc×NR, k-major);
//! for each MC-tall row block, the lhs slice into MR-tall panels (kc×MR, scaled as it is
//! copied); then an MR×NR micro-kernel keeps its tile of dst in 8 vector registers while
//! it runs down k, reading both panels contiguously. Edges are zero-padded in the panels
//! and written back through a small buffer. Every element of dst is summed in the same
//! order for a given shape, so a run repeats bit for bit.
//!
//! The loops are generic over the lanes ([`Lanes`]): wasm32 builds use v128 (fused where
//! the build has relaxed SIMD), and every target has [`Portable`] ([f32; 4], a multiply
//! then an add), which the native tests hold to the readable twin in `matmul.rs`.

/// Rows of the micro-kernel's tile (lhs panel height).
pub const MR: usize = 4;
/// Columns of the micro-kernel's tile (rhs panel width): two 4-lane vectors.
pub const NR: usize = 8;
/// k per packed slice: an lhs panel (KC×MR) and an rhs panel (KC×NR) stay in L1.
const KC: usize = 256;
/// Rows per lhs block (MC×KC floats = 64 KiB).
const MC: usize = 64;
/// Columns per rhs block (KC×NC floats = 512 KiB, in L2).
const NC: usize = 512;

/// A 4-lane f32 vector and the operations the micro-kernel needs.
pub trait Lanes {
    type V: Copy;
    fn zero() -> Self::V;
    fn splat(x: f32) -> Self::V;
    /// Four floats from `p` (no alignment needed).
    ///
    /// # Safety
    /// `p..p+4` must be readable.
    unsafe fn load(p: *const f32) -> Self::V;
    /// # Safety
    /// `p..p+4` must be writable.
    unsafe fn store(p: *mut f32, v: Self::V);
    fn add(a: Self::V, b: Self::V) -> Self::V;
    /// a·b + c (fused where the lanes can).
    fn madd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
}

/// Lanes in plain Rust: what the native tests run.
pub struct Portable;

impl Lanes for Portable {
    type V = [f32; 4];
    fn zero() -> Self::V {
        [0.0; 4]
    }
    fn splat(x: f32) -> Self::V {
        [x; 4]
    }
    unsafe fn load(p: *const f32) -> Self::V {
        unsafe { (p as *const [f32; 4]).read_unaligned() }
    }
    unsafe fn store(p: *mut f32, v: Self::V) {
        unsafe { (p as *mut [f32; 4]).write_unaligned(v) }
    }
    fn add(a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] + b[i])
    }
    fn madd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
}

/// WebAssembly's v128: `f32x4.relaxed_madd` in a build with relaxed SIMD (www/build.sh
/// makes one), else `f32x4.mul` then `f32x4.add`.
#[cfg(target_arch = "wasm32")]
pub struct Wasm;

#[cfg(target_arch = "wasm32")]
impl Lanes for Wasm {
    type V = core::arch::wasm32::v128;
    #[inline(always)]
    fn zero() -> Self::V {
        core::arch::wasm32::f32x4_splat(0.0)
    }
    #[inline(always)]
    fn splat(x: f32) -> Self::V {
        core::arch::wasm32::f32x4_splat(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        unsafe { core::arch::wasm32::v128_load(p as *const Self::V) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        unsafe { core::arch::wasm32::v128_store(p as *mut Self::V, v) }
    }
    #[inline(always)]
    fn add(a: Self::V, b: Self::V) -> Self::V {
        core::arch::wasm32::f32x4_add(a, b)
    }
    #[inline(always)]
    fn madd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        #[cfg(target_feature = "relaxed-simd")]
        {
            core::arch::wasm32::f32x4_relaxed_madd(a, b, c)
        }
        #[cfg(not(target_feature = "relaxed-simd"))]
        {
            core::arch::wasm32::f32x4_add(core::arch::wasm32::f32x4_mul(a, b), c)
        }
    }
}

/// A matrix operand: its first element and its (row, column) strides in elements.
#[derive(Clone, Copy)]
pub struct Operand {
    pub ptr: *const f32,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// dst (m×n, rows `dst_rs` apart, columns contiguous) = scale · lhs · rhs, plus dst's
/// own values when `accumulate`.
///
/// # Safety
/// Every element the shapes and strides reach must lie inside the allocation it points
/// into, and dst must not overlap lhs or rhs.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm<L: Lanes>(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    lhs: Operand,
    rhs: Operand,
    scale: f32,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                unsafe { std::slice::from_raw_parts_mut(dst.add(i * dst_rs), n).fill(0.0) };
            }
        }
        return;
    }
    // the panels, zero-padded to whole MR / NR, no larger than this product needs
    // (attention's per-head products are small: a full-size pair would be 576 KiB to
    // clear each call)
    let mut a_pack = vec![0.0f32; MC.min(m).div_ceil(MR) * MR * KC.min(k)];
    let mut b_pack = vec![0.0f32; NC.min(n).div_ceil(NR) * NR * KC.min(k)];
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            // the first k slice writes dst (or adds to it when accumulating); later ones add
            let add_to_dst = accumulate || pc > 0;
            unsafe { pack_rhs(&mut b_pack, rhs, pc, kc, jc, nc) };
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                unsafe { pack_lhs(&mut a_pack, lhs, ic, mc, pc, kc, scale) };
                for jr in (0..nc).step_by(NR) {
                    let b_panel = &b_pack[jr * kc..(jr + NR) * kc];
                    for ir in (0..mc).step_by(MR) {
                        let a_panel = &a_pack[ir * kc..(ir + MR) * kc];
                        let tile = dst.wrapping_add((ic + ir) * dst_rs + jc + jr);
                        let (rows, cols) = (MR.min(mc - ir), NR.min(nc - jr));
                        unsafe { micro_kernel::<L>(kc, a_panel, b_panel, tile, dst_rs, rows, cols, add_to_dst) };
                    }
                }
            }
        }
    }
}

/// rhs[pc..pc+kc, jc..jc+nc] into NR-wide panels: panel p holds columns jc+p·NR.. as
/// kc rows of NR floats (out[p·NR·kc + kk·NR + c]), zero past the last column.
unsafe fn pack_rhs(out: &mut [f32], rhs: Operand, pc: usize, kc: usize, jc: usize, nc: usize) {
    for (p, j0) in (0..nc).step_by(NR).enumerate() {
        let panel = &mut out[p * NR * kc..(p + 1) * NR * kc];
        let cols = NR.min(nc - j0);
        for kk in 0..kc {
            let row = &mut panel[kk * NR..(kk + 1) * NR];
            let src = rhs.ptr.wrapping_add((pc + kk) * rhs.row_stride + (jc + j0) * rhs.col_stride);
            for (c, x) in row.iter_mut().enumerate() {
                *x = if c < cols { unsafe { *src.add(c * rhs.col_stride) } } else { 0.0 };
            }
        }
    }
}

/// scale · lhs[ic..ic+mc, pc..pc+kc] into MR-tall panels: panel p holds rows ic+p·MR..
/// as kc columns of MR floats (out[p·MR·kc + kk·MR + r]), zero past the last row.
unsafe fn pack_lhs(out: &mut [f32], lhs: Operand, ic: usize, mc: usize, pc: usize, kc: usize, scale: f32) {
    for (p, i0) in (0..mc).step_by(MR).enumerate() {
        let panel = &mut out[p * MR * kc..(p + 1) * MR * kc];
        let rows = MR.min(mc - i0);
        for r in 0..MR {
            if r >= rows {
                (0..kc).for_each(|kk| panel[kk * MR + r] = 0.0);
                continue;
            }
            let src = lhs.ptr.wrapping_add((ic + i0 + r) * lhs.row_stride + pc * lhs.col_stride);
            for kk in 0..kc {
                panel[kk * MR + r] = scale * unsafe { *src.add(kk * lhs.col_stride) };
            }
        }
    }
}

/// The MR×NR tile at `tile` (rows `rs` apart) = Σ_kk a_panel[kk]ᵀ ⊗ b_panel[kk] (+ the
/// tile's values when `add_to_dst`); only `rows`×`cols` of it is written.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn micro_kernel<L: Lanes>(
    kc: usize,
    a_panel: &[f32],
    b_panel: &[f32],
    tile: *mut f32,
    rs: usize,
    rows: usize,
    cols: usize,
    add_to_dst: bool,
) {
    debug_assert!(a_panel.len() >= kc * MR && b_panel.len() >= kc * NR);
    let (a, b) = (a_panel.as_ptr(), b_panel.as_ptr());
    // acc[r][h]: row r, columns 4h..4h+4
    let mut acc = [[L::zero(); 2]; MR];
    for kk in 0..kc {
        // SAFETY: kk < kc and the panels hold kc·MR and kc·NR floats
        let (b0, b1) = unsafe { (L::load(b.add(kk * NR)), L::load(b.add(kk * NR + 4))) };
        for (r, row) in acc.iter_mut().enumerate() {
            let x = L::splat(unsafe { *a.add(kk * MR + r) });
            row[0] = L::madd(x, b0, row[0]);
            row[1] = L::madd(x, b1, row[1]);
        }
    }
    if rows == MR && cols == NR {
        for (r, row) in acc.iter().enumerate() {
            let p = tile.wrapping_add(r * rs);
            for (h, &v) in row.iter().enumerate() {
                let q = p.wrapping_add(4 * h);
                // SAFETY: a whole tile lies inside dst (the caller's contract)
                unsafe { L::store(q, if add_to_dst { L::add(L::load(q), v) } else { v }) };
            }
        }
    } else {
        let mut buf = [0.0f32; MR * NR];
        for (r, row) in acc.iter().enumerate() {
            for (h, &v) in row.iter().enumerate() {
                unsafe { L::store(buf.as_mut_ptr().add(r * NR + 4 * h), v) };
            }
        }
        for r in 0..rows {
            for c in 0..cols {
                // SAFETY: r < rows and c < cols stay inside dst
                let q = unsafe { &mut *tile.add(r * rs + c) };
                *q = if add_to_dst { *q + buf[r * NR + c] } else { buf[r * NR + c] };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::matmul::{matmul, MatmulShape};

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Every form (A or B stored transposed), edges past MR / NR / KC / MC / NC, a
    /// scale and accumulation, against the f64 twin.
    #[test]
    fn packed_product_matches_the_twin() {
        for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (4, 8, 256), (9, 17, 300), (67, 520, 33), (130, 9, 513)] {
            for (at, bt) in [(false, false), (false, true), (true, false), (true, true)] {
                for (scale, accumulate) in [(1.0f32, false), (0.375, true)] {
                    let a = rand(m * k, 1);
                    let b = rand(k * n, 2);
                    let mut out = rand(m * n, 3);
                    let s = MatmulShape { batch: 1, m, n, k, a_transposed: at, b_transposed: bt };
                    let a_scaled: Vec<f64> = a.iter().map(|&x| (x * scale) as f64).collect();
                    let b64: Vec<f64> = b.iter().map(|&x| x as f64).collect();
                    let mut want: Vec<f64> = out.iter().map(|&x| x as f64).collect();
                    matmul(&mut want, &a_scaled, &b64, None, s, accumulate);
                    let ((ar, ac), (br, bc)) = (s.a_strides(), s.b_strides());
                    unsafe {
                        gemm::<Portable>(
                            (m, n, k),
                            out.as_mut_ptr(),
                            n,
                            Operand { ptr: a.as_ptr(), row_stride: ar, col_stride: ac },
                            Operand { ptr: b.as_ptr(), row_stride: br, col_stride: bc },
                            scale,
                            accumulate,
                        )
                    };
                    let worst = out.iter().zip(&want).map(|(&x, &y)| (x as f64 - y).abs()).fold(0.0, f64::max);
                    assert!(worst <= 1e-5 * k as f64, "{m}×{n}×{k} at={at} bt={bt} accumulate={accumulate}: {worst}");
                }
            }
        }
    }
}
