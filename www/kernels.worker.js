// The kernel check runs here, off the page's thread, as Kiln's trainer will.
import { loadWasm } from './lib/wasm.js';
import { adapterDescription } from './lib/adapter.js';

async function run() {
  // the build the page's worker would take (relaxed SIMD where the browser has it): the
  // matmul family's CPU cases run on its kernels
  const { wasm: { adapterName, kernelFamilies, checkKernels } } = await loadWasm();
  const inWorker = typeof WorkerGlobalScope !== 'undefined' && self instanceof WorkerGlobalScope;
  const opened = await adapterName(); // opens Kiln's device; fails clearly without WebGPU
  const described = await adapterDescription();
  postMessage({ type: 'adapter', name: `${described} ${opened}`.trim(), inWorker });
  // the families are the core's own list (crate/gpu/mod.rs), not one kept here
  const families = kernelFamilies();
  postMessage({ type: 'families', families });
  for (const family of families) {
    postMessage({ type: 'family', family, checks: await checkKernels(family) });
  }
  postMessage({ type: 'done' });
}

run().catch((error) => postMessage({ type: 'error', message: String(error?.message ?? error) }));
