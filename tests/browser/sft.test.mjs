// Supervised fine-tuning in the real page, by clicks: pretrain the tiny preset on the
// built-in stories, see one rendered example with its learnt tokens highlighted,
// fine-tune on the built-in story questions, then chat.
//  - On WebGPU (SwiftShader) the whole path runs by clicks, briefly: SwiftShader takes
//    about 2 s a step here, so training to accuracy there (300 + 400 steps) takes about
//    30 minutes; KILN_SFT_FULL=1 does that, by hand.
//  - On the CPU backend (WebAssembly) the same clicks train with the page's defaults
//    (500 pretraining and 400 SFT steps) and the chat answers questions about stories the
//    fine-tuning never showed. The two backends compute the same thing: app.test.mjs
//    holds the browser's WebGPU curve against the native GPU backend's and the CPU's.
// Training is deterministic (fixed seeds, fixed-order reductions): every run is the same.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { launch, serveWww, isLocal, openPage as openPageIn, ARTIFACTS } from './chromium.mjs';

const site = serveWww();

const app = (page, fn, arg) => page.evaluate(fn, arg);
const waitFor = (page, fn, timeout = 1_200_000) => page.waitForFunction(fn, null, { timeout, polling: 500 });
// KILN_SFT_FULL=1 trains hundreds of steps on SwiftShader: give each phase an hour
const PHASE_TIMEOUT = process.env.KILN_SFT_FULL === '1' ? 3_600_000 : 1_200_000;
const idle = (page) => waitFor(page, () => (window.kilnApp.state === 'idle' && !window.kilnApp.training) || window.kilnApp.error, PHASE_TIMEOUT);

/** Kiln's exact-match rule (crate/data/instruct.rs answer_matches): trim, ignore case and a final . 。 ! or ！. */
const normal = (s) => s.trim().toLowerCase().replace(/[.。!！]$/u, '').trim();

const openPage = (browser, query) => openPageIn(site, browser, query);

/** Tokenizer, pretraining and fine-tuning through the page's controls. */
async function pretrainAndFineTune(page, { pretrainSteps, sftSteps, screenshot }) {
  await page.click('#train-tokenizer');
  await waitFor(page, () => /vocabulary of/.test(document.getElementById('tok-stats').textContent) || window.kilnApp.error, 120_000);

  // one built-in example, as the model sees it: the answer and its <|end|> highlighted
  await waitFor(page, () => document.querySelectorAll('#sft-example span').length > 10, 60_000);
  const example = await app(page, () => [...document.querySelectorAll('#sft-example span')].map((s) => [s.textContent, s.className === 'sup']));
  const learnt = example.filter(([, sup]) => sup).map(([t]) => t);
  console.log(`example: ${example.length} tokens, learnt: ${JSON.stringify(learnt.join(''))}`);
  assert.deepEqual(example[0], ['<|bos|>', false]);
  assert.equal(learnt.at(-1), '<|end|>');
  assert.ok(learnt.length >= 2 && learnt.length < example.length / 3, 'only the answer is learnt');

  if (pretrainSteps) await page.fill('#steps', String(pretrainSteps));
  await page.click('#start');
  await waitFor(page, () => window.kilnApp.progress.length > 0 || window.kilnApp.error, 120_000);
  await idle(page);
  assert.equal(await app(page, () => window.kilnApp.error), null);
  const pre = await app(page, () => window.kilnApp.progress.at(-1));
  assert.equal(pre.stage, 'pretrain');

  if (sftSteps) await page.fill('#sft-steps', String(sftSteps));
  await page.click('#sft-start');
  await waitFor(page, () => window.kilnApp.progress.some((p) => p.stage === 'sft') || window.kilnApp.error, 300_000);
  assert.match(await page.textContent('#stage-name'), /fine-tuning/);
  if (screenshot) await page.screenshot({ path: path.join(ARTIFACTS, screenshot), fullPage: true });
  await idle(page);
  assert.equal(await app(page, () => window.kilnApp.error), null);
  const progress = await app(page, () => window.kilnApp.progress);
  assert.ok(progress.every((p) => p.stage === 'sft'), 'the chart shows the SFT run');
  const vals = progress.filter((p) => p.valLoss != null).map((p) => p.valLoss);
  console.log(`SFT: ${progress.at(-1).step} steps, validation losses ${vals.map((v) => v.toFixed(3)).join(' ')}`);
  const info = await app(page, () => window.kilnApp.sftInfo);
  assert.ok(info.trainRows > 1000 && info.valRows > 100, JSON.stringify(info));
  return { pre, progress, vals };
}

