// Supervised fine-tuning in the real page, by clicks, on WebGPU (SwiftShader): pretrain
// the tiny preset on the built-in stories, show one rendered example with its learnt
// tokens highlighted, fine-tune on the built-in story questions, then ask the chat a
// question about a story the fine-tuning never showed — and check the answer. Training
// is deterministic (fixed seeds, fixed-order reductions), so the result is the same on
// every run.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../www/serve.mjs';
import { launch, watchRequests, ARTIFACTS } from './chromium.mjs';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const PRETRAIN_STEPS = 150;
const SFT_STEPS = 150;

let server;
let origin;
before(async () => {
  server = await startServer(path.join(ROOT, 'www'), 0);
  origin = `http://127.0.0.1:${server.address().port}`;
});
after(() => server.close());

const app = (page, fn, arg) => page.evaluate(fn, arg);
const waitFor = (page, fn, timeout = 1_200_000) => page.waitForFunction(fn, null, { timeout, polling: 500 });
const idle = (page) => waitFor(page, () => (window.kilnApp.state === 'idle' && !window.kilnApp.training) || window.kilnApp.error);

/** Kiln's exact-match rule (crate/data/instruct.rs answer_matches): trim, ignore case and a final period. */
const normal = (s) => s.trim().toLowerCase().replace(/[.。]$/u, '').trim();

test('pretrain, fine-tune and chat in the page: a held-out question answered correctly (WebGPU)', async () => {
  const browser = await launch({ webgpu: true });
  try {
    const page = await browser.newPage();
    const requests = watchRequests(page);
    await page.goto(`${origin}/index.html`);
    await waitFor(page, () => window.kilnApp?.ready || window.kilnApp?.error, 120_000);
    assert.equal(await app(page, () => window.kilnApp.error), null);
    assert.equal(await app(page, () => window.kilnApp.backend.kind), 'gpu');

    // the defaults in the inputs come from the core
    const defaults = await app(page, () => window.kilnApp.defaults);
    assert.equal(Number(await page.inputValue('#sft-lr')), defaults.training.sft.lr);
    assert.equal(Number(await page.inputValue('#steps')), defaults.training.pretrain.steps);

    await page.click('#train-tokenizer');
    await waitFor(page, () => /vocabulary of/.test(document.getElementById('tok-stats').textContent) || window.kilnApp.error, 120_000);

    // one built-in example, as the model sees it: the answer and its <|end|> highlighted
    await waitFor(page, () => document.querySelectorAll('#sft-example span').length > 10, 60_000);
    const example = await app(page, () => [...document.querySelectorAll('#sft-example span')].map((s) => [s.textContent, s.className === 'sup']));
    const learnt = example.filter(([, sup]) => sup).map(([t]) => t);
    console.log(`example: ${example.length} tokens, learnt: ${JSON.stringify(learnt.join(''))}`);
    assert.equal(example[0][0], '<|bos|>');
    assert.equal(example[0][1], false);
    assert.equal(learnt.at(-1), '<|end|>');
    assert.ok(learnt.length >= 2 && learnt.length < example.length / 3, 'only the answer is learnt');

    // pretraining, by clicks
    await page.fill('#steps', String(PRETRAIN_STEPS));
    await page.click('#start');
    await waitFor(page, () => window.kilnApp.progress.length > 0 || window.kilnApp.error, 120_000);
    await idle(page);
    assert.equal(await app(page, () => window.kilnApp.error), null);
    const pre = await app(page, () => window.kilnApp.progress.at(-1));
    assert.equal(pre.stage, 'pretrain');
    assert.equal(pre.step, PRETRAIN_STEPS);

    // fine-tuning, by clicks: the same chart, now the SFT stage
    await page.fill('#sft-steps', String(SFT_STEPS));
    await page.click('#sft-start');
    await waitFor(page, () => window.kilnApp.progress.length > 3 || window.kilnApp.error, 300_000);
    assert.match(await page.textContent('#stage-name'), /fine-tuning/);
    await page.screenshot({ path: path.join(ARTIFACTS, 'sft-training.png'), fullPage: true });
    await idle(page);
    assert.equal(await app(page, () => window.kilnApp.error), null);
    const progress = await app(page, () => window.kilnApp.progress);
    assert.ok(progress.every((p) => p.stage === 'sft'), 'the chart shows the SFT run');
    const vals = progress.filter((p) => p.valLoss != null).map((p) => p.valLoss);
    console.log(`SFT validation losses: ${vals.map((v) => v.toFixed(3)).join(' ')}`);
    assert.equal(progress.at(-1).step, SFT_STEPS);
    assert.ok(vals.at(-1) < vals[0], 'the validation loss on held-out conversations fell');
    const info = await app(page, () => window.kilnApp.sftInfo);
    assert.ok(info.trainRows > 1000 && info.valRows > 100, JSON.stringify(info));

    // the chat: a question about a story fine-tuning never showed
    await page.click('#chat-heldout');
    const question = await page.inputValue('#chat-input');
    const expected = await app(page, () => window.kilnApp.expectedAnswer);
    await page.click('#chat-send');
    await waitFor(page, () => window.kilnApp.lastAnswer != null || window.kilnApp.error, 300_000);
    const answer = await app(page, () => window.kilnApp.lastAnswer);
    console.log(`held-out question: ${JSON.stringify(question)}\nexpected ${JSON.stringify(expected)}, answered ${JSON.stringify(answer)}`);
    await page.screenshot({ path: path.join(ARTIFACTS, 'sft-chat.png'), fullPage: true });
    const bubbles = await page.locator('#chat-log .msg').allTextContents();
    assert.deepEqual(bubbles, [question, answer], 'the conversation is shown as text');
    assert.equal(normal(answer), normal(expected));

    // a second turn continues the conversation; reset clears it
    await page.click('#chat-reset');
    assert.equal(await page.locator('#chat-log .msg').count(), 0);
    for (const url of requests) assert.ok(url.startsWith(origin) || url.startsWith('blob:') || url.startsWith('data:'), url);
  } finally {
    await browser.close();
  }
});
