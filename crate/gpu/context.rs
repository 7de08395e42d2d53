//! The device, its limits, buffers and readback.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use super::shaders::{Layout, Shader};
use crate::cpu::half16::HalfFormat;

/// What can go wrong talking to the GPU, worded for the person who has to fix it.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuError {
    /// No WebGPU/Vulkan/Metal/DX12 adapter was found.
    NoAdapter(String),
    /// The adapter's limit `limit` is below what Kiln's kernels need.
    LimitTooLow { limit: &'static str, needed: u64, available: u64 },
    /// A buffer larger than the device allows was asked for.
    BufferTooLarge { bytes: u64, limit: &'static str, available: u64 },
    /// The adapter refused the device request.
    RequestDevice(String),
    /// Mapping a buffer for reading failed (usually a lost device).
    Readback(String),
    /// The device was lost (destroyed, a driver reset, the browser reclaiming it): nothing
    /// on it can be used again; a new device and the last checkpoint are the way back.
    Lost(String),
    /// The device ran out of memory (reported by WebGPU outside any call): like a lost
    /// device, the way back is a new device and the last checkpoint.
    OutOfMemory(String),
    /// WebGPU reported another error outside any call (a validation error).
    Uncaptured(String),
}

impl fmt::Display for GpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuError::NoAdapter(why) => write!(f, "no GPU adapter available: {why}"),
            GpuError::LimitTooLow { limit, needed, available } => {
                write!(f, "this GPU's {limit} is {available}, but Kiln's kernels need at least {needed}")
            }
            GpuError::BufferTooLarge { bytes, limit, available } => write!(
                f,
                "a buffer of {} MiB is larger than this GPU's {limit} ({} MiB); choose a smaller model or batch",
                bytes.div_ceil(1 << 20),
                available >> 20
            ),
            GpuError::RequestDevice(why) => write!(f, "the GPU refused to create a device: {why}"),
            GpuError::Readback(why) => write!(f, "reading a GPU buffer back failed: {why}"),
            GpuError::Lost(why) => write!(f, "the GPU device was lost: {why}"),
            GpuError::OutOfMemory(why) => {
                write!(f, "the GPU ran out of memory: {why}; choose a smaller model, batch or context")
            }
            GpuError::Uncaptured(why) => write!(f, "WebGPU reported an error: {why}"),
        }
    }
}

impl std::error::Error for GpuError {}

/// What the kernels in `shaders/` need from an adapter. Each is checked by name.
/// - 6 storage buffers in one dispatch (layernorm: input, weight, bias, output, mean, rstd);
/// - 8 KiB of workgroup memory (matmul's two 64×16 f32 tiles);
/// - 256 invocations per workgroup (16×16 matmul tiles, 256-wide reductions).
const NEEDED: [(&str, u32); 4] = [
    ("maxStorageBuffersPerShaderStage", 6),
    ("maxComputeWorkgroupStorageSize", 8192),
    ("maxComputeInvocationsPerWorkgroup", 256),
    ("maxComputeWorkgroupSizeX", 256),
];

fn adapter_limit(limits: &wgpu::Limits, name: &str) -> u32 {
    match name {
        "maxStorageBuffersPerShaderStage" => limits.max_storage_buffers_per_shader_stage,
        "maxComputeWorkgroupStorageSize" => limits.max_compute_workgroup_storage_size,
        "maxComputeInvocationsPerWorkgroup" => limits.max_compute_invocations_per_workgroup,
        "maxComputeWorkgroupSizeX" => limits.max_compute_workgroup_size_x,
        _ => unreachable!("unknown limit {name}"),
    }
}

/// Checks an adapter's limits against [`NEEDED`] and returns the limits to request:
/// WebGPU's downlevel defaults, raised to what the kernels need and, for buffer sizes,
/// to everything the adapter offers (big models need big buffers).
pub fn required_limits(adapter: &wgpu::Limits) -> Result<wgpu::Limits, GpuError> {
    for (name, needed) in NEEDED {
        let available = adapter_limit(adapter, name);
        if available < needed {
            return Err(GpuError::LimitTooLow { limit: name, needed: needed as u64, available: available as u64 });
        }
    }
    let mut limits = wgpu::Limits::downlevel_defaults().using_resolution(adapter.clone());
    limits.max_storage_buffers_per_shader_stage = adapter.max_storage_buffers_per_shader_stage.min(8);
    limits.max_compute_workgroup_storage_size = adapter.max_compute_workgroup_storage_size.min(16384);
    limits.max_storage_buffer_binding_size = adapter.max_storage_buffer_binding_size;
    limits.max_buffer_size = adapter.max_buffer_size;
    Ok(limits)
}