/** Sends `text` through the chat box; returns the streamed answer. */
async function ask(page, text) {
  if (text != null) await page.fill('#chat-input', text);
  await app(page, () => { window.kilnApp.lastAnswer = null; });
  await page.click('#chat-send');
  await waitFor(page, () => window.kilnApp.lastAnswer != null || window.kilnApp.error, 300_000);
  assert.equal(await app(page, () => window.kilnApp.error), null);
  return app(page, () => window.kilnApp.lastAnswer);
}

/** Asks 10 held-out questions in the chat, one conversation each; at least 6 right. */
async function answersHeldOutQuestions(page) {
  const results = [];
  for (let i = 0; i < 10; i += 1) {
    await page.click('#chat-reset');
    await page.click('#chat-heldout');
    // the page fills the box once the worker has sent the questions
    await waitFor(page, () => window.kilnApp.expectedAnswer != null || window.kilnApp.error, 60_000);
    assert.equal(await app(page, () => window.kilnApp.error), null);
    const question = await page.inputValue('#chat-input');
    const expected = await app(page, () => window.kilnApp.expectedAnswer);
    const answer = await ask(page);
    results.push({ question: question.split('\n').at(-1), expected, answer, correct: normal(answer) === normal(expected) });
    if (i === 0) await page.screenshot({ path: path.join(ARTIFACTS, 'sft-chat.png'), fullPage: true });
  }
  for (const r of results) console.log(`${r.correct ? 'right' : 'wrong'}: ${r.question} → ${JSON.stringify(r.answer)} (expected ${JSON.stringify(r.expected)})`);
  const right = results.filter((r) => r.correct).length;
  console.log(`held-out questions answered correctly in the page: ${right}/10`);
  assert.ok(right >= 6, `${right}/10 held-out questions answered correctly`);
}

test('on WebGPU: pretrain, fine-tune and chat by clicks; answers are shown as text', async () => {
  const browser = await launch({ webgpu: true });
  try {
    const { page, requests } = await openPage(browser, '?backend=gpu');
    assert.equal(await app(page, () => window.kilnApp.backend.kind), 'gpu');
    // the inputs start at the core's defaults
    const defaults = await app(page, () => window.kilnApp.defaults);
    assert.equal(Number(await page.inputValue('#sft-lr')), defaults.training.sft.lr);
    assert.equal(Number(await page.inputValue('#sft-steps')), defaults.training.sft.steps);
    assert.equal(Number(await page.inputValue('#steps')), defaults.training.pretrain.steps);

    // KILN_SFT_FULL=1 (by hand: about 25 minutes on SwiftShader) trains the default steps
    // and asks the held-out questions here too
    const full = process.env.KILN_SFT_FULL === '1';
    const steps = full ? { pretrainSteps: 300 } : { pretrainSteps: 10, sftSteps: 12 };
    const { vals } = await pretrainAndFineTune(page, { ...steps, screenshot: 'sft-training-webgpu.png' });
    assert.ok(vals.length >= 1 && Number.isFinite(vals.at(-1)));
    if (full) {
      await answersHeldOutQuestions(page);
      await page.click('#chat-reset'); // the markup check below reads a fresh conversation
    }

    // markup typed into the chat, and whatever the model answers, stays text
    const answer = await ask(page, 'Who is <b>here</b>? <img src=x onerror="window.pwned=1">');
    console.log(`WebGPU chat answer after 12 SFT steps: ${JSON.stringify(answer)}`);
    const bubbles = await page.locator('#chat-log .msg').allTextContents();
    assert.equal(bubbles[0], 'Who is <b>here</b>? <img src=x onerror="window.pwned=1">');
    assert.equal(bubbles[1], answer);
    assert.equal(await page.locator('#chat-log b, #chat-log img').count(), 0);
    assert.equal(await app(page, () => window.pwned ?? null), null);
    await page.click('#chat-reset');
    assert.equal(await page.locator('#chat-log .msg').count(), 0);
    for (const url of requests) assert.ok(isLocal(site, url), url);
  } finally {
    await browser.close();
  }
});

test('on the CPU backend: the same clicks with the default steps, and the chat answers held-out questions', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page } = await openPage(browser);
    assert.equal(await app(page, () => window.kilnApp.backend.kind), 'cpu');
    const { pre, vals } = await pretrainAndFineTune(page, { screenshot: 'sft-training.png' });
    const defaults = await app(page, () => window.kilnApp.defaults);
    assert.equal(pre.step, defaults.training.pretrain.steps);
    assert.ok(vals.at(-1) < vals[0] / 2, `the held-out conversations' loss should fall: ${vals}`);

    await answersHeldOutQuestions(page);
  } finally {
    await browser.close();
  }
});
