//! The GPU backend: each op records its kernel(s) into the current batch; `flush` (or a
//! read) submits the batch, so a whole training step is one submit.

use super::{At, Backend};
use crate::cpu::adamw::AdamWConfig;
use crate::cpu::matmul::MatmulShape;
use crate::error::Result;
use crate::gpu::{self, Batch, Buffer, Gpu, View};

pub struct GpuBackend {
    gpu: Gpu,
    batch: Option<Batch>,
}

impl GpuBackend {
    pub fn new(gpu: Gpu) -> GpuBackend {
        GpuBackend { gpu, batch: None }
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    fn batch(&mut self) -> &mut Batch {
        let gpu = &self.gpu;
        self.batch.get_or_insert_with(|| gpu.begin())
    }
}

impl GpuBackend {
    /// A write that lands after everything recorded so far and before what follows, in
    /// the same submit (a training step with several micro-batches stays one submit).
    fn write_ordered<T: bytemuck::Pod>(&mut self, buf: &Buffer, offset: usize, data: &[T]) {
        if let Some(batch) = self.batch.as_mut() {
            if batch.write(buf, offset, data).is_ok() {
                return;
            }
            self.flush(); // no room for a staging copy: submit, then write directly
        }
        self.gpu.write(buf, offset, data);
    }
}

fn v<'a>(at: At<'a, Buffer>) -> View<'a> {
    match at.half {
        None => at.buf.at(at.offset),
        // offsets count 16-bit elements: the kernel's check holds them to the buffer
        Some(_) => View { buf: at.buf, offset: at.offset, half: at.half },
    }
}

impl Backend for GpuBackend {
    type Buf = Buffer;

    fn describe(&self) -> String {
        format!("gpu: {}", self.gpu.adapter_name())
    }
    fn max_buffer_bytes(&self) -> Option<u64> {
        let l = self.gpu.limits();
        Some(l.max_storage_buffer_binding_size.min(l.max_buffer_size))
    }
    fn memory_peak_bytes(&self) -> Option<u64> {
        Some(self.gpu.memory().1)
    }
    fn half_storage(&self) -> bool {
        self.gpu.half_storage()
    }
    fn zeros(&mut self, len: usize) -> Result<Buffer> {
        Ok(self.gpu.zeros(len)?)
    }
    fn upload(&mut self, data: &[f32]) -> Result<Buffer> {
        Ok(self.gpu.upload(data)?)
    }
    fn upload_u32(&mut self, data: &[u32]) -> Result<Buffer> {
        Ok(self.gpu.upload(data)?)
    }
    fn write(&mut self, buf: &Buffer, offset: usize, data: &[f32]) {
        self.write_ordered(buf, offset, data);
    }
    fn write_u32(&mut self, buf: &Buffer, offset: usize, data: &[u32]) {
        self.write_ordered(buf, offset, data);
    }
    async fn read(&mut self, buf: &Buffer) -> Result<Vec<f32>> {
        self.flush();
        Ok(self.gpu.read_f32(buf).await?)
    }
    fn flush(&mut self) {
        if let Some(batch) = self.batch.take() {
            self.gpu.submit(batch);
        }
    }
    fn clear(&mut self, buf: &Buffer) {
        self.batch().clear(buf);
    }
    fn copy(&mut self, src: At<Buffer>, dst: At<Buffer>, len: usize) {
        self.batch().copy(src.buf, src.offset, dst.buf, dst.offset, len);
    }

