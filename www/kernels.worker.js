// The kernel check runs here, off the page's thread, as Kiln's trainer will.
import init, { adapterName, kernelFamilies, checkKernels } from './pkg/kiln.js';

async function run() {
  await init();
  const inWorker = typeof WorkerGlobalScope !== 'undefined' && self instanceof WorkerGlobalScope;
  const opened = await adapterName(); // opens Kiln's device; fails clearly without WebGPU
  // Browsers may leave wgpu's adapter name empty; WebGPU's adapter info says more.
  const info = (await navigator.gpu.requestAdapter())?.info;
  const described = info ? [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') : '';
  postMessage({ type: 'adapter', name: `${described} ${opened}`.trim(), inWorker });
  for (const family of kernelFamilies()) {
    postMessage({ type: 'family', family, checks: await checkKernels(family) });
  }
  postMessage({ type: 'done' });
}

run().catch((error) => postMessage({ type: 'error', message: String(error?.message ?? error) }));
