// The views of the inside, and the whole path in Chinese, in the real page:
//  1. On the CPU backend (WebAssembly): switch the page to Chinese (remembered across a
//     reload), train a tokenizer and the tiny preset on the Chinese stories by clicks,
//     generate Chinese text, then open each view and check its numbers: the next token's
//     probabilities sum to 1 and equal `kiln logits` for the same prompt, the temperature
//     reshapes them as softmax(logits / T) does, clicking a bar appends its token,
//     attention rows sum to 1 with nothing above the diagonal, the training row's targets
//     are its inputs shifted by one and its losses fall as it trains, the two tokenizers
//     split the same text. No English word is left outside data, and a closed view reads
//     nothing while training goes on.
//  2. On WebGPU (SwiftShader): the same model imported; its probabilities and attention,
//     read from the GPU backend, against `kiln logits` too.
// Screenshots of each view go to tests/browser/artifacts/inside-*.png.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { launch, serveWww, openPage, ARTIFACTS } from './chromium.mjs';
import { englishWords } from './untranslated.mjs';
import en from '../../www/i18n/en.js';
import zh from '../../www/i18n/zh.js';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const site = serveWww();
const app = (page, fn, arg) => page.evaluate(fn, arg);
const waitFor = (page, fn, arg, timeout = 600_000) => page.waitForFunction(fn, arg, { timeout, polling: 200 });
const MODEL_DIR = path.join(ARTIFACTS, 'inside-model');
const MODEL_ZIP = path.join(ARTIFACTS, 'inside-model.zip');
const PROMPT = '从前';

