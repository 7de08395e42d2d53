//! The CPU backend: runs the CPU twins (in f32) at once. Buffers are shared cells, so the
//! model can hold several views of one flat parameter buffer; an op borrows each cell
//! once and splits it where two of its outputs live in the same buffer.

use std::cell::RefCell;
use std::rc::Rc;

use super::{At, Backend};
use crate::cpu;
use crate::cpu::adamw::AdamWConfig;
use crate::cpu::matmul::MatmulShape;
use crate::error::Result;

/// A CPU buffer: f32 values (u32 token ids are stored by their bits).
pub type CpuBuf = Rc<RefCell<Vec<f32>>>;

/// `f` of `len` elements of `at` as f32: a slice of its buffer, or its 16-bit values
/// widened (the kernels' reading of a frozen matrix kept in 16 bits).
fn with_f32<R>(at: At<CpuBuf>, len: usize, f: impl FnOnce(&[f32]) -> R) -> R {
    let buf = at.buf.borrow();
    match at.half {
        None => f(&buf[at.offset..at.offset + len]),
        Some(format) => f(&cpu::half16::widen(&buf, at.offset, len, format)),
    }
}

#[derive(Default)]
pub struct CpuBackend {
    /// Per-op (calls, seconds) while profiling (`kiln bench profile --backend cpu`).
    profile: Option<crate::gpu::KernelTimes>,
}

impl CpuBackend {
    pub fn new() -> CpuBackend {
        CpuBackend::default()
    }

    /// Starts (`true`) or ends timing every op; ending returns the totals.
    pub fn set_profiling(&mut self, on: bool) -> Option<crate::gpu::KernelTimes> {
        std::mem::replace(&mut self.profile, on.then(Default::default))
    }

    /// Runs one op, timed when profiling.
    fn op<R>(&mut self, name: &'static str, f: impl FnOnce() -> R) -> R {
        if self.profile.is_none() {
            return f();
        }
        let start = crate::clock::now_s();
        let r = f();
        let e = self.profile.as_mut().map(|p| p.entry(name).or_default());
        if let Some(e) = e {
            e.0 += 1;
            e.1 += crate::clock::now_s() - start;
        }
        r
    }
}

fn u32s(buf: &[f32]) -> &[u32] {
    bytemuck::cast_slice(buf)
}

/// Two disjoint mutable ranges of one buffer.
fn split_two(buf: &mut [f32], a: (usize, usize), b: (usize, usize)) -> (&mut [f32], &mut [f32]) {
    assert!(a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0, "overlapping outputs");
    if a.0 < b.0 {
        let (lo, hi) = buf.split_at_mut(b.0);
        (&mut lo[a.0..a.0 + a.1], &mut hi[..b.1])
    } else {
        let (lo, hi) = buf.split_at_mut(a.0);
        (&mut hi[..a.1], &mut lo[b.0..b.0 + b.1])
    }
}

/// Room for `len` floats, or an error saying so: out of memory must not abort (in the
/// browser an abort is a trap that ends the worker).
fn allocate(len: usize) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        crate::error::KilnError::Config(format!(
            "out of memory: a buffer of {:.1} MiB could not be allocated; choose a smaller model, batch or context",
            len as f64 * 4.0 / (1u64 << 20) as f64
        ))
    })?;
    Ok(v)
}

/// All the bytes a CPU run's buffers may take: wasm32 addresses 4 GiB in all, which also
/// holds the module, the text and its tokens; natively the operating system decides.
pub fn cpu_memory_budget() -> Option<u64> {
    cfg!(target_arch = "wasm32").then_some(3 << 30)
}

impl Backend for CpuBackend {
    type Buf = CpuBuf;

