// Browsers leave wgpu's adapter name empty (wgpu reads only the often-blank
// `description`); WebGPU's own adapter info names the vendor and architecture too.
/** e.g. "google swiftshader", or '' without WebGPU. */
export async function adapterDescription() {
  const info = (await navigator.gpu?.requestAdapter())?.info;
  return info ? [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') : '';
}
