//! Matmul throughput: the tiled WGSL kernel, the naive one-invocation-per-output WGSL
//! kernel and the CPU twin, on the same machine in one run. Native only (it needs a
//! clock and a blocking wait); `kiln bench matmul` prints the JSON.

use serde::Serialize;

use crate::cpu::matmul::MatmulShape;

/// A named product to time.
#[derive(Clone, Debug, Serialize)]
pub struct BenchShape {
    pub name: String,
    pub form: &'static str,
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    #[serde(skip)]
    pub shape: MatmulShape,
}

fn named(name: &str, form: &'static str, shape: MatmulShape) -> BenchShape {
    BenchShape {
        name: name.to_string(),
        form,
        batch: shape.batch,
        m: shape.m,
        n: shape.n,
        k: shape.k,
        shape,
    }
}

/// Square products 256³, 512³, 1024³, then every linear-layer product of one GPT block
/// with C = 384, T = 256, B = 8 (B·T = 2048 rows): forward Y = X·Wᵀ, input gradient
/// dX = dY·W and weight gradient dW = dYᵀ·X for the QKV, attention-output, MLP-up and
/// MLP-down projections.
pub fn matmul_shapes() -> Vec<BenchShape> {
    let mut shapes: Vec<BenchShape> = [256, 512, 1024]
        .iter()
        .map(|&s| named(&format!("square {s}"), "A·B", MatmulShape::nn(s, s, s)))
        .collect();
    let (c, rows) = (384, 8 * 256);
    for (layer, inp, out) in [
        ("qkv", c, 3 * c),
        ("attn_proj", c, c),
        ("mlp_fc", c, 4 * c),
        ("mlp_proj", 4 * c, c),
    ] {
        shapes.push(named(
            &format!("{layer} forward"),
            "A·Bᵀ",
            MatmulShape::nt(rows, out, inp),
        ));
        shapes.push(named(
            &format!("{layer} d_input"),
            "A·B",
            MatmulShape::nn(rows, inp, out),
        ));
        shapes.push(named(
            &format!("{layer} d_weight"),
            "Aᵀ·B",
            MatmulShape::tn(out, inp, rows),
        ));
    }
    shapes
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::*;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::time::Instant;

    use serde::Serialize;

    use super::{matmul_shapes, BenchShape};
    use crate::cpu;
    use crate::gpu::{self, Gpu, GpuError};
    use crate::rng::Rng;
    use crate::selftest::max_rel_err;

    /// GFLOP/s of each implementation on one shape, and how the tiled kernel compares.
    #[derive(Debug, Serialize)]
    pub struct MatmulResult {
        #[serde(flatten)]
        pub shape: BenchShape,
        pub gflops_tiled: f64,
        pub gflops_naive: f64,
        pub gflops_cpu: f64,
        pub tiled_over_naive: f64,
        pub tiled_over_cpu: f64,
        /// max |tiled − cpu| / max |cpu|: the benchmark also checks what it times.
        pub tiled_max_rel_err: f64,
    }

    #[derive(Debug, Serialize)]
    pub struct MatmulReport {
        pub benchmark: &'static str,
        pub adapter: String,
        pub cpu: String,
        pub cpu_threads: usize,
        pub cpu_twin: &'static str,
        pub results: Vec<MatmulResult>,
        pub geomean_tiled_over_naive: f64,
        pub geomean_tiled_over_cpu: f64,
    }

    /// Seconds a measurement should last at least, so timer and submit overheads vanish.
    const MIN_SECONDS: f64 = 0.3;

    fn cpu_model() -> String {
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string())
    }

    /// Seconds per product on the GPU: one warm-up (compiles the pipeline), then enough
    /// dispatches in one submit to last MIN_SECONDS.
    fn time_gpu(
        gpu: &Gpu,
        naive: bool,
        out: &gpu::Buffer,
        a: &gpu::Buffer,
        b: &gpu::Buffer,
        s: &BenchShape,
    ) -> Result<f64, GpuError> {
        let kernel = if naive {
            gpu::matmul::matmul_naive
        } else {
            gpu::matmul::matmul
        };
        let run = |reps: usize| -> Result<f64, GpuError> {
            let start = Instant::now();
            let mut batch = gpu.begin();
            for _ in 0..reps {
                kernel(
                    &mut batch,
                    out.view(),
                    a.view(),
                    b.view(),
                    None,
                    s.shape,
                    false,
                );
            }
            gpu.submit(batch);
            gpu.wait()?;
            Ok(start.elapsed().as_secs_f64())
        };
        let once = run(1)?;
        let reps = ((MIN_SECONDS / once).ceil() as usize).clamp(1, 50);
        Ok(run(reps)? / reps as f64)
    }

    fn time_cpu(out: &mut [f32], a: &[f32], b: &[f32], s: &BenchShape) -> f64 {
        let mut reps = 0;
        let start = Instant::now();
        while reps == 0 || start.elapsed().as_secs_f64() < MIN_SECONDS {
            cpu::matmul::matmul(out, a, b, None, s.shape, false);
            reps += 1;
        }
        start.elapsed().as_secs_f64() / reps as f64
    }

    /// Times every shape of [`matmul_shapes`] (or the first `limit`) three ways.
    pub fn bench_matmul(
        gpu: &Gpu,
        limit: Option<usize>,
        progress: impl Fn(&str),
    ) -> Result<MatmulReport, GpuError> {
        let rng = &mut Rng::new(42);
        let mut results = Vec::new();
        for s in matmul_shapes()
            .into_iter()
            .take(limit.unwrap_or(usize::MAX))
        {
            progress(&format!(
                "{} ({} M={} N={} K={})",
                s.name, s.form, s.m, s.n, s.k
            ));
            let a = rng.vec_f32(s.shape.a_len(), -1.0, 1.0);
            let b = rng.vec_f32(s.shape.b_len(), -1.0, 1.0);
            let (ga, gb, gout) = (
                gpu.upload(&a)?,
                gpu.upload(&b)?,
                gpu.zeros(s.shape.out_len())?,
            );
            let tiled = time_gpu(gpu, false, &gout, &ga, &gb, &s)?;
            let tiled_out = pollster::block_on(gpu.read_f32(&gout))?;
            let naive = time_gpu(gpu, true, &gout, &ga, &gb, &s)?;
            let mut cpu_out = vec![0.0f32; s.shape.out_len()];
            let cpu = time_cpu(&mut cpu_out, &a, &b, &s);
            let reference: Vec<f64> = cpu_out.iter().map(|&x| x as f64).collect();
            let flops = s.shape.flops() / 1e9;
            results.push(MatmulResult {
                gflops_tiled: flops / tiled,
                gflops_naive: flops / naive,
                gflops_cpu: flops / cpu,
                tiled_over_naive: naive / tiled,
                tiled_over_cpu: cpu / tiled,
                tiled_max_rel_err: max_rel_err(&tiled_out, &reference),
                shape: s,
            });
        }
        let geomean = |f: &dyn Fn(&MatmulResult) -> f64| {
            (results.iter().map(|r| f(r).ln()).sum::<f64>() / results.len().max(1) as f64).exp()
        };
        Ok(MatmulReport {
            benchmark: "matmul",
            adapter: gpu.adapter_name(),
            cpu: cpu_model(),
            cpu_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_twin: "crate/cpu/matmul.rs, one thread, f32",
            geomean_tiled_over_naive: geomean(&|r| r.tiled_over_naive),
            geomean_tiled_over_cpu: geomean(&|r| r.tiled_over_cpu),
            results,
        })
    }
}
