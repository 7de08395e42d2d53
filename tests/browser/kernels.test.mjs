// The kernel-vs-CPU-twin suite, compiled to wasm32, run by the real page inside a
// module Web Worker in headless Chromium on its WebGPU adapter (SwiftShader): every
// shader proven under Chrome's WGSL compiler (Tint) as well as wgpu's (Naga).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../www/serve.mjs';
import { launch, watchRequests, ARTIFACTS } from './chromium.mjs';

const WWW = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'www');

let server;
let origin;
before(async () => {
  server = await startServer(WWW, 0);
  origin = `http://127.0.0.1:${server.address().port}`;
});
after(() => server.close());

async function runCheck(browser) {
  const page = await browser.newPage();
  const requests = watchRequests(page);
  const logs = [];
  page.on('console', (msg) => logs.push(`${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => logs.push(`pageerror: ${err.message}`));
  await page.goto(`${origin}/kernels.html`);
  await page.waitForFunction(() => window.kilnKernelCheck?.done, null, { timeout: 15 * 60_000, polling: 500 });
  const results = await page.evaluate(() => window.kilnKernelCheck);
  const status = await page.textContent('#status');
  return { page, results, status, requests, logs };
}

test('every WGSL kernel matches its CPU twin in Chromium on WebGPU (SwiftShader), in a worker', async () => {
  const browser = await launch({ webgpu: true });
  try {
    const { page, results, status, requests, logs } = await runCheck(browser);
    await page.screenshot({ path: path.join(ARTIFACTS, 'kernels.png'), fullPage: true });
    assert.equal(results.error, null, `the check failed to run: ${results.error}\n${logs.join('\n')}`);
    console.log(`adapter: ${results.adapter}; in a worker: ${results.inWorker}`);
    for (const c of results.checks) {
      console.log(`${c.passed ? 'ok  ' : 'FAIL'} ${c.kernel.padEnd(22)} ${c.case.padEnd(44)} max rel err ${c.max_rel_err.toExponential(2)} (tolerance ${c.tolerance.toExponential(0)})`);
    }
    assert.match(results.adapter, /swiftshader/i, 'expected the SwiftShader WebGPU adapter');
    assert.equal(results.inWorker, true, 'the suite must run inside a Web Worker');
    // the families come from the wasm (kernelFamilies(), the core's one list), not from here
    assert.ok(results.families.length > 0, 'the wasm reported no kernel families');
    for (const family of results.families) {
      assert.ok(results.checks.some((c) => c.family === family), `no checks for ${family}`);
    }
    const failed = results.checks.filter((c) => !c.passed);
    assert.deepEqual(failed, [], `${failed.length} of ${results.checks.length} checks failed`);
    assert.ok(results.checks.length >= 80, `only ${results.checks.length} checks ran`);
    assert.match(status, /All \d+ kernel checks passed/);
    const foreign = requests.filter((url) => !url.startsWith(origin));
    assert.deepEqual(foreign, [], 'the page requested something outside its own origin');
  } finally {
    await browser.close();
  }
});

test('without WebGPU the page says so instead of failing silently', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { results, status } = await runCheck(browser);
    assert.match(results.error, /no GPU adapter/i);
    assert.match(status, /could not run: no GPU adapter/i);
  } finally {
    await browser.close();
  }
});
