// Training throughput in the browser: the demo page's own Kiln API in headless Chromium,
// on WebGPU (SwiftShader here; tiny and small) and on the CPU backend in WebAssembly (tiny,
// small and base), each backend forced (?backend=gpu, ?backend=cpu). The CPU runs in each
// of its two WebAssembly builds (?simd=relaxed: relaxed SIMD; ?simd=simd128), on one
// worker and on its default of one per core (?threads=1 and none), back to back in one
// run; then the CPU's matrix products alone in each build (GFLOP/s on the shapes of the
// small and base presets' layers), what `auto` chose for each preset, and the size of
// each .wasm before and after gzip. 8 rows of the full context and a 512-token BPE
// vocabulary, as the native benchmark. Prints JSON.
//   node tests/bench/browser.mjs [--quick]   (--quick: tiny only)
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../www/serve.mjs';
import { launch } from '../browser/chromium.mjs';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const quick = process.argv.includes('--quick');
const presets = quick ? ['tiny'] : ['tiny', 'small', 'base'];
/** SwiftShader takes seconds a step at small size: base is left to the CPU. */
const GPU_PRESETS = ['tiny', 'small'];
const BUILDS = ['relaxed', 'simd128'];

async function open(browser, query) {
  const page = await browser.newPage();
  await page.goto(`${origin}/index.html${query}`);
  await page.waitForFunction(() => window.kilnApp?.ready || window.kilnApp?.error, null, { timeout: 120_000 });
  return page;
}

/** What `auto` chose for `preset` on this browser's adapter, with both timings. */
async function autoChoice(preset) {
  const browser = await launch({ webgpu: true });
  try {
    const page = await open(browser, '');
    return await page.evaluate(async (preset) => {
      const kiln = window.kilnApp.kiln;
      await kiln.useDefaultCorpus('en');
      await kiln.trainTokenizer(null, { kind: 'bpe', vocabSize: 512 });
      const started = performance.now();
      await kiln.createModel({ preset }, { batchSize: 8 });
      const b = kiln.backend;
      return { preset, chose: b.kind, gpu_tokens_per_s: b.gpuTokensPerS, cpu_tokens_per_s: b.cpuTokensPerS,
        software_adapter: b.software, seconds_to_choose_and_create: (performance.now() - started) / 1000, reason: b.reason };
    }, preset);
  } finally {
    await browser.close();
  }
}

async function measure(webgpu, preset, threads, simd) {
  const browser = await launch({ webgpu });
  try {
    const page = await browser.newPage();
    await page.goto(`${origin}/index.html?backend=${webgpu ? 'gpu' : 'cpu'}${threads ? `&threads=${threads}` : ''}${simd ? `&simd=${simd}` : ''}`);
    await page.waitForFunction(() => window.kilnApp?.ready || window.kilnApp?.error, null, { timeout: 120_000 });
    return await page.evaluate(async (preset) => {
      const kiln = window.kilnApp.kiln;
      await kiln.useDefaultCorpus('en');
      await kiln.trainTokenizer(null, { kind: 'bpe', vocabSize: 512 });
      const info = await kiln.createModel({ preset }, { steps: 1000, batchSize: 8, logEvery: 1, evalEvery: 100000, sampleEvery: 0 });
      const tokensPerStep = 8 * info.config.block_size;
      const minSeconds = preset === 'tiny' ? 10 : 20;
      const maxSteps = preset === 'base' ? 20 : 50;
      let start = null;
      let steps = 0;
      await kiln.pretrain({
        onProgress: (p) => {
          // every step reads its loss back, so each progress marks finished GPU work;
          // the first step (compiling pipelines) is not timed
          if (start === null) { start = performance.now(); return; }
          steps += 1;
          if ((performance.now() - start) / 1000 >= minSeconds || steps >= maxSteps) kiln.stop();
        },
      });
      const seconds = (performance.now() - start) / 1000;
      const b = kiln.backend;
      const cpu = b.kind === 'cpu';
      return { preset, backend: b.kind, adapter: b.adapter, threads: cpu ? b.threads : null, simd: cpu ? b.simd : null,
        cpu_kernel: cpu ? b.cpuKernel : null, params: info.params, steps_timed: steps, tokens_per_s: (steps * tokensPerStep) / seconds };
    }, preset);
  } finally {
    await browser.close();
  }
}