    fn describe(&self) -> String {
        "cpu".to_string()
    }
    fn max_buffer_bytes(&self) -> Option<u64> {
        None
    }
    fn memory_budget_bytes(&self) -> Option<u64> {
        cpu_memory_budget()
    }
    fn zeros(&mut self, len: usize) -> Result<CpuBuf> {
        let mut v = allocate(len)?;
        v.resize(len, 0.0);
        Ok(Rc::new(RefCell::new(v)))
    }
    fn upload(&mut self, data: &[f32]) -> Result<CpuBuf> {
        let mut v = allocate(data.len())?;
        v.extend_from_slice(data);
        Ok(Rc::new(RefCell::new(v)))
    }
    fn upload_u32(&mut self, data: &[u32]) -> Result<CpuBuf> {
        Ok(Rc::new(RefCell::new(data.iter().map(|&x| f32::from_bits(x)).collect())))
    }
    fn write(&mut self, buf: &CpuBuf, offset: usize, data: &[f32]) {
        buf.borrow_mut()[offset..offset + data.len()].copy_from_slice(data);
    }
    fn write_u32(&mut self, buf: &CpuBuf, offset: usize, data: &[u32]) {
        let mut b = buf.borrow_mut();
        for (o, &x) in b[offset..offset + data.len()].iter_mut().zip(data) {
            *o = f32::from_bits(x);
        }
    }
    async fn read(&mut self, buf: &CpuBuf) -> Result<Vec<f32>> {
        Ok(buf.borrow().clone())
    }
    fn flush(&mut self) {}
    fn clear(&mut self, buf: &CpuBuf) {
        buf.borrow_mut().iter_mut().for_each(|x| *x = 0.0);
    }
    fn copy(&mut self, src: At<CpuBuf>, dst: At<CpuBuf>, len: usize) {
        let data = src.buf.borrow()[src.offset..src.offset + len].to_vec();
        dst.buf.borrow_mut()[dst.offset..dst.offset + len].copy_from_slice(&data);
    }

