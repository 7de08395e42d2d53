//! The `#[wasm_bindgen]` surface, and nothing else.

use std::cell::RefCell;
use std::rc::Rc;

use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::gpu::Gpu;
use crate::selftest::{self, Check};

thread_local! {
    /// One device per worker, opened on first use.
    static GPU: RefCell<Option<Rc<Gpu>>> = const { RefCell::new(None) };
}

fn js_error(e: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
}

async fn gpu() -> Result<Rc<Gpu>, JsValue> {
    if let Some(gpu) = GPU.with(|g| g.borrow().clone()) {
        return Ok(gpu);
    }
    let gpu = Rc::new(Gpu::new().await.map_err(js_error)?);
    GPU.with(|g| *g.borrow_mut() = Some(gpu.clone()));
    Ok(gpu)
}

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// The adapter's name, e.g. "google/swiftshader (BrowserWebGpu)"; opens the device.
#[wasm_bindgen(js_name = adapterName)]
pub async fn adapter_name() -> Result<String, JsValue> {
    Ok(gpu().await?.adapter_name())
}

/// The kernel families of the self-test, in order.
#[wasm_bindgen(js_name = kernelFamilies)]
pub fn kernel_families() -> Vec<String> {
    selftest::FAMILIES.iter().map(|f| f.to_string()).collect()
}

#[derive(Serialize)]
struct CheckResult {
    kernel: &'static str,
    case: String,
    max_rel_err: f64,
    tolerance: f64,
    passed: bool,
}

impl From<Check> for CheckResult {
    fn from(c: Check) -> Self {
        CheckResult {
            passed: c.passed(),
            kernel: c.kernel,
            case: c.case,
            max_rel_err: c.max_rel_err,
            tolerance: c.tolerance,
        }
    }
}

/// Runs one family of kernel-vs-CPU-twin checks on this browser's WebGPU adapter:
/// an array of `{kernel, case, max_rel_err, tolerance, passed}`.
#[wasm_bindgen(js_name = checkKernels)]
pub async fn check_kernels(family: String) -> Result<JsValue, JsValue> {
    if !selftest::FAMILIES.contains(&family.as_str()) {
        return Err(js_error(format!("unknown kernel family {family:?}")));
    }
    let gpu = gpu().await?;
    let checks = selftest::check_family(&gpu, &family).await.map_err(js_error)?;
    let results: Vec<CheckResult> = checks.into_iter().map(CheckResult::from).collect();
    serde_wasm_bindgen::to_value(&results).map_err(js_error)
}
