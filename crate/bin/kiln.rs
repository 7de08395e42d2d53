//! The Kiln command line.
//!
//!   kiln info                   the GPU adapter and the limits Kiln gets from it
//!   kiln bench matmul [--quick] matmul GFLOP/s as JSON: tiled WGSL, naive WGSL, CPU twin

use std::process::ExitCode;

use kiln::gpu::Gpu;

const USAGE: &str = "usage:
  kiln info                     show the GPU adapter and its limits
  kiln bench matmul [--quick]   matmul GFLOP/s (tiled WGSL, naive WGSL, CPU) as JSON;
                                --quick times only the three square sizes";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["info"] => info(),
        ["bench", "matmul"] => bench_matmul(false),
        ["bench", "matmul", "--quick"] => bench_matmul(true),
        ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown command {:?}\n{USAGE}", args.join(" "))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open_gpu() -> Result<Gpu, String> {
    pollster::block_on(Gpu::new()).map_err(|e| e.to_string())
}

fn info() -> Result<(), String> {
    let gpu = open_gpu()?;
    let l = gpu.limits();
    println!("adapter: {}", gpu.adapter_name());
    println!(
        "max storage buffer binding: {} MiB",
        l.max_storage_buffer_binding_size >> 20
    );
    println!("max buffer size: {} MiB", l.max_buffer_size >> 20);
    println!(
        "storage buffers per shader stage: {}",
        l.max_storage_buffers_per_shader_stage
    );
    println!(
        "workgroup storage: {} bytes",
        l.max_compute_workgroup_storage_size
    );
    println!(
        "invocations per workgroup: {}",
        l.max_compute_invocations_per_workgroup
    );
    Ok(())
}

fn bench_matmul(quick: bool) -> Result<(), String> {
    let gpu = open_gpu()?;
    let report = kiln::bench::bench_matmul(&gpu, quick.then_some(3), |s| eprintln!("timing {s}"))
        .map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
    );
    Ok(())
}