/// A compiled entry point and its shader's layout (bindings and Params as the WGSL has them).
type Pipeline = (wgpu::ComputePipeline, Rc<Layout>);

/// Kernel entry point → (dispatches, seconds), from profiling.
pub type KernelTimes = HashMap<&'static str, (u32, f64)>;

/// Bytes of live buffers, and the most there have been at once.
#[derive(Debug, Default)]
struct MemoryMeter {
    live: std::cell::Cell<u64>,
    peak: std::cell::Cell<u64>,
    /// Buffers made so far (each one's serial number).
    serial: std::cell::Cell<u64>,
}

/// What identifies a dispatch's bindings: the kernel, its parameters' bytes and each
/// storage binding's buffer (by the serial number of its allocation).
#[derive(Clone, PartialEq, Eq, Hash)]
struct BindingKey {
    shader: Shader,
    entry: &'static str,
    params: Vec<u8>,
    buffers: Vec<(u32, u64)>,
}

#[derive(Default)]
struct BindGroupCache {
    /// Off: every dispatch makes its own bind group and compute pass, as Kiln did before
    /// (the benchmark's baseline for the recording cost).
    off: bool,
    /// Bind groups created so far (tests check that a repeated step creates none).
    made: u64,
    groups: HashMap<BindingKey, wgpu::BindGroup>,
    /// The keys that name each buffer, so that a freed buffer's bind groups (which would
    /// keep its memory alive) go with it.
    by_buffer: HashMap<u64, Vec<BindingKey>>,
}

impl BindGroupCache {
    /// Emptied when past this many (decoding steps through positions, each new params).
    const MAX: usize = 4096;
}

/// Counts a buffer's bytes while any clone of it lives; when the last goes, so do the
/// cached bind groups that use it.
struct Allocation {
    bytes: u64,
    serial: u64,
    meter: Rc<MemoryMeter>,
    bind_groups: Rc<RefCell<BindGroupCache>>,
}

impl std::fmt::Debug for Allocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Allocation({} bytes, #{})", self.bytes, self.serial)
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        self.meter.live.set(self.meter.live.get() - self.bytes);
        let mut cache = self.bind_groups.borrow_mut();
        for key in cache.by_buffer.remove(&self.serial).unwrap_or_default() {
            cache.groups.remove(&key);
        }
    }
}

/// A storage buffer of 4-byte elements (f32 or u32).
#[derive(Clone, Debug)]
pub struct Buffer {
    pub(crate) raw: wgpu::Buffer,
    len: usize,
    allocation: Rc<Allocation>,
}

impl Buffer {
    /// Number of 4-byte elements.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole buffer, from element 0.
    pub fn view(&self) -> View<'_> {
        View { buf: self, offset: 0, half: None }
    }

    /// The buffer from element `offset` on (a tensor inside a flat parameter buffer).
    pub fn at(&self, offset: usize) -> View<'_> {
        assert!(offset <= self.len, "offset {offset} past a buffer of {}", self.len);
        View { buf: self, offset, half: None }
    }
}

/// A tensor inside a buffer: the buffer and the element where the tensor starts.
/// Kernels bind whole buffers and receive offsets as parameters, because storage
/// binding offsets must be 256-byte aligned and tensors in a flat buffer are not.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub buf: &'a Buffer,
    pub offset: usize,
    /// 16-bit elements two to a word (`crate/cpu/half16.rs`); offsets count elements.
    pub half: Option<HalfFormat>,
}

impl View<'_> {
    /// Panics (a bug in the caller, never user input) when `len` elements do not fit.
    pub fn check(&self, len: usize, what: &str) -> u32 {
        let room = if self.half.is_some() { 2 * self.buf.len() } else { self.buf.len() };
        assert!(
            self.offset + len <= room,
            "{what}: needs {len} elements from offset {}, buffer has {room}",
            self.offset,
        );
        self.offset as u32
    }

    /// The kernels' code for the elements' format (0 f32, 1 f16, 2 bf16).
    pub fn format(&self) -> u32 {
        HalfFormat::code(self.half)
    }
}

