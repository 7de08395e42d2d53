// Browsers leave wgpu's adapter name empty (wgpu reads only the often-blank
// `description`); WebGPU's own adapter info names the vendor and architecture too.

/** Software rasterisers: WebGPU that works, on the CPU; never to be called a GPU. */
const SOFTWARE = /swiftshader|llvmpipe|lavapipe|softpipe|warp|basic render|software/i;

/** {description: e.g. "google swiftshader", software: true}, or null without WebGPU. */
export async function describeAdapter() {
  const adapter = await navigator.gpu?.requestAdapter();
  const info = adapter?.info;
  if (!info) return null;
  const description = [info.vendor, info.architecture, info.description].filter(Boolean).join(' ');
  const fallback = Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter);
  return { description, software: fallback || SOFTWARE.test(description) };
}

/** e.g. "google swiftshader", or '' without WebGPU. */
export async function adapterDescription() {
  return (await describeAdapter())?.description ?? '';
}