    fn matmul(
        &mut self,
        out: At<CpuBuf>,
        a: At<CpuBuf>,
        b: At<CpuBuf>,
        bias: Option<At<CpuBuf>>,
        s: MatmulShape,
        acc: bool,
    ) {
        self.op("matmul", || {
            let a_buf = a.buf.borrow();
            let bias_buf = bias.map(|x| x.buf.borrow());
            let bias_slice = bias_buf.as_ref().zip(bias).map(|(buf, at)| &buf[at.offset..at.offset + s.n]);
            with_f32(b, s.batch * s.b_len(), |b| {
                let mut o = out.buf.borrow_mut();
                cpu::matmul::matmul_gemm(&mut o[out.offset..], &a_buf[a.offset..], b, bias_slice, s, acc);
            });
        })
    }
    fn sum_rows(&mut self, out: At<CpuBuf>, src: At<CpuBuf>, r: usize, w: usize, acc: bool) -> Result<()> {
        self.op("sum_rows", || {
            let s = src.buf.borrow();
            cpu::sum_rows::sum_rows(&mut out.buf.borrow_mut()[out.offset..out.offset + w], &s[src.offset..], r, w, acc);
            Ok(())
        })
    }
    fn axpy(
        &mut self,
        out: At<CpuBuf>,
        os: usize,
        src: At<CpuBuf>,
        ss: usize,
        r: usize,
        w: usize,
        alpha: f32,
        acc: bool,
    ) {
        self.op("axpy", || {
            if r == 0 || w == 0 {
                return;
            }
            // src may be the same buffer as out (disjoint rows): copy what is read first
            let s = with_f32(src, (r - 1) * ss + w, <[f32]>::to_vec);
            cpu::axpy::axpy(&mut out.buf.borrow_mut()[out.offset..], os, &s, ss, r, w, alpha, acc);
        })
    }
    fn embedding_forward(
        &mut self,
        out: &CpuBuf,
        tokens: &CpuBuf,
        wte: At<CpuBuf>,
        wpe: Option<At<CpuBuf>>,
        b: usize,
        t: usize,
        c: usize,
    ) {
        self.op("embedding_forward", || {
            let tok = tokens.borrow();
            let rows = 1 + u32s(&tok)[..b * t].iter().copied().max().unwrap_or(0) as usize;
            with_f32(wte, rows * c, |e| match wpe {
                Some(wpe) => with_f32(wpe, t * c, |p| {
                    cpu::embedding::embedding_forward(&mut out.borrow_mut(), u32s(&tok), e, Some(p), b, t, c)
                }),
                None => cpu::embedding::embedding_forward(&mut out.borrow_mut(), u32s(&tok), e, None, b, t, c),
            });
        })
    }
    fn embedding_backward(
        &mut self,
        dwte: At<CpuBuf>,
        dwpe: Option<At<CpuBuf>>,
        dout: &CpuBuf,
        tokens: &[u32],
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        self.op("embedding_backward", || {
            let vocab_rows = 1 + tokens.iter().copied().max().unwrap_or(0) as usize;
            let g = dout.borrow();
            match dwpe {
                None => {
                    let mut e = dwte.buf.borrow_mut();
                    cpu::embedding::embedding_backward(&mut e[dwte.offset..], None, &g, tokens, b, t, c);
                }
                Some(dwpe) if Rc::ptr_eq(dwte.buf, dwpe.buf) => {
                    let mut buf = dwte.buf.borrow_mut();
                    let (e, p) = split_two(&mut buf, (dwte.offset, vocab_rows * c), (dwpe.offset, t * c));
                    cpu::embedding::embedding_backward(e, Some(p), &g, tokens, b, t, c);
                }
                Some(dwpe) => {
                    let (mut e, mut p) = (dwte.buf.borrow_mut(), dwpe.buf.borrow_mut());
                    let p = Some(&mut p[dwpe.offset..]);
                    cpu::embedding::embedding_backward(&mut e[dwte.offset..], p, &g, tokens, b, t, c);
                }
            }
            Ok(())
        })
    }
    fn layernorm_forward(
        &mut self,
        out: &CpuBuf,
        mean: &CpuBuf,
        rstd: &CpuBuf,
        inp: &CpuBuf,
        weight: At<CpuBuf>,
        bias: At<CpuBuf>,
        n: usize,
        c: usize,
    ) {
        self.op("layernorm_forward", || {
            let (x, w, b) = (inp.borrow(), weight.buf.borrow(), bias.buf.borrow());
            cpu::layernorm::layernorm_forward(
                &mut out.borrow_mut(),
                &mut mean.borrow_mut(),
                &mut rstd.borrow_mut(),
                &x,
                &w[weight.offset..weight.offset + c],
                &b[bias.offset..bias.offset + c],
                n,
                c,
            );
        })
    }
    fn layernorm_backward(
        &mut self,
        dinp: &CpuBuf,
        dweight: At<CpuBuf>,
        dbias: At<CpuBuf>,
        dout: &CpuBuf,
        inp: &CpuBuf,
        weight: At<CpuBuf>,
        mean: &CpuBuf,
        rstd: &CpuBuf,
        n: usize,
        c: usize,
    ) -> Result<()> {
        self.op("layernorm_backward", || {
            let (g, x, w, m, r) = (dout.borrow(), inp.borrow(), weight.buf.borrow(), mean.borrow(), rstd.borrow());
            let w = &w[weight.offset..weight.offset + c];
            let mut di = dinp.borrow_mut();
            if Rc::ptr_eq(dweight.buf, dbias.buf) {
                let mut buf = dweight.buf.borrow_mut();
                let (dw, db) = split_two(&mut buf, (dweight.offset, c), (dbias.offset, c));
                cpu::layernorm::layernorm_backward(&mut di, dw, db, &g, &x, w, &m, &r, n, c);
            } else {
                let (mut dw, mut db) = (dweight.buf.borrow_mut(), dbias.buf.borrow_mut());
                let (dw, db) = (&mut dw[dweight.offset..dweight.offset + c], &mut db[dbias.offset..dbias.offset + c]);
                cpu::layernorm::layernorm_backward(&mut di, dw, db, &g, &x, w, &m, &r, n, c);
            }
            Ok(())
        })
    }
    fn attention_forward(
        &mut self,
        out: &CpuBuf,
        lse: &CpuBuf,
        qkv: &CpuBuf,
        b: usize,
        t: usize,
        c: usize,
        nh: usize,
        nkv: usize,
        t0: usize,
        t_cap: usize,
    ) {
        self.op("attention_forward", || {
            cpu::attention::attention_forward_gemm(
                &mut out.borrow_mut(),
                &mut lse.borrow_mut(),
                &qkv.borrow(),
                b,
                t,
                c,
                nh,
                nkv,
                t0,
                t_cap,
            );
        })
    }
    fn attention_backward(
        &mut self,
        dqkv: &CpuBuf,
        delta: &CpuBuf,
        dout: &CpuBuf,
        qkv: &CpuBuf,
        out: &CpuBuf,
        lse: &CpuBuf,
        b: usize,
        t: usize,
        c: usize,
        nh: usize,
        nkv: usize,
    ) {
        self.op("attention_backward", || {
            cpu::attention::attention_backward_gemm(
                &mut dqkv.borrow_mut(),
                &mut delta.borrow_mut(),
                &dout.borrow(),
                &qkv.borrow(),
                &out.borrow(),
                &lse.borrow(),
                b,
                t,
                c,
                nh,
                nkv,
            );
        })
    }
    fn rmsnorm_forward(
        &mut self,
        out: &CpuBuf,
        rstd: &CpuBuf,
        inp: &CpuBuf,
        weight: At<CpuBuf>,
        n: usize,
        c: usize,
        eps: f64,
    ) {
        self.op("rmsnorm_forward", || {
            let (x, w) = (inp.borrow(), weight.buf.borrow());
            let w = &w[weight.offset..weight.offset + c];
            cpu::rmsnorm::rmsnorm_forward(&mut out.borrow_mut(), &mut rstd.borrow_mut(), &x, w, n, c, eps);
        })
    }
    fn rmsnorm_backward(
        &mut self,
        dinp: &CpuBuf,
        dweight: At<CpuBuf>,
        dout: &CpuBuf,
        inp: &CpuBuf,
        weight: At<CpuBuf>,
        rstd: &CpuBuf,
        n: usize,
        c: usize,
    ) -> Result<()> {
        self.op("rmsnorm_backward", || {
            let (g, x, w, r) = (dout.borrow(), inp.borrow(), weight.buf.borrow(), rstd.borrow());
            let w = &w[weight.offset..weight.offset + c];
            let mut dw = dweight.buf.borrow_mut();
            let dw = &mut dw[dweight.offset..dweight.offset + c];
            cpu::rmsnorm::rmsnorm_backward(&mut dinp.borrow_mut(), dw, &g, &x, w, &r, n, c);
            Ok(())
        })
    }
    fn rope_forward(
        &mut self,
        x: At<CpuBuf>,
        inv_freq: &CpuBuf,
        b: usize,
        t: usize,
        stride: usize,
        heads: usize,
        hs: usize,
        pos0: usize,
    ) {
        self.op("rope_forward", || {
            let mut buf = x.buf.borrow_mut();
            cpu::rope::rope_forward(&mut buf[x.offset..], &inv_freq.borrow(), b, t, stride, heads, hs, pos0);
        })
    }
    fn rope_backward(
        &mut self,
        dx: At<CpuBuf>,
        inv_freq: &CpuBuf,
        b: usize,
        t: usize,
        stride: usize,
        heads: usize,
        hs: usize,
        pos0: usize,
    ) {
        self.op("rope_backward", || {
            let mut buf = dx.buf.borrow_mut();
            cpu::rope::rope_backward(&mut buf[dx.offset..], &inv_freq.borrow(), b, t, stride, heads, hs, pos0);
        })
    }
    fn swiglu_forward(&mut self, out: &CpuBuf, inp: &CpuBuf, n: usize, h: usize) {
        self.op("swiglu_forward", || {
            cpu::swiglu::swiglu_forward(&mut out.borrow_mut(), &inp.borrow(), n, h);
        })
    }
    fn swiglu_backward(&mut self, dinp: &CpuBuf, inp: &CpuBuf, dout: &CpuBuf, n: usize, h: usize) {
        self.op("swiglu_backward", || {
            cpu::swiglu::swiglu_backward(&mut dinp.borrow_mut(), &inp.borrow(), &dout.borrow(), n, h);
        })
    }
    fn gelu_forward(&mut self, out: &CpuBuf, inp: &CpuBuf, n: usize) {
        self.op("gelu_forward", || {
            cpu::gelu::gelu_forward_fast(&mut out.borrow_mut()[..n], &inp.borrow()[..n]);
        })
    }
    fn gelu_backward(&mut self, dinp: &CpuBuf, inp: &CpuBuf, dout: &CpuBuf, n: usize) {
        self.op("gelu_backward", || {
            cpu::gelu::gelu_backward_fast(&mut dinp.borrow_mut()[..n], &inp.borrow()[..n], &dout.borrow()[..n]);
        })
    }
    fn residual_forward(&mut self, out: &CpuBuf, inp1: &CpuBuf, inp2: &CpuBuf, n: usize) {
        self.op("residual_forward", || {
            cpu::residual::residual_forward(&mut out.borrow_mut()[..n], &inp1.borrow()[..n], &inp2.borrow()[..n]);
        })
    }
    fn cross_entropy_forward(
        &mut self,
        losses: &CpuBuf,
        logits: &CpuBuf,
        targets: &CpuBuf,
        weights: &CpuBuf,
        n: usize,
        v: usize,
    ) {
        self.op("cross_entropy_forward", || {
            let (l, t, w) = (logits.borrow(), targets.borrow(), weights.borrow());
            cpu::cross_entropy::cross_entropy_forward(&mut losses.borrow_mut(), &l, u32s(&t), &w, n, v);
        })
    }
    fn cross_entropy_backward(&mut self, logits: &CpuBuf, targets: &CpuBuf, weights: &CpuBuf, n: usize, v: usize) {
        self.op("cross_entropy_backward", || {
            let (t, w) = (targets.borrow(), weights.borrow());
            cpu::cross_entropy::cross_entropy_backward(&mut logits.borrow_mut(), u32s(&t), &w, n, v);
        })
    }
    fn grad_norm(&mut self, norm: &CpuBuf, grads: &CpuBuf, n: usize, max_norm: f32) -> Result<()> {
        self.op("grad_norm", || {
            let (total, scale) = cpu::grad_norm::grad_norm(&grads.borrow()[..n], max_norm);
            norm.borrow_mut()[..2].copy_from_slice(&[total, scale]);
            Ok(())
        })
    }
    fn adamw(
        &mut self,
        params: &CpuBuf,
        grads: &CpuBuf,
        m: &CpuBuf,
        v: &CpuBuf,
        step: &CpuBuf,
        decay: &CpuBuf,
        n: usize,
        cfg: AdamWConfig,
        t: u32,
    ) -> Result<()> {
        self.op("adamw", || {
            let scale = step.borrow()[1];
            cpu::adamw::adamw(
                &mut params.borrow_mut()[..n],
                &grads.borrow()[..n],
                &mut m.borrow_mut()[..n],
                &mut v.borrow_mut()[..n],
                u32s(&decay.borrow()),
                scale,
                cfg,
                t,
            );
        });
        Ok(())
    }
}