/// The GPU: device, queue, limits and compiled pipelines. Cloning is cheap and shares
/// everything (wgpu handles are reference-counted; so are the caches).
#[derive(Clone)]
pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) limits: wgpu::Limits,
    /// Frozen models' matrices kept in 16 bits where their values allow (on unless a
    /// comparison with f32 storage turns it off).
    half_storage: std::cell::Cell<bool>,
    info: wgpu::AdapterInfo,
    meter: Rc<MemoryMeter>,
    /// Why the device was lost, once it is; or the first error WebGPU reported outside any
    /// call (wgpu's default for those is a panic, which in the browser ends the worker).
    lost: Arc<Mutex<Option<GpuError>>>,
    /// Command buffers submitted so far (kernel batches and readback copies).
    submits: Rc<std::cell::Cell<u64>>,
    /// Kernel dispatches recorded so far.
    dispatches: Rc<std::cell::Cell<u64>>,
    /// Per-entry-point (dispatches, seconds) while profiling; None otherwise.
    profile: Rc<RefCell<Option<KernelTimes>>>,
    modules: Rc<RefCell<HashMap<Shader, wgpu::ShaderModule>>>,
    /// Each entry point's pipeline, with its shader's bindings and Params as the WGSL
    /// declares them.
    pipelines: Rc<RefCell<HashMap<(Shader, &'static str), Pipeline>>>,
    /// Bind groups (with their uniform buffers) by kernel, parameters and buffers: a step
    /// dispatches the same kernels on the same buffers every time, so after the first
    /// step it creates none.
    bind_groups: Rc<RefCell<BindGroupCache>>,
    /// Scratch buffers by length, kept for the next batch (see `Batch::temp`).
    scratch: Rc<RefCell<HashMap<usize, Vec<Buffer>>>>,
}

