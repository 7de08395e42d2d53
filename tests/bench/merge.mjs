// Joins the benchmark parts in a folder into one JSON document with the ratios:
// Kiln's tokens/s over PyTorch's for each preset and backend, op by op too, the browser's
// over native and relaxed SIMD's over SIMD128, and device memory measured over the
// estimate. Usage: node tests/bench/merge.mjs target/bench
import fs from 'node:fs';
import path from 'node:path';

const dir = process.argv[2] ?? 'target/bench';
const read = (name) => {
  const file = path.join(dir, name);
  return fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : null;
};
const matmul = read('matmul.json');
const train = read('train.json');
const torch = read('torch.json');
const browser = read('browser.json');
const align = read('align.json');
const profile = read('profile.json');

const torchRate = new Map((torch?.results ?? []).map((r) => [r.preset, r.tokens_per_s]));
const training = (train?.results ?? []).map((r) => ({
  preset: r.preset,
  backend: r.backend,
  params: r.params,
  tokens_per_s: r.tokens_per_s,
  sft_tokens_per_s: r.sft_tokens_per_s,
  sft_over_pretrain: r.sft_tokens_per_s / r.tokens_per_s,
  torch_tokens_per_s: torchRate.get(r.preset) ?? null,
  kiln_over_torch: torchRate.has(r.preset) ? r.tokens_per_s / torchRate.get(r.preset) : null,
  memory_estimate_mib: r.memory_estimate_bytes / 2 ** 20,
  memory_peak_mib: r.memory_peak_bytes == null ? null : r.memory_peak_bytes / 2 ** 20,
  dispatches_per_step: r.dispatches_per_step ?? null,
  record_ms_per_step: r.record_ms_per_step ?? null,
  record_ms_per_step_without_reuse: r.record_ms_per_step_without_reuse ?? null,
  recording_cheaper_by: r.record_ms_per_step ? r.record_ms_per_step_without_reuse / r.record_ms_per_step : null,
  measured_over_estimate: r.memory_peak_bytes == null ? null : r.memory_peak_bytes / r.memory_estimate_bytes,
}));

const nativeRate = new Map((train?.results ?? []).map((r) => [`${r.preset}/${r.backend}`, r.tokens_per_s]));
// the browser's CPU (4 wasm lanes) against the native one (8 lanes with AVX2, 16 with
// AVX-512): each side's kernels named, as the bound differs
const nativeKernel = train?.cpu_kernel ?? null;
// the CPU's vector instruction sets, which bound every figure here (Linux only)
const instructionSets = (() => {
  try {
    const flags = fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)[1].trim().split(/\s+/);
    return flags.filter((f) => /^(sse4_2|avx|avx2|fma|avx512\w*|avx_vnni|amx\w*|neon|asimd)$/.test(f));
  } catch {
    return null;
  }
})();
const inBrowser = browser && {
  browser: browser.browser,
  wasm: browser.wasm,
  results: browser.results.map((r) => {
    const native = nativeRate.get(`${r.preset}/${r.backend}`) ?? null;
    return { preset: r.preset, backend: r.backend, adapter: r.adapter, threads: r.threads ?? null, simd: r.simd ?? null,
      tokens_per_s: r.tokens_per_s, native_tokens_per_s: native, browser_over_native: native ? r.tokens_per_s / native : null,
      browser_kernel: r.cpu_kernel ?? null, native_kernel: r.backend === 'cpu' ? nativeKernel : null };
  }),
  relaxed_over_simd128: browser.relaxed_over_simd128 ?? null,
  matmul: browser.matmul ?? null,
  profile: browser.profile ?? null,
  auto: browser.auto ?? null,
};

console.log(JSON.stringify({
  machine: { adapter: train?.adapter ?? matmul?.adapter, cpu: train?.cpu ?? matmul?.cpu, cpu_threads: train?.cpu_threads, cpu_kernel: nativeKernel, instruction_sets: instructionSets },
  torch: torch ? { version: torch.torch, threads: torch.threads } : null,
  training,
  browser: inBrowser,
  // Kiln's CPU backend and PyTorch op by op (tests/bench/profile.sh): seconds over 3 steps
  // each side and PyTorch ÷ Kiln per op (above 1: Kiln is faster at that op)
  op_by_op: profile,
  align: align && align.results.map((r) => ({ ...r, batched_over_one_row: r.rollout_tokens_per_s_batched / r.rollout_tokens_per_s_one_row })),
  matmul: matmul && {
    geomean_tiled_over_naive: matmul.geomean_tiled_over_naive,
    geomean_tiled_over_cpu: matmul.geomean_tiled_over_cpu,
    results: matmul.results,
  },
}, null, 2));