    fn matmul(
        &mut self,
        out: At<Buffer>,
        a: At<Buffer>,
        b: At<Buffer>,
        bias: Option<At<Buffer>>,
        s: MatmulShape,
        acc: bool,
    ) {
        gpu::matmul::matmul(self.batch(), v(out), v(a), v(b), bias.map(v), s, acc);
    }
    fn sum_rows(&mut self, out: At<Buffer>, src: At<Buffer>, r: usize, w: usize, acc: bool) -> Result<()> {
        Ok(gpu::sum_rows::sum_rows(self.batch(), v(out), v(src), r, w, acc)?)
    }
    fn axpy(
        &mut self,
        out: At<Buffer>,
        os: usize,
        src: At<Buffer>,
        ss: usize,
        r: usize,
        w: usize,
        alpha: f32,
        acc: bool,
    ) {
        gpu::axpy::axpy(self.batch(), v(out), os, v(src), ss, r, w, alpha, acc);
    }
    fn embedding_forward(
        &mut self,
        out: &Buffer,
        tokens: &Buffer,
        wte: At<Buffer>,
        wpe: Option<At<Buffer>>,
        b: usize,
        t: usize,
        c: usize,
    ) {
        gpu::embedding::embedding_forward(self.batch(), out, tokens, v(wte), wpe.map(v), b, t, c);
    }
    fn embedding_backward(
        &mut self,
        dwte: At<Buffer>,
        dwpe: Option<At<Buffer>>,
        dout: &Buffer,
        tokens: &[u32],
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        let buckets = gpu::embedding::TokenBuckets::new(self.batch(), tokens)?;
        Ok(gpu::embedding::embedding_backward(self.batch(), v(dwte), dwpe.map(v), dout, &buckets, b, t, c)?)
    }
    fn layernorm_forward(
        &mut self,
        out: &Buffer,
        mean: &Buffer,
        rstd: &Buffer,
        inp: &Buffer,
        weight: At<Buffer>,
        bias: At<Buffer>,
        n: usize,
        c: usize,
    ) {
        gpu::layernorm::layernorm_forward(self.batch(), out, mean, rstd, inp, v(weight), v(bias), n, c);
    }
    fn layernorm_backward(
        &mut self,
        dinp: &Buffer,
        dweight: At<Buffer>,
        dbias: At<Buffer>,
        dout: &Buffer,
        inp: &Buffer,
        weight: At<Buffer>,
        mean: &Buffer,
        rstd: &Buffer,
        n: usize,
        c: usize,
    ) -> Result<()> {
        let batch = self.batch();
        Ok(gpu::layernorm::layernorm_backward(
            batch,
            dinp,
            v(dweight),
            v(dbias),
            dout,
            inp,
            v(weight),
            mean,
            rstd,
            n,
            c,
        )?)
    }
    fn attention_forward(
        &mut self,
        out: &Buffer,
        lse: &Buffer,
        qkv: &Buffer,
        b: usize,
        t: usize,
        c: usize,
        nh: usize,
        nkv: usize,
        t0: usize,
        t_cap: usize,
    ) {
        gpu::attention::attention_forward(self.batch(), out, lse, qkv, b, t, c, nh, nkv, t0, t_cap);
    }
    fn attention_backward(
        &mut self,
        dqkv: &Buffer,
        delta: &Buffer,
        dout: &Buffer,
        qkv: &Buffer,
        out: &Buffer,
        lse: &Buffer,
        b: usize,
        t: usize,
        c: usize,
        nh: usize,
        nkv: usize,
    ) {
        gpu::attention::attention_backward(self.batch(), dqkv, delta, dout, qkv, out, lse, b, t, c, nh, nkv);
    }
    fn rmsnorm_forward(
        &mut self,
        out: &Buffer,
        rstd: &Buffer,
        inp: &Buffer,
        weight: At<Buffer>,
        n: usize,
        c: usize,
        eps: f64,
    ) {
        gpu::rmsnorm::rmsnorm_forward(self.batch(), out, rstd, inp, v(weight), n, c, eps);
    }
    fn rmsnorm_backward(
        &mut self,
        dinp: &Buffer,
        dweight: At<Buffer>,
        dout: &Buffer,
        inp: &Buffer,
        weight: At<Buffer>,
        rstd: &Buffer,
        n: usize,
        c: usize,
    ) -> Result<()> {
        Ok(gpu::rmsnorm::rmsnorm_backward(self.batch(), dinp, v(dweight), dout, inp, v(weight), rstd, n, c)?)
    }
    fn rope_forward(
        &mut self,
        x: At<Buffer>,
        inv_freq: &Buffer,
        b: usize,
        t: usize,
        stride: usize,
        heads: usize,
        hs: usize,
        pos0: usize,
    ) {
        gpu::rope::rope_forward(self.batch(), v(x), inv_freq, b, t, stride, heads, hs, pos0);
    }
    fn rope_backward(
        &mut self,
        dx: At<Buffer>,
        inv_freq: &Buffer,
        b: usize,
        t: usize,
        stride: usize,
        heads: usize,
        hs: usize,
        pos0: usize,
    ) {
        gpu::rope::rope_backward(self.batch(), v(dx), inv_freq, b, t, stride, heads, hs, pos0);
    }
    fn swiglu_forward(&mut self, out: &Buffer, inp: &Buffer, n: usize, h: usize) {
        gpu::swiglu::swiglu_forward(self.batch(), out, inp, n, h);
    }
    fn swiglu_backward(&mut self, dinp: &Buffer, inp: &Buffer, dout: &Buffer, n: usize, h: usize) {
        gpu::swiglu::swiglu_backward(self.batch(), dinp, inp, dout, n, h);
    }
    fn gelu_forward(&mut self, out: &Buffer, inp: &Buffer, n: usize) {
        gpu::gelu::gelu_forward(self.batch(), out, inp, n);
    }
    fn gelu_backward(&mut self, dinp: &Buffer, inp: &Buffer, dout: &Buffer, n: usize) {
        gpu::gelu::gelu_backward(self.batch(), dinp, inp, dout, n);
    }
    fn residual_forward(&mut self, out: &Buffer, inp1: &Buffer, inp2: &Buffer, n: usize) {
        gpu::residual::residual_forward(self.batch(), out, inp1, inp2, n);
    }
    fn cross_entropy_forward(
        &mut self,
        losses: &Buffer,
        logits: &Buffer,
        targets: &Buffer,
        weights: &Buffer,
        n: usize,
        vocab: usize,
    ) {
        gpu::cross_entropy::cross_entropy_forward(self.batch(), losses, logits, targets, weights, n, vocab);
    }
    fn cross_entropy_backward(&mut self, logits: &Buffer, targets: &Buffer, weights: &Buffer, n: usize, vocab: usize) {
        gpu::cross_entropy::cross_entropy_backward(self.batch(), logits, targets, weights, n, vocab);
    }
    fn grad_norm(&mut self, norm: &Buffer, grads: &Buffer, n: usize, max_norm: f32) -> Result<()> {
        Ok(gpu::grad_norm::grad_norm(self.batch(), norm, grads.view(), n, max_norm)?)
    }
    fn adamw(
        &mut self,
        params: &Buffer,
        grads: &Buffer,
        m: &Buffer,
        vv: &Buffer,
        step: &Buffer,
        decay: &Buffer,
        n: usize,
        cfg: AdamWConfig,
        t: u32,
    ) -> Result<()> {
        Ok(gpu::adamw::adamw(self.batch(), params, grads, m, vv, step, decay, n, cfg, t)?)
    }
}
