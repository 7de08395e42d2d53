// Training throughput in the browser: the demo page's own Kiln API in headless Chromium,
// on WebGPU (SwiftShader here) and on the CPU backend in WebAssembly, for the tiny and
// small presets (8 rows of the full context, 512-token BPE vocabulary, as the native
// benchmark), each backend forced (?backend=gpu, ?backend=cpu, the CPU on one worker and
// on its default of one per core: ?threads=1 and none); then what `auto` chose
// for each preset and both of its figures. Also the size of the .wasm before and after
// gzip. Prints JSON.
//   node tests/bench/browser.mjs [--quick]   (--quick: tiny only)
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../www/serve.mjs';
import { launch } from '../browser/chromium.mjs';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const presets = process.argv.includes('--quick') ? ['tiny'] : ['tiny', 'small'];

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

async function measure(webgpu, preset, threads) {
  const browser = await launch({ webgpu });
  try {
    const page = await browser.newPage();
    await page.goto(`${origin}/index.html?backend=${webgpu ? 'gpu' : 'cpu'}${threads ? `&threads=${threads}` : ''}`);
    await page.waitForFunction(() => window.kilnApp?.ready || window.kilnApp?.error, null, { timeout: 120_000 });
    return await page.evaluate(async (preset) => {
      const kiln = window.kilnApp.kiln;
      await kiln.useDefaultCorpus('en');
      await kiln.trainTokenizer(null, { kind: 'bpe', vocabSize: 512 });
      const info = await kiln.createModel({ preset }, { steps: 1000, batchSize: 8, logEvery: 1, evalEvery: 100000, sampleEvery: 0 });
      const tokensPerStep = 8 * info.config.block_size;
      const minSeconds = preset === 'tiny' ? 10 : 20;
      let start = null;
      let steps = 0;
      await kiln.pretrain({
        onProgress: (p) => {
          // every step reads its loss back, so each progress marks finished GPU work;
          // the first step (compiling pipelines) is not timed
          if (start === null) { start = performance.now(); return; }
          steps += 1;
          if ((performance.now() - start) / 1000 >= minSeconds || steps >= 50) kiln.stop();
        },
      });
      const seconds = (performance.now() - start) / 1000;
      const b = kiln.backend;
      return { preset, backend: b.kind, adapter: b.adapter, threads: b.kind === 'cpu' ? b.threads : null, params: info.params, steps_timed: steps, tokens_per_s: (steps * tokensPerStep) / seconds };
    }, preset);
  } finally {
    await browser.close();
  }
}

const server = await startServer(path.join(ROOT, 'www'), 0);
const origin = `http://127.0.0.1:${server.address().port}`;
const results = [];
const auto = [];
for (const preset of presets) {
  for (const [webgpu, threads] of [[true], [false, 1], [false]]) {
    const r = await measure(webgpu, preset, threads);
    console.error(`browser ${r.backend}${r.threads ? ` (${r.threads} threads)` : ''} ${preset}: ${r.tokens_per_s.toFixed(0)} tokens/s`);
    results.push(r);
  }
  const a = await autoChoice(preset);
  console.error(`browser auto ${preset}: ${a.chose} (${a.reason})`);
  auto.push(a);
}
server.close();
const wasm = fs.readFileSync(path.join(ROOT, 'www', 'pkg', 'kiln_bg.wasm'));
console.log(JSON.stringify({
  benchmark: 'browser_train',
  browser: 'headless Chromium (Debian), WebGPU on SwiftShader; CPU backend in WebAssembly with SIMD128, one worker per thread',
  wasm_bytes: wasm.length,
  wasm_gzip_bytes: zlib.gzipSync(wasm, { level: 9 }).length,
  results,
  auto,
}, null, 2));