impl Gpu {
    /// Opens the default adapter: natively Vulkan/Metal/DX12 (`WGPU_BACKEND` overrides),
    /// in the browser `navigator.gpu`.
    pub async fn new() -> Result<Gpu, GpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        if !cfg!(target_arch = "wasm32") {
            // GL has no compute on many drivers; prefer the modern APIs unless told otherwise.
            desc.backends = wgpu::Backends::PRIMARY;
        }
        let instance = wgpu::Instance::new(desc.with_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let required_limits = required_limits(&adapter.limits())?;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("kiln"),
                required_features: wgpu::Features::empty(),
                required_limits: required_limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::RequestDevice(e.to_string()))?;
        let lost: Arc<Mutex<Option<GpuError>>> = Arc::default();
        let on_lost = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            let why = if message.is_empty() { format!("{reason:?}") } else { format!("{reason:?}: {message}") };
            on_lost.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(GpuError::Lost(why));
        });
        let on_error = lost.clone();
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            let e = match error {
                wgpu::Error::OutOfMemory { .. } => GpuError::OutOfMemory(error.to_string()),
                _ => GpuError::Uncaptured(error.to_string()),
            };
            on_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
        }));
        Ok(Gpu {
            device,
            queue,
            limits: required_limits,
            half_storage: std::cell::Cell::new(true),
            info: adapter.get_info(),
            meter: Rc::default(),
            lost,
            submits: Rc::default(),
            dispatches: Rc::default(),
            profile: Rc::default(),
            modules: Rc::default(),
            pipelines: Rc::default(),
            bind_groups: Rc::default(),
            scratch: Rc::default(),
        })
    }

    /// An error once the device is lost (or WebGPU reported an error outside any call):
    /// results read after that cannot be trusted.
    pub fn check_lost(&self) -> Result<(), GpuError> {
        match self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Destroys the device, as a driver reset or the browser would: the device-loss path's
    /// test (`Kiln.injectFault('lose-device')`).
    pub fn destroy(&self) {
        self.device.destroy();
    }

    /// "name (backend)", e.g. "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)".
    /// Browsers leave the name empty and describe the adapter in `driver` instead.
    /// Whether the adapter is software rendering on the CPU (SwiftShader, llvmpipe or
    /// lavapipe, WARP): WebGPU that works, but no GPU, and never called one.
    pub fn is_software(&self) -> bool {
        let name = self.adapter_name().to_lowercase();
        self.info.device_type == wgpu::DeviceType::Cpu
            || ["swiftshader", "llvmpipe", "lavapipe", "softpipe", "warp", "basic render", "software"]
                .iter()
                .any(|s| name.contains(s))
    }

    pub fn adapter_name(&self) -> String {
        let i = &self.info;
        let name = [&i.name, &i.driver, &i.driver_info]
            .into_iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if name.is_empty() {
            format!("{:?}", i.backend)
        } else {
            format!("{name} ({:?})", i.backend)
        }
    }

    /// Whether frozen models made on this device (and its clones made after) keep 16-bit
    /// matrices in 16 bits (`model::weights`).
    pub fn half_storage(&self) -> bool {
        self.half_storage.get()
    }

    pub fn set_half_storage(&self, on: bool) {
        self.half_storage.set(on);
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    fn check_size(&self, bytes: u64) -> Result<(), GpuError> {
        let binding = self.limits.max_storage_buffer_binding_size;
        if bytes > binding {
            return Err(GpuError::BufferTooLarge { bytes, limit: "maxStorageBufferBindingSize", available: binding });
        }
        if bytes > self.limits.max_buffer_size {
            return Err(GpuError::BufferTooLarge {
                bytes,
                limit: "maxBufferSize",
                available: self.limits.max_buffer_size,
            });
        }
        Ok(())
    }

    /// Command buffers submitted so far (a training step should add one, plus one
    /// per readback).
    pub fn submits(&self) -> u64 {
        self.submits.get()
    }

    /// Turns the reuse of bind groups and compute passes off (`false`) or back on: the
    /// benchmark times recording both ways. Turning it off empties the cache.
    pub fn set_reuse(&self, on: bool) {
        let mut cache = self.bind_groups.borrow_mut();
        cache.off = !on;
        if !on {
            cache.groups.clear();
            cache.by_buffer.clear();
        }
    }

    pub(crate) fn reuse(&self) -> bool {
        !self.bind_groups.borrow().off
    }

    /// Bind groups created so far: a repeated step reuses its own and adds none.
    pub fn bind_groups_made(&self) -> u64 {
        self.bind_groups.borrow().made
    }

    /// Kernel dispatches recorded so far (for the benchmarks' dispatches per step).
    pub fn dispatches(&self) -> u64 {
        self.dispatches.get()
    }

    pub(crate) fn count_dispatch(&self) {
        self.dispatches.set(self.dispatches.get() + 1);
    }

    pub(crate) fn count_submit(&self) {
        self.submits.set(self.submits.get() + 1);
    }

    /// Bytes of Kiln's storage buffers alive now, and the peak since [`Gpu::reset_peak`].
    pub fn memory(&self) -> (u64, u64) {
        (self.meter.live.get(), self.meter.peak.get())
    }

    pub fn reset_peak(&self) {
        self.meter.peak.set(self.meter.live.get());
    }

    /// A zero-filled buffer of `len` elements.
    pub fn zeros(&self, len: usize) -> Result<Buffer, GpuError> {
        // Bindings may not be empty: keep at least one element.
        let bytes = 4 * len.max(1) as u64;
        self.check_size(bytes)?;
        let raw = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let live = self.meter.live.get() + bytes;
        self.meter.live.set(live);
        self.meter.peak.set(self.meter.peak.get().max(live));
        let serial = self.meter.serial.get() + 1;
        self.meter.serial.set(serial);
        let allocation =
            Rc::new(Allocation { bytes, serial, meter: self.meter.clone(), bind_groups: self.bind_groups.clone() });
        Ok(Buffer { raw, len, allocation })
    }

    /// A buffer holding `data` (f32 or u32).
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T]) -> Result<Buffer, GpuError> {
        assert_eq!(std::mem::size_of::<T>(), 4, "Kiln buffers hold 4-byte elements");
        let buf = self.zeros(data.len())?;
        self.write(&buf, 0, data);
        Ok(buf)
    }

    /// Overwrites elements `offset..offset + data.len()` (ordered before the next submit).
    pub fn write<T: bytemuck::Pod>(&self, buf: &Buffer, offset: usize, data: &[T]) {
        assert!(offset + data.len() <= buf.len, "write past the end of a buffer");
        if !data.is_empty() {
            self.queue.write_buffer(&buf.raw, 4 * offset as u64, bytemuck::cast_slice(data));
        }
    }

    /// Reads a whole buffer back as f32.
    pub async fn read_f32(&self, buf: &Buffer) -> Result<Vec<f32>, GpuError> {
        Ok(bytemuck::cast_slice(&self.read_bytes(buf).await?).to_vec())
    }

    /// Reads a whole buffer back as u32.
    pub async fn read_u32(&self, buf: &Buffer) -> Result<Vec<u32>, GpuError> {
        Ok(bytemuck::cast_slice(&self.read_bytes(buf).await?).to_vec())
    }

    async fn read_bytes(&self, buf: &Buffer) -> Result<Vec<u8>, GpuError> {
        let bytes = 4 * buf.len as u64;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&buf.raw, 0, &staging, 0, bytes);
        self.queue.submit([encoder.finish()]);
        self.count_submit();
        let (sender, receiver) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |result| {
            let _ = sender.send(result);
        });
        // Natively nothing completes unless we poll; in the browser the JS event loop does it.
        #[cfg(not(target_arch = "wasm32"))]
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Readback(e.to_string()))?;
        let mapped = receiver.await.map_err(|_| GpuError::Readback("the map callback was dropped".into()))?;
        self.check_lost()?;
        mapped.map_err(|e| GpuError::Readback(e.to_string()))?;
        let data = staging.get_mapped_range(..).map_err(|e| GpuError::Readback(e.to_string()))?.to_vec();
        staging.unmap();
        Ok(data)
    }

    /// Waits until all submitted work has finished (native only; benchmarks use it).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&self) -> Result<(), GpuError> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map(|_| ()).map_err(|e| GpuError::Readback(e.to_string()))
    }

    /// Starts (or stops, returning the totals) timing every dispatch on its own.
    pub fn set_profiling(&self, on: bool) -> Option<KernelTimes> {
        std::mem::replace(&mut *self.profile.borrow_mut(), on.then(HashMap::new))
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn profiling(&self) -> bool {
        self.profile.borrow().is_some()
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn charge(&self, entry: &'static str, seconds: f64) {
        if let Some(map) = self.profile.borrow_mut().as_mut() {
            let e = map.entry(entry).or_default();
            e.0 += 1;
            e.1 += seconds;
        }
    }

    /// The `n`-th kept scratch buffer of `len` elements, made when first asked for. Past 64
    /// lengths (shapes that keep changing) the kept ones are let go.
    pub(crate) fn scratch(&self, len: usize, n: usize) -> Result<Buffer, GpuError> {
        if let Some(buf) = self.scratch.borrow().get(&len).and_then(|v| v.get(n)) {
            return Ok(buf.clone());
        }
        let buf = self.zeros(len)?;
        let mut pool = self.scratch.borrow_mut();
        if pool.len() >= 64 && !pool.contains_key(&len) {
            pool.clear();
        }
        let kept = pool.entry(len).or_default();
        if kept.len() == n {
            kept.push(buf.clone());
        }
        Ok(buf)
    }

    /// The bind group of one dispatch: params in a uniform buffer at binding 0, then the
    /// storage buffers; made once per distinct dispatch and reused.
    pub(crate) fn bind_group(
        &self,
        shader: Shader,
        entry: &'static str,
        pipeline: &wgpu::ComputePipeline,
        params: &[u8],
        buffers: &[(u32, &Buffer)],
    ) -> wgpu::BindGroup {
        use wgpu::util::DeviceExt;
        let key = BindingKey {
            shader,
            entry,
            params: params.to_vec(),
            buffers: buffers.iter().map(|&(binding, buf)| (binding, buf.allocation.serial)).collect(),
        };
        let mut cache = self.bind_groups.borrow_mut();
        if let Some(group) = cache.groups.get(&key) {
            return group.clone();
        }
        let keep = !cache.off;
        if cache.groups.len() >= BindGroupCache::MAX {
            cache.groups.clear();
            cache.by_buffer.clear();
        }
        let uniform = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(entry),
            contents: params,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
        for &(binding, buf) in buffers {
            entries.push(wgpu::BindGroupEntry { binding, resource: buf.raw.as_entire_binding() });
        }
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        cache.made += 1;
        if keep {
            for &(_, serial) in &key.buffers {
                cache.by_buffer.entry(serial).or_default().push(key.clone());
            }
            cache.groups.insert(key, group.clone());
        }
        group
    }

    /// The compute pipeline for `entry` in `shader`, compiled once and cached, with the
    /// shader's layout. Made only after the Rust parameter struct's `fields` are held against
    /// the WGSL `struct Params` (a mismatch is a bug in Kiln: it panics, naming the field).
    pub(crate) fn pipeline(&self, shader: Shader, entry: &'static str, fields: &[(&str, &str)]) -> Pipeline {
        if let Some(p) = self.pipelines.borrow().get(&(shader, entry)) {
            return p.clone();
        }
        let layout = Rc::new(shader.layout());
        if let Err(mismatch) = layout.check_params(entry, fields) {
            panic!("{mismatch}");
        }
        let mut modules = self.modules.borrow_mut();
        let module = modules.entry(shader).or_insert_with(|| {
            self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader.name),
                source: wgpu::ShaderSource::Wgsl(shader.source().into()),
            })
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        self.pipelines.borrow_mut().insert((shader, entry), (pipeline.clone(), layout.clone()));
        (pipeline, layout)
    }

    /// Whether `entry`'s pipeline has been made (and so its Params and bindings checked).
    pub fn has_pipeline(&self, shader: Shader, entry: &'static str) -> bool {
        self.pipelines.borrow().contains_key(&(shader, entry))
    }
}
