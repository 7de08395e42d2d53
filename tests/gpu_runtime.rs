//! The runtime around the kernels: limits named in errors, oversize buffers refused,
//! readback, and reductions that give the same bits on every run.

use kiln::gpu::{self, Gpu, GpuError};
use kiln::rng::Rng;
use pollster::block_on;

fn gpu() -> Gpu {
    block_on(Gpu::new()).expect("a GPU adapter (install mesa-vulkan-drivers for lavapipe)")
}

#[test]
fn an_adapter_below_the_kernels_needs_is_refused_by_name() {
    let mut weak = wgpu::Limits::downlevel_defaults();
    weak.max_storage_buffers_per_shader_stage = 4; // WebGPU's floor is 8; layernorm binds 6
    let err = kiln::gpu::required_limits(&weak).unwrap_err();
    assert_eq!(err, GpuError::LimitTooLow { limit: "maxStorageBuffersPerShaderStage", needed: 6, available: 4 });
    let message = err.to_string();
    println!("{message}");
    assert!(message.contains("maxStorageBuffersPerShaderStage") && message.contains('6'));

    let mut small_workgroups = wgpu::Limits::downlevel_defaults();
    small_workgroups.max_storage_buffers_per_shader_stage = 8;
    small_workgroups.max_compute_invocations_per_workgroup = 128;
    let err = kiln::gpu::required_limits(&small_workgroups).unwrap_err();
    assert!(err.to_string().contains("maxComputeInvocationsPerWorkgroup"), "{err}");
}

#[test]
fn the_device_gets_what_the_kernels_need() {
    let gpu = gpu();
    println!("adapter: {}", gpu.adapter_name());
    let limits = gpu.limits();
    assert!(limits.max_storage_buffers_per_shader_stage >= 6);
    assert!(limits.max_compute_workgroup_storage_size >= 8192);
    assert!(limits.max_compute_invocations_per_workgroup >= 256);
}

#[test]
fn a_buffer_larger_than_the_device_allows_is_a_clear_error() {
    let gpu = gpu();
    let max = gpu.limits().max_storage_buffer_binding_size.min(gpu.limits().max_buffer_size);
    let err = gpu.zeros((max / 4 + 1) as usize).unwrap_err();
    println!("{err}");
    assert!(matches!(err, GpuError::BufferTooLarge { .. }));
    assert!(err.to_string().contains("MiB"), "{err}");
}

#[test]
fn upload_and_readback_round_trip_f32_and_u32() {
    let gpu = gpu();
    let floats: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 7.0).collect();
    let ints: Vec<u32> = (0..1000).map(|i| i * 7919).collect();
    let (f, u) = (gpu.upload(&floats).unwrap(), gpu.upload(&ints).unwrap());
    assert_eq!(block_on(gpu.read_f32(&f)).unwrap(), floats);
    assert_eq!(block_on(gpu.read_u32(&u)).unwrap(), ints);
    gpu.write(&f, 10, &[42.0f32, 43.0]);
    let back = block_on(gpu.read_f32(&f)).unwrap();
    assert_eq!(&back[9..13], &[floats[9], 42.0, 43.0, floats[12]]);
}

#[test]
fn reductions_are_bitwise_deterministic() {
    // Sums without float atomics run in a fixed order: the same inputs give the same bits.
    let gpu = gpu();
    let rng = &mut Rng::new(9);
    let (n, c) = (1000, 96);
    let inp = gpu.upload(&rng.vec_f32(n * c, -1.0, 1.0)).unwrap();
    let dout = gpu.upload(&rng.vec_f32(n * c, -1.0, 1.0)).unwrap();
    let params = gpu.upload(&rng.vec_f32(2 * c, -1.0, 1.0)).unwrap();
    let tokens: Vec<u32> = (0..n).map(|_| rng.below(7) as u32).collect();
    let run = || {
        let (out, mean, rstd) = (gpu.zeros(n * c).unwrap(), gpu.zeros(n).unwrap(), gpu.zeros(n).unwrap());
        // grads: LayerNorm weight and bias (2C), then wte (7 tokens × C), then wpe (10 × C)
        let (dinp, grads, norm) = (gpu.zeros(n * c).unwrap(), gpu.zeros(19 * c).unwrap(), gpu.zeros(2).unwrap());
        let mut b = gpu.begin();
        let buckets = gpu::embedding::TokenBuckets::new(&mut b, &tokens).unwrap();
        gpu::layernorm::layernorm_forward(&mut b, &out, &mean, &rstd, &inp, params.at(0), params.at(c), n, c);
        gpu::layernorm::layernorm_backward(
            &mut b,
            &dinp,
            grads.at(0),
            grads.at(c),
            &dout,
            &inp,
            params.at(0),
            &mean,
            &rstd,
            n,
            c,
        )
        .unwrap();
        // the n positions as B = 100 sequences of T = 10
        gpu::embedding::embedding_backward(&mut b, grads.at(2 * c), Some(grads.at(9 * c)), &dout, &buckets, 100, 10, c)
            .unwrap();
        gpu::grad_norm::grad_norm(&mut b, &norm, grads.view(), grads.len(), 1.0).unwrap();
        gpu.submit(b);
        (block_on(gpu.read_f32(&grads)).unwrap(), block_on(gpu.read_f32(&norm)).unwrap())
    };
    let (first, second) = (run(), run());
    assert_eq!(
        first.0.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        second.0.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(first.1[0].to_bits(), second.1[0].to_bits());
    assert!(first.1[0] > 0.0);
}