/** `kiln logits` on the exported model: the native twin of the next-token view. */
function kilnLogits(text, temperature, backend) {
  execFileSync('cargo', ['build', '--quiet', '--bin', 'kiln'], { cwd: ROOT, stdio: 'inherit' });
  const out = execFileSync(path.join(ROOT, 'target', 'debug', 'kiln'),
    ['logits', '--ckpt', MODEL_DIR, '--text', text, '--temperature', String(temperature), '--backend', backend],
    { cwd: ROOT, env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp' }, maxBuffer: 1 << 28 });
  return JSON.parse(out);
}

/** The page's reading against the CLI's: same ids, every probability within `tolerance`. */
function matchesCli(reading, cli, tolerance) {
  assert.deepEqual(reading.tokens.map((x) => x.id), cli.ids, 'the same prompt ids');
  assert.equal(reading.probs.length, cli.probs.length);
  const worst = Math.max(...reading.probs.map((p, i) => Math.abs(p - cli.probs[i])));
  assert.ok(worst < tolerance, `probabilities differ from kiln logits by ${worst}`);
  assert.deepEqual(reading.top.map((x) => x.id), cli.top.map((x) => x.id), 'the same top tokens');
  const worstHot = Math.max(...reading.top.map((x, i) => Math.abs(x.pAtTemperature - cli.top[i].pAtTemperature)));
  assert.ok(worstHot < tolerance, `probabilities at the temperature differ by ${worstHot}`);
  return worst;
}

/** Attention weights (T×T, query rows): each row sums to 1, nothing above the diagonal. */
function checkAttention(att, n) {
  assert.equal(att.weights.length, n * n);
  let worst = 0;
  for (let q = 0; q < n; q += 1) {
    const row = att.weights.slice(q * n, (q + 1) * n);
    assert.ok(row.slice(q + 1).every((w) => w === 0), `token ${q} attends to later tokens: ${row}`);
    assert.ok(row.every((w) => w >= 0 && w <= 1 + 1e-6), `weights in [0, 1]: ${row}`);
    worst = Math.max(worst, Math.abs(row.reduce((a, b) => a + b, 0) - 1));
  }
  assert.ok(worst < 1e-4, `rows sum to 1 within ${worst}`);
  return worst;
}

const shot = async (page, id, name = id) => page.locator(`#${id}`).screenshot({ path: path.join(ARTIFACTS, `inside-${name}.png`) });

/** Every text and text attribute of the page outside data (tokens, model output, the core's
 * words) and code (<|end|>, GPT2LMHeadModel.from_pretrained). */
const pageWords = (page) => app(page, () => {
  const out = [];
  const isData = (el) => el.closest('[data-content], code, script, style, #language, #backend-choice') !== null;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent.trim();
    if (text && !isData(node.parentElement)) out.push(text);
  }
  for (const el of document.querySelectorAll('[placeholder], [title], [aria-label]')) {
    if (isData(el)) continue;
    for (const name of ['placeholder', 'title', 'aria-label']) if (el.getAttribute(name)) out.push(el.getAttribute(name));
  }
  out.push(document.title);
  return out;
});

test('the whole path in Chinese on the CPU, with every view read and checked', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
    let { page, log } = await openPage(site, context, '?backend=cpu');
    // switch the language: the choice is remembered across a reload
    await page.selectOption('#language', 'zh');
    assert.equal(await app(page, () => document.documentElement.lang), 'zh-CN');
    await page.close();
    ({ page, log } = await openPage(site, context, '?backend=cpu'));
    assert.equal(await app(page, () => document.documentElement.lang), 'zh-CN', 'the language is remembered');
    assert.equal(await page.textContent('#inside-section h2'), zh['inside.title']);

    // the Chinese stories, a tokenizer and pretraining, by clicks
    await page.check('input[name=source][value=zh]');
    await waitFor(page, () => document.getElementById('corpus-preview').textContent.includes('从前'));
    await page.click('#train-tokenizer');
    await waitFor(page, () => window.kilnApp.tokenizer || window.kilnApp.error);
    // the training row, first read when the model is made (before any step)
    await page.click('#create-model');
    await waitFor(page, () => window.kilnApp.inside.row || window.kilnApp.error);
    assert.equal(await app(page, () => window.kilnApp.error), null);
    const firstRow = await app(page, () => window.kilnApp.inside.row);
    await page.fill('#steps', '200');
    await page.click('#start');
    await waitFor(page, () => (window.kilnApp.progress.length && !window.kilnApp.training) || window.kilnApp.error);
    assert.equal(await app(page, () => window.kilnApp.error), null);
    const row = await app(page, () => window.kilnApp.inside.row);
    assert.equal(row.inputs.length, row.targets.length);
    for (let i = 0; i + 1 < row.inputs.length; i += 1) assert.equal(row.targets[i].id, row.inputs[i + 1].id, `target ${i} is input ${i + 1}`);
    assert.ok(row.losses.every((l) => Number.isFinite(l) && l > 0), 'pretraining counts every position');
    const mean = (r) => r.losses.reduce((a, b) => a + b, 0) / r.losses.length;
    console.log(`training row: ${row.inputs.length} positions, mean loss ${mean(firstRow).toFixed(3)} at the first reading, ${mean(row).toFixed(3)} after 200 steps`);
    assert.ok(mean(row) < mean(firstRow), 'the row\'s losses fall as the model trains');
    assert.equal(await page.locator('#row-table tr').count(), 3);

    // generate Chinese text
    assert.equal(await page.inputValue('#prompt'), PROMPT);
    await page.click('#generate');
    await waitFor(page, () => !document.getElementById('generate').disabled && window.kilnApp.generated != null);
    const generated = await app(page, () => window.kilnApp.generated);
    const han = generated.match(/\p{Script=Han}/gu) ?? [];
    console.log(`generated: ${JSON.stringify(generated)}`);
    assert.ok(han.length >= 20 && han.length / generated.replace(/\s/g, '').length > 0.6, 'the model writes Chinese');

    // next-token probabilities for the prompt, against kiln logits on the exported model
    // a reading of the trained model (not one begun while it trained)
    await page.fill('#next-prompt', PROMPT);
    await waitFor(page, (p) => window.kilnApp.inside.next?.prompt === p && !window.kilnApp.inside.next.whileTraining, PROMPT);
    const reading = await app(page, () => window.kilnApp.inside.next);
    const sum = reading.probs.reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - 1) < 1e-4, `probabilities sum to ${sum}`);
    // the model as a folder (for the CLI) and as the page's .zip (for the WebGPU test)
    const files = await app(page, async () => {
      const base64 = (bytes) => { let s = ''; for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000)); return btoa(s); };
      const out = Object.entries(await window.kilnApp.kiln.exportModel()).map(([name, bytes]) => [name, base64(bytes)]);
      return { folder: Object.fromEntries(out), zip: base64(await window.kilnApp.kiln.exportZip()) };
    });
    fs.rmSync(MODEL_DIR, { recursive: true, force: true });
    fs.mkdirSync(MODEL_DIR, { recursive: true });
    for (const [name, data] of Object.entries(files.folder)) fs.writeFileSync(path.join(MODEL_DIR, name), Buffer.from(data, 'base64'));
    fs.writeFileSync(MODEL_ZIP, Buffer.from(files.zip, 'base64'));
    const cli = kilnLogits(PROMPT, reading.temperature, 'cpu');
    const worst = matchesCli(reading, cli, 1e-5);
    console.log(`next token after ${PROMPT}: sum ${sum.toFixed(7)}; top ${reading.top.slice(0, 3).map((x) => `${x.text} ${x.p.toFixed(4)}`).join(', ')}; vs kiln logits (native CPU) max |Δp| ${worst.toExponential(1)}`);
    // the temperature's effect: softmax(logits / T), the same as p^(1/T) renormalised
    const z = reading.probs.reduce((a, p) => a + p ** (1 / reading.temperature), 0);
    for (const x of reading.top) assert.ok(Math.abs(x.pAtTemperature - x.p ** (1 / reading.temperature) / z) < 1e-5, `token ${x.id} at T=${reading.temperature}`);
    assert.ok(reading.temperature < 1 && reading.top[0].pAtTemperature > reading.top[0].p, 'a temperature below 1 sharpens');
    await page.locator('#next-temperature').evaluate((el) => { el.value = '1.5'; el.dispatchEvent(new Event('input')); });
    await waitFor(page, () => window.kilnApp.inside.next.temperature === 1.5);
    const hot = await app(page, () => window.kilnApp.inside.next);
    assert.ok(hot.top[0].pAtTemperature < hot.top[0].p, 'a temperature above 1 flattens');
    assert.deepEqual(hot.probs, reading.probs, 'the temperature leaves the model\'s own probabilities alone');

    // clicking a bar appends its token to the prompt and reads again
    const choice = hot.top.find((x) => !x.special);
    const button = page.locator(`#next-bars button[data-id="${choice.id}"]`);
    await button.click();
    await waitFor(page, (p) => window.kilnApp.inside.next.prompt === p, PROMPT + choice.text);
    assert.equal(await page.inputValue('#next-prompt'), PROMPT + choice.text);
    const after = await app(page, () => window.kilnApp.inside.next);
    console.log(`clicked ${JSON.stringify(choice.text)} (token ${choice.id}): the prompt's ids went from ${JSON.stringify(hot.tokens.map((x) => x.id))} to ${JSON.stringify(after.tokens.map((x) => x.id))}`);
    assert.deepEqual(after.tokens.map((x) => x.id), [...hot.tokens.map((x) => x.id), choice.id], 'the clicked token is appended to the prompt\'s ids');

    // attention of layer 2, head 2 over the longer prompt
    const sentence = await page.inputValue('#tok-sample');
    await page.fill('#next-prompt', sentence);
    await page.selectOption('#att-layer', '1');
    await page.selectOption('#att-head', '1');
    await waitFor(page, (p) => {
      const a = window.kilnApp.inside.next?.attention;
      return a?.layer === 1 && a?.head === 1 && window.kilnApp.inside.next.prompt === p;
    }, sentence);
    // the typed prompt's own reading (on a timer) may still come: wait until none is left,
    // so no redraw replaces the hovered row below
    await waitFor(page, () => window.kilnApp.inside.pending === 0);
    const withAttention = await app(page, () => window.kilnApp.inside.next);
    const n = withAttention.tokens.length;
    const rowError = checkAttention(withAttention.attention, n);
    console.log(`attention layer 2 head 2 over ${n} tokens: rows sum to 1 within ${rowError.toExponential(1)}, 0 above the diagonal`);
    assert.equal(await page.locator('#att-map .cell').count(), n * n);
    // hovering a token shades the prompt by what it attends to
    await page.hover('#att-map .query >> nth=3');
    const focus = await app(page, () => [...document.querySelectorAll('#att-focus span')].map((s) => Number(s.style.getPropertyValue('--w'))));
    assert.equal(focus.length, n);
    focus.forEach((w, s) => assert.ok(Math.abs(w - withAttention.attention.weights[3 * n + s]) < 1e-6, `focus weight ${s}`));

    // the same sentence under a second tokenizer (characters): one token per character
    await waitFor(page, () => window.kilnApp.inside.compare?.other.kind === 'char');
    const compared = await app(page, () => window.kilnApp.inside.compare);
    assert.equal(compared.other.pieces.length, [...sentence].length);
    assert.equal(compared.other.pieces.map((x) => x.text).join(''), sentence);
    assert.match(await page.textContent('#cmp-other-stats'), new RegExp(`^${[...sentence].length} 个词元`));
    assert.match(await page.textContent('#cmp-mine-stats'), new RegExp(`^${compared.mine.length} 个词元`));
    console.log(`"${sentence}": ${compared.mine.length} BPE tokens, ${compared.other.pieces.length} characters`);

    // the stage map
    assert.deepEqual(await app(page, () => window.kilnApp.stageMap), { tokenizer: 'done', pretrain: 'done', sft: 'todo', rank: 'todo' });
    assert.match(await page.textContent('#map-pretrain .state'), /已完成 · 200 步/);

    // screenshots, then no English left outside data
    await page.screenshot({ path: path.join(ARTIFACTS, 'inside-zh.png'), fullPage: true });
    for (const id of ['map-section', 'inside-section', 'row-view', 'compare-view']) await shot(page, id);
    const words = await pageWords(page);
    const english = words.filter((w) => englishWords(w).length);
    assert.deepEqual(english, [], 'English words outside data on the Chinese page');
    // and against the tables: no English message (a literal run of it) shows
    const runs = Object.entries(en).filter(([key]) => zh[key] !== en[key])
      .flatMap(([, text]) => text.split(/\{\w+\}/)).map((s) => s.trim()).filter((s) => s.length >= 8 && /[A-Za-z]{3}/.test(s));
    const leftover = words.filter((w) => runs.some((r) => w.includes(r)));
    assert.deepEqual(leftover, [], 'English messages on the Chinese page');
    console.log(`Chinese page: ${words.length} texts outside data, none English`);

    // closed views read nothing, while typing or training
    // each view closed (its toggle event heard), then no reading running or waiting
    await app(page, () => Promise.all([...document.querySelectorAll('details.view')].filter((d) => d.open).map((d) => {
      const toggled = new Promise((resolve) => d.addEventListener('toggle', resolve, { once: true }));
      d.open = false;
      return toggled;
    })));
    await waitFor(page, () => window.kilnApp.inside.pending === 0);
    const reads = await app(page, () => window.kilnApp.inside.reads);
    await page.fill('#next-prompt', '很久很久以前');
    await page.fill('#steps', '240');
    await page.click('#start');
    await waitFor(page, () => (window.kilnApp.progress.at(-1)?.step === 240 && !window.kilnApp.training) || window.kilnApp.error);
    assert.equal(await app(page, () => window.kilnApp.error), null);
    assert.equal(await app(page, () => window.kilnApp.inside.reads), reads, 'closed views read nothing');
    assert.deepEqual(log.filter((l) => /^(error|pageerror)/.test(l)), []);
  } finally {
    await browser.close();
  }
});

