// Golden parity with transformers in Chromium: the fixture folders of tests/golden/ (a
// Llama with grouped-query attention, tied embeddings and llama3-scaled rotary positions; a
// Qwen2 with q/k/v biases and its own output layer; PEFT's LoRA adapters on each) given to
// the wasm's goldenCheck, which runs the model's forward pass, gradients and 10 AdamW steps on the
// browser's CPU path (WebAssembly) and on WebGPU (SwiftShader), against PyTorch's float64.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch, serveWww, watchRequests, isLocal } from './chromium.mjs';

const GOLDEN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'golden');
const site = serveWww();

/** A fixture folder's files, base64 (what page.evaluate can carry); an adapter fixture's
 * (NAME_lora: PEFT's folder, made by make_lora_fixtures.py) over its base's. */
function fixture(name) {
  const read = (dir) => Object.fromEntries(fs.readdirSync(path.join(GOLDEN, dir)).map((f) => [f, fs.readFileSync(path.join(GOLDEN, dir, f)).toString('base64')]));
  return name.endsWith('_lora') ? { ...read(name.replace(/_lora$/, '')), ...read(name) } : read(name);
}

test('the Llama and Qwen2 families match transformers in Chromium, on WebAssembly and on WebGPU', async () => {
  const browser = await launch({ webgpu: true });
  try {
    const page = await browser.newPage();
    const requests = watchRequests(page);
    await page.goto(`${site.origin}/kernels.css`); // any page of the origin, for the module import
    for (const name of ['llama_gqa', 'qwen2_bias', 'llama_gqa_lora', 'qwen2_bias_lora']) {
      for (const backend of ['cpu', 'gpu']) {
        const report = await page.evaluate(async ({ files, backend }) => {
          const kiln = await import('/pkg/kiln.js');
          await kiln.default();
          const bytes = Object.fromEntries(Object.entries(files).map(([f, b64]) => [f, Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))]));
          return kiln.goldenCheck(bytes, backend);
        }, { files: fixture(name), backend });
        console.log(`[${name}, ${backend}] logits ${report.logits.toExponential(2)}, losses ${report.losses.toExponential(2)}, `
          + `worst of ${report.gradientTensors} gradients ${report.worstGradient.toExponential(2)} (${report.worstGradientTensor}), `
          + `${report.stepLosses.length} AdamW steps ${report.stepLosses[0].toFixed(5)} → ${report.stepLosses.at(-1).toFixed(5)} `
          + `(PyTorch ${report.referenceStepLosses[0].toFixed(5)} → ${report.referenceStepLosses.at(-1).toFixed(5)}) ${report.steps.toExponential(2)}`);
        assert.equal(report.passed, true, `${name} on ${backend}: ${JSON.stringify(report)}`);
        // every tensor: the model's, or the adapters' (PEFT's A and B of each module)
        assert.ok(report.gradientTensors >= (name.endsWith('_lora') ? 8 : 20), 'every tensor checked');
      }
    }
    const adapter = await page.evaluate(async () => (await import('/pkg/kiln.js')).adapterName());
    assert.match(adapter, /webgpu/i, 'the gpu runs were on the browser\'s WebGPU adapter');
    for (const url of requests) assert.ok(isLocal(site, url), url);
  } finally {
    await browser.close();
  }
});
