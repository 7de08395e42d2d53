// The npm package works outside this repository: `npm pack`, install the tarball into a
// copy of tests/example (a page that is not the demo), and train there from the README's
// ten lines (pretraining, SFT, chat, candidates, a reward model, export), in headless
// Chromium on WebGPU.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../www/serve.mjs';
import { launch, watchRequests } from './chromium.mjs';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

test('a page outside the repo installs the packed kiln-llm and trains from the README\'s ten lines', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-example-'));
  // pack what www/build.sh built (the test build; `npm pack` alone builds a release first)
  const tarball = execFileSync('npm', ['pack', '--ignore-scripts', '--pack-destination', work], { cwd: ROOT })
    .toString().trim().split('\n').at(-1);
  const site = path.join(work, 'site');
  fs.cpSync(path.join(ROOT, 'tests', 'example'), site, { recursive: true });
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--offline', path.join(work, tarball)], { cwd: site, stdio: 'inherit' });
  const installed = JSON.parse(fs.readFileSync(path.join(site, 'node_modules', 'kiln-llm', 'package.json'), 'utf8'));
  assert.equal(installed.name, 'kiln-llm');
  assert.ok(!fs.existsSync(path.join(site, 'node_modules', 'kiln-llm', 'crate')), 'the package ships no Rust sources');
  // the text the page trains on: Kiln's own generated stories
  const stories = execFileSync(path.join(ROOT, 'target', 'debug', 'kiln'), ['corpus', '--stories', '400']);
  fs.writeFileSync(path.join(site, 'stories.txt'), stories);

  // the example's import map is an inline script, which the demo's policy header forbids
  const server = await startServer(site, 0, { csp: null });
  const origin = `http://127.0.0.1:${server.address().port}`;
  const browser = await launch({ webgpu: true });
  try {
    const page = await browser.newPage();
    const requests = watchRequests(page);
    await page.goto(`${origin}/index.html`);
    await page.waitForFunction(() => window.result?.done || window.result?.error, null, { timeout: 600_000, polling: 500 });
    const result = await page.evaluate(() => window.result);
    console.log(JSON.stringify(result));
    assert.equal(result.error, undefined);
    // auto, with only SwiftShader: the README's lines train on the faster backend, the CPU
    assert.equal(result.backend.auto, true);
    assert.equal(result.backend.kind, 'cpu');
    assert.match(result.backend.reason, /software WebGPU trains [\d,]+ tokens\/s, the CPU [\d,]+/);
    assert.ok(result.losses.at(-1) < result.losses[0], 'the loss fell');
    assert.ok(result.text.length > 0);
    assert.equal(result.sft.stage, 'sft');
    assert.equal(result.sft.step, 4);
    assert.equal(typeof result.answer, 'string');
    assert.equal(result.candidates.length, 4);
    assert.ok(result.candidates.every((c) => typeof c.text === 'string' && c.logprobs.every((l) => l <= 0)));
    // learning as the person ranks: nothing after one ranking, an update after two, one undo
    const [waited, update, undone, again] = result.online;
    assert.equal(waited, null);
    assert.deepEqual([update.rankings, update.trainedOn, update.heldBack], [2, 1, 1]);
    assert.ok(update.valPairAccuracy >= 0 && update.valPairAccuracy <= 1 && Number.isFinite(update.loss) && Number.isFinite(update.kl));
    assert.deepEqual([undone, again], [true, false]);
    assert.equal(result.reward.stage, 'reward');
    assert.ok(Number.isFinite(result.reward.metrics.valPairAccuracy));
    // the reward model exports with its score head after GPT-2's tensors
    assert.deepEqual(result.files, ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    assert.ok(requests.every((url) => url.startsWith(origin)), 'only the page\'s own files were requested');
  } finally {
    await browser.close();
    server.close();
    fs.rmSync(work, { recursive: true, force: true });
  }
});