/** The CPU's matrix products alone in each build, on one thread: the small and base
 * presets' layer shapes (8 × 256 tokens; forward A·Wᵀ, the input gradient, the weight
 * gradient), GFLOP/s; and each build's step op by op (`profileCpuStep`). */
async function matmulByBuild() {
  const shapes = [[2048, 768, 256, 'nt'], [2048, 1536, 384, 'nt'], [2048, 384, 1536, 'nn'], [1536, 384, 2048, 'tn']];
  const browser = await launch({ webgpu: false });
  try {
    const page = await browser.newPage();
    await page.goto(`${origin}/index.html?backend=cpu`);
    const out = { matmul: [], profile: [] };
    const profilePresets = quick ? ['tiny'] : ['small', 'base'];
    for (const simd of BUILDS) {
      const timed = await page.evaluate(async ({ simd, shapes }) => {
        const { wasm } = await (await import('/lib/wasm.js')).loadWasm(simd);
        return shapes.map(([m, n, k, form]) => ({ m, n, k, form, ...wasm.benchCpuMatmul(m, n, k, form, 2000) }));
      }, { simd, shapes });
      for (const t of timed) console.error(`browser matmul ${simd} ${t.m}×${t.n}×${t.k} ${t.form}: ${t.gflops.toFixed(1)} GFLOP/s`);
      out.matmul.push(...timed.map((t) => ({ simd, ...t })));
      // where a whole step's time goes in this build, op by op (one worker, 2 steps)
      for (const preset of profilePresets) {
        const ops = await page.evaluate(async ({ simd, preset }) => {
          const { wasm } = await (await import('/lib/wasm.js')).loadWasm(simd);
          return wasm.profileCpuStep(preset, 2);
        }, { simd, preset });
        const total = ops.reduce((sum, o) => sum + o.seconds, 0);
        out.profile.push({ simd, preset, steps: 2, seconds: total, ops: ops.map((o) => ({ ...o, share: o.seconds / total })) });
      }
    }
    return out;
  } finally {
    await browser.close();
  }
}

const server = await startServer(path.join(ROOT, 'www'), 0);
const origin = `http://127.0.0.1:${server.address().port}`;
const results = [];
const auto = [];
for (const preset of presets) {
  if (GPU_PRESETS.includes(preset)) results.push(await measure(true, preset));
  for (const threads of [1, undefined]) {
    for (const simd of BUILDS) results.push(await measure(false, preset, threads, simd));
  }
  for (const r of results.filter((r) => r.preset === preset)) {
    console.error(`browser ${r.backend}${r.simd ? ` ${r.simd}` : ''}${r.threads ? ` (${r.threads} threads)` : ''} ${preset}: ${r.tokens_per_s.toFixed(0)} tokens/s`);
  }
  if (GPU_PRESETS.includes(preset)) {
    const a = await autoChoice(preset);
    console.error(`browser auto ${preset}: ${a.chose} (${a.reason})`);
    auto.push(a);
  }
}
// relaxed SIMD over SIMD128, each preset and thread count, from the runs above
const relaxedOverSimd128 = results.filter((r) => r.simd === 'relaxed').map((r) => {
  const other = results.find((o) => o.simd === 'simd128' && o.preset === r.preset && o.threads === r.threads);
  return { preset: r.preset, threads: r.threads, relaxed_tokens_per_s: r.tokens_per_s, simd128_tokens_per_s: other.tokens_per_s,
    relaxed_over_simd128: r.tokens_per_s / other.tokens_per_s };
});
const { matmul, profile } = await matmulByBuild();
server.close();
const wasmSize = (file) => {
  const bytes = fs.readFileSync(path.join(ROOT, 'www', 'pkg', file));
  return { bytes: bytes.length, gzip_bytes: zlib.gzipSync(bytes, { level: 9 }).length };
};
console.log(JSON.stringify({
  benchmark: 'browser_train',
  browser: 'headless Chromium (Debian), WebGPU on SwiftShader; CPU backend in WebAssembly (relaxed SIMD or SIMD128: 4 f32 lanes), one worker per thread',
  wasm: { simd128: wasmSize('kiln_bg.wasm'), relaxed: wasmSize('relaxed/kiln_bg.wasm') },
  results,
  relaxed_over_simd128: relaxedOverSimd128,
  matmul,
  profile,
  auto,
}, null, 2));
