//! Recording many kernels into one command encoder, submitted at once.

use super::context::{Buffer, Gpu, GpuError};
use super::shaders::{Params, Shader};

/// Splits `n` workgroups over x and y so that neither exceeds `max_per_dim`
/// (65535 on most adapters). Shaders recover the flat index as `wid.x + wid.y * nwg.x`
/// and return when it is past the end.
pub fn grid_1d(n: u32, max_per_dim: u32) -> [u32; 3] {
    let n = n.max(1);
    if n <= max_per_dim {
        [n, 1, 1]
    } else {
        [max_per_dim, n.div_ceil(max_per_dim), 1]
    }
}

/// A batch of kernel dispatches in one command encoder. Build it with [`Gpu::begin`],
/// record kernels with the typed functions in `gpu::*`, then [`Gpu::submit`] it.
pub struct Batch {
    pub(crate) gpu: Gpu,
    /// The compute pass dispatches are recorded into: one for every run of dispatches
    /// between copies and clears, not one per dispatch (WebGPU orders the dispatches in a
    /// pass and makes each see the writes of those before it). Declared before the
    /// encoder, so that it is dropped (ended) first.
    pass: Option<wgpu::ComputePass<'static>>,
    encoder: wgpu::CommandEncoder,
    /// Staging buffers that must live until the batch has been submitted.
    temps: Vec<Buffer>,
    /// Scratch buffers handed out so far, by length (see [`Batch::temp`]).
    scratch_taken: std::collections::HashMap<usize, usize>,
}

impl Gpu {
    pub fn begin(&self) -> Batch {
        Batch {
            gpu: self.clone(),
            encoder: self.device.create_command_encoder(&Default::default()),
            pass: None,
            temps: Vec::new(),
            scratch_taken: Default::default(),
        }
    }

    /// Submits everything recorded in `batch` as one command buffer.
    pub fn submit(&self, mut batch: Batch) {
        batch.end_pass();
        self.queue.submit([batch.encoder.finish()]);
        self.count_submit();
        drop(batch.temps);
    }
}

impl Batch {
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// A scratch buffer of `len` elements for this batch alone: the n-th one of that length
    /// it asks for. The same buffers come back, in the same order, to every batch, so a
    /// repeated step binds the same buffers (and reuses its bind groups). Its contents are
    /// whatever the last batch left: every user writes all of it before reading it.
    pub fn temp(&mut self, len: usize) -> Result<Buffer, GpuError> {
        let n = self.scratch_taken.entry(len).or_default();
        let buf = self.gpu.scratch(len, *n)?;
        *n += 1;
        Ok(buf)
    }

    /// Writes `data` into `dst` from element `offset`, in order with the recorded kernels:
    /// the data goes into a staging buffer now and is copied when the batch runs. (A queue
    /// write would land before the whole batch, so it could not sit between two kernels.)
    pub fn write<T: bytemuck::Pod>(&mut self, dst: &Buffer, offset: usize, data: &[T]) -> Result<(), GpuError> {
        if data.is_empty() {
            return Ok(());
        }
        let staging = self.gpu.upload(data)?;
        self.copy(&staging, 0, dst, offset, data.len());
        self.temps.push(staging);
        Ok(())
    }

    /// Ends the open compute pass, so that the encoder can record a copy or a clear.
    fn end_pass(&mut self) {
        self.pass = None;
    }

    /// Sets a whole buffer to zero (gradients before a step).
    pub fn clear(&mut self, buf: &Buffer) {
        self.end_pass();
        self.encoder.clear_buffer(&buf.raw, 0, None);
    }

    /// Copies `len` elements between buffers.
    pub fn copy(&mut self, src: &Buffer, src_offset: usize, dst: &Buffer, dst_offset: usize, len: usize) {
        assert!(src_offset + len <= src.len() && dst_offset + len <= dst.len());
        self.end_pass();
        self.encoder.copy_buffer_to_buffer(
            &src.raw,
            4 * src_offset as u64,
            &dst.raw,
            4 * dst_offset as u64,
            4 * len as u64,
        );
    }

    /// Records one dispatch of `entry` in `shader`. Binding 0 is the uniform `params`;
    /// `buffers` pairs each storage variable the WGSL declares (by name: its binding number
    /// is the shader's, written only there) with a buffer.
    pub fn dispatch<P: Params>(
        &mut self,
        shader: Shader,
        entry: &'static str,
        params: &P,
        buffers: &[(&str, &Buffer)],
        workgroups: [u32; 3],
    ) {
        let max = self.gpu.limits.max_compute_workgroups_per_dimension;
        assert!(workgroups.iter().all(|&w| w <= max), "{entry}: {workgroups:?} workgroups exceed {max} per dimension");
        if workgroups.contains(&0) {
            return;
        }
        self.gpu.count_dispatch();
        let (pipeline, layout) = self.gpu.pipeline(shader, entry, P::FIELDS);
        let buffers: Vec<(u32, &Buffer)> =
            buffers.iter().map(|&(var, buf)| (layout.binding(entry, var), buf)).collect();
        let bind_group = self.gpu.bind_group(shader, entry, &pipeline, bytemuck::bytes_of(params), &buffers);
        let encoder = &mut self.encoder;
        let pass = self.pass.get_or_insert_with(|| {
            encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None })
                .forget_lifetime()
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        if !self.gpu.reuse() {
            self.end_pass();
        }
        #[cfg(not(target_arch = "wasm32"))]
        if self.gpu.profiling() {
            self.run_and_time(entry);
        }
    }

    /// Profiling (native): runs what is recorded so far at once and charges the time to
    /// `entry`. Slow, and for finding which kernels a step spends its time in.
    #[cfg(not(target_arch = "wasm32"))]
    fn run_and_time(&mut self, entry: &'static str) {
        self.end_pass();
        let encoder = std::mem::replace(&mut self.encoder, self.gpu.device.create_command_encoder(&Default::default()));
        let start = std::time::Instant::now();
        self.gpu.queue.submit([encoder.finish()]);
        let _ = self.gpu.wait();
        self.gpu.charge(entry, start.elapsed().as_secs_f64());
    }

    /// Workgroups for `n` independent items handled `per_group` at a time, as a grid.
    pub fn grid(&self, n: usize, per_group: usize) -> [u32; 3] {
        grid_1d(n.div_ceil(per_group) as u32, self.gpu.limits.max_compute_workgroups_per_dimension)
    }
}