test('on WebGPU, the imported model\'s probabilities and attention match kiln logits', async () => {
  assert.ok(fs.existsSync(MODEL_ZIP), 'the first test exported the model');
  const browser = await launch({ webgpu: true });
  try {
    const { page, log } = await openPage(site, browser, '?backend=gpu&lang=en');
    assert.match(await page.textContent('#backend'), /WebGPU/);
    // the exported .zip through the page's Import; the views read the new model at once
    await page.setInputFiles('#import', MODEL_ZIP);
    await waitFor(page, () => window.kilnApp.model || window.kilnApp.error);
    assert.equal(await app(page, () => window.kilnApp.error), null);
    await page.fill('#next-prompt', PROMPT);
    await waitFor(page, (p) => window.kilnApp.inside.next?.attention && window.kilnApp.inside.next.prompt === p, PROMPT);
    const reading = await app(page, () => window.kilnApp.inside.next);
    const cli = kilnLogits(PROMPT, reading.temperature, 'gpu');
    const worst = matchesCli(reading, cli, 1e-4);
    const rows = checkAttention(reading.attention, reading.tokens.length);
    console.log(`WebGPU (SwiftShader) vs kiln logits (lavapipe): max |Δp| ${worst.toExponential(1)}; attention rows within ${rows.toExponential(1)}`);
    await shot(page, 'inside-section', 'webgpu');
    assert.deepEqual(log.filter((l) => /^(error|pageerror)/.test(l)), []);
  } finally {
    await browser.close();
  }
});
