// The CPU backend's two WebAssembly builds in Chromium: relaxed SIMD (the matrix products
// on f32x4.relaxed_madd) and SIMD128 alone. Each build's fast products (matrix products in
// every form, past every block of the packed kernel, and attention forward and backward)
// are held to the f64 twins; the page takes relaxed SIMD where the browser has it and says
// so in its badge, ?simd=simd128 forces the other build (a build that does not exist is
// refused in the badge), and both train in the page, their helper workers on the same build.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, watchRequests, serveWww, isLocal } from './chromium.mjs';

const site = serveWww();
const waitFor = (page, fn, arg, timeout = 600_000) => page.waitForFunction(fn, arg, { timeout, polling: 250 });

test('both WebAssembly builds: their CPU kernels match the twins in Chromium', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const page = await browser.newPage();
    await page.goto(`${site.origin}/index.html?backend=cpu`);
    await waitFor(page, () => window.kilnApp?.ready || window.kilnApp?.error);
    const relaxedHere = await page.evaluate(async () => (await import('/lib/wasm.js')).hasRelaxedSimd());
    assert.equal(relaxedHere, true, 'this Chromium validates f32x4.relaxed_madd');
    for (const simd of ['relaxed', 'simd128']) {
      const { kernel, checks } = await page.evaluate(async (simd) => {
        const { loadWasm } = await import('/lib/wasm.js');
        const { wasm } = await loadWasm(simd);
        return { kernel: wasm.cpuKernel(), checks: wasm.checkCpuKernels() };
      }, simd);
      console.log(`${simd}: ${kernel}`);
      for (const c of checks) {
        console.log(`  ${c.passed ? 'ok  ' : 'FAIL'} ${c.kernel.padEnd(30)} ${c.case.padEnd(36)} max rel err ${c.max_rel_err.toExponential(2)}`);
      }
      assert.match(kernel, simd === 'relaxed' ? /relaxed SIMD \(f32x4\.relaxed_madd/ : /SIMD128 \(f32x4\.mul then f32x4\.add/);
      assert.ok(checks.length >= 30, `only ${checks.length} checks ran`);
      assert.ok(checks.some((c) => c.kernel.startsWith('attention_backward_gemm')), 'attention backward unchecked');
      const failed = checks.filter((c) => !c.passed);
      assert.deepEqual(failed, [], `${failed.length} of ${checks.length} checks failed in the ${simd} build`);
    }
  } finally {
    await browser.close();
  }
});

test('the page takes relaxed SIMD and says so; ?simd=simd128 forces the other build; both train on two workers', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const losses = {};
    for (const simd of ['relaxed', 'simd128']) {
      const page = await browser.newPage();
      const requests = watchRequests(page);
      await page.goto(`${site.origin}/index.html?backend=cpu&threads=2${simd === 'simd128' ? '&simd=simd128' : ''}`);
      await waitFor(page, () => window.kilnApp?.ready || window.kilnApp?.error);
      assert.equal(await page.evaluate(() => window.kilnApp.error), null);
      const backend = await page.evaluate(() => window.kilnApp.backend);
      assert.equal(backend.simd, simd);
      assert.equal(backend.threads, 2);
      assert.match(backend.cpuKernel, simd === 'relaxed' ? /relaxed_madd/ : /f32x4\.mul/);
      assert.match(await page.textContent('#backend'), simd === 'relaxed' ? /WebAssembly with relaxed SIMD/ : /WebAssembly with SIMD128/);
      // three shared steps of the tiny preset: the helper loads the worker's build
      losses[simd] = await page.evaluate(async () => {
        const kiln = window.kilnApp.kiln;
        await kiln.useDefaultCorpus('en');
        await kiln.trainTokenizer(null, { kind: 'bpe', vocabSize: 512 });
        await kiln.createModel({ preset: 'tiny' }, { steps: 3, batchSize: 4, logEvery: 1, evalEvery: 1000, sampleEvery: 0 });
        const seen = [];
        await kiln.pretrain({ onProgress: (p) => seen.push(p.loss) });
        return seen;
      });
      assert.equal(losses[simd].length, 3, JSON.stringify(losses[simd]));
      assert.ok(losses[simd].every(Number.isFinite));
      assert.deepEqual(requests.filter((url) => !isLocal(site, url)), []);
      await page.close();
    }
    console.log(`losses, relaxed: ${losses.relaxed.join(', ')}; simd128: ${losses.simd128.join(', ')}`);
    // a build that does not exist: refused by name, in the badge where the build is named
    const page = await browser.newPage();
    await page.goto(`${site.origin}/index.html?backend=cpu&simd=simd256`);
    await waitFor(page, () => window.kilnApp?.ready || document.getElementById('backend').classList.contains('error'));
    assert.match(await page.evaluate(() => window.kilnApp.error), /simd "simd256": choose relaxed or simd128/);
    assert.match(await page.textContent('#backend'), /Kiln could not start: simd "simd256": choose relaxed or simd128/);
    await page.close();
    // the same model and data: the builds differ only in how the products round
    losses.relaxed.forEach((l, i) => assert.ok(Math.abs(l - losses.simd128[i]) < 1e-3, `step ${i + 1}: ${l} vs ${losses.simd128[i]}`));
  } finally {
    await browser.close();
  }
});
