// The page as a person uses it, on the CPU backend: an error appears on the line beside
// what caused it (and in view), a bad number is refused by name before anything runs,
// the message goes once the action succeeds, and a refused fine-tune leaves the
// pretraining chart, samples and status as they were.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, serveWww, openPage } from './chromium.mjs';

const site = serveWww();

const app = (page, fn, arg) => page.evaluate(fn, arg);
const waitFor = (page, fn, arg, timeout = 600_000) => page.waitForFunction(fn, arg, { timeout, polling: 250 });

/** The text of a section's message line, and whether all of it is in the viewport. */
const lineOf = (page, section) => app(page, (id) => {
  const line = document.getElementById(`${id}-error`);
  if (!line) return { text: '', visible: false };
  const box = line.getBoundingClientRect();
  return { text: line.textContent, visible: box.height > 0 && box.top >= 0 && box.bottom <= window.innerHeight };
}, section);

/** Waits until the section's line says something (or the page-wide one does). */
const lineSays = (page, section) => waitFor(page, (id) => document.getElementById(`${id}-error`)?.textContent
  || (window.kilnApp.error && !document.getElementById(`${id}-error`)), section, 120_000);

test('errors beside their cause, numbers checked before they run, nothing lost by a refused stage', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page, log } = await openPage(site, browser, '?backend=cpu');
    await page.setViewportSize({ width: 1200, height: 800 });
    await page.click('#train-tokenizer');
    await waitFor(page, () => /vocabulary of/.test(document.getElementById('tok-stats').textContent) || window.kilnApp.error);

    // typed: refused by name beside the field, before anything runs
    await page.fill('#steps', '-5');
    await page.dispatchEvent('#steps', 'change');
    await lineSays(page, 'model-section');
    let line = await lineOf(page, 'model-section');
    console.log(`steps -5 typed: ${line.text}`);
    assert.match(line.text, /steps must be a whole number, not -5/);
    assert.doesNotMatch(line.text, /u64|invalid value/);

    // at Start: beside the Start button, in view, though the page-wide line is far below
    await page.click('#start');
    await lineSays(page, 'train-section');
    line = await lineOf(page, 'train-section');
    assert.match(line.text, /steps must be a whole number, not -5/);
    assert.ok(line.visible, 'the error beside Start is in the viewport');
    assert.equal(await app(page, () => window.kilnApp.model), null, 'no model was made');
    const far = await app(page, () => document.getElementById('error').getBoundingClientRect().top - window.innerHeight);
    console.log(`the page-wide line is ${Math.round(far)} px below the viewport`);

    await page.fill('#steps', '0');
    await page.click('#start');
    await waitFor(page, () => /at least 1, not 0/.test(document.getElementById('train-section-error').textContent));
    assert.equal(await app(page, () => window.kilnApp.progress.length), 0, 'steps 0 runs nothing');

    // a good number: the run goes, and the message beside Start is gone
    await page.fill('#steps', '6');
    await page.dispatchEvent('#steps', 'change');
    await page.click('#start');
    await waitFor(page, () => window.kilnApp.state === 'idle' && window.kilnApp.progress.length > 0 || window.kilnApp.error);
    assert.equal(await app(page, () => window.kilnApp.error), null);
    assert.equal((await lineOf(page, 'train-section')).text, '');
    assert.equal((await lineOf(page, 'model-section')).text, '', 'the field is fine now');
    const before = await app(page, () => ({
      steps: window.kilnApp.progress.map((p) => p.step),
      samples: document.getElementById('samples').children.length,
      stats: document.getElementById('train-stats').textContent,
      sft: document.getElementById('sft-stats').textContent,
    }));
    assert.equal(before.steps.at(-1), 6);

    // a fine-tune refused (a file source without a file): the chart and status stay
    await page.check('input[name=sft-source][value=file]');
    await page.click('#sft-start');
    await lineSays(page, 'sft-section');
    line = await lineOf(page, 'sft-section');
    console.log(`fine-tune without a file: ${line.text}`);
    assert.ok(line.text.length > 0 && line.visible);
    const after = await app(page, () => ({
      steps: window.kilnApp.progress.map((p) => p.step),
      samples: document.getElementById('samples').children.length,
      stats: document.getElementById('train-stats').textContent,
      sft: document.getElementById('sft-stats').textContent,
    }));
    assert.deepEqual(after, before, 'the refused fine-tune left the chart, samples and status as they were');

    // answers to rank: 2 to 6, refused by the bound of the one options definition
    await page.fill('#rank-k', '1');
    await page.dispatchEvent('#rank-k', 'change');
    await lineSays(page, 'rank-section');
    line = await lineOf(page, 'rank-section');
    console.log(`1 answer to rank: ${line.text}`);
    assert.match(line.text, /answersPerPrompt must be 2 to 6, not 1/);
    assert.ok(!log.some((l) => l.startsWith('pageerror')), log.join('\n'));
  } finally {
    await browser.close();
  }
});
