// The page as a person uses it, on the CPU backend: an error appears on the line beside
// what caused it (and in view), a bad number is refused by name before anything runs,
// the message goes once the action succeeds, a refused fine-tune leaves the pretraining
// chart, samples and status as they were, and after fine-tuning on the person's own file
// its skipped lines stay listed and the checks ask the conversations held out from it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, serveWww, openPage } from './chromium.mjs';

const site = serveWww();

/** A person's fine-tuning data, nothing like the built-in stories: the first word of a
 * sentence, 30 of them, with three lines that cannot be read (lines 4, 11 and 19). */
const SENTENCES = ['Rivers carve valleys over long ages', 'Bread rises when yeast feeds on sugar', 'Violins need rosin on the bow',
  'Maps fold along their creases', 'Tides follow the moon', 'Glass is made from sand', 'Owls hunt at night',
  'Copper turns green in the rain', 'Bees dance to show the way', 'Clocks once ran on weights', 'Salt keeps fish from spoiling',
  'Kites rise against the wind', 'Ink was made from soot', 'Bridges sway a little in storms', 'Lanterns burned whale oil',
  'Ferns grow in the shade', 'Snow muffles every sound', 'Compasses point to the north', 'Ropes are twisted from fibres',
  'Candles drip when moved', 'Pianos have eighty-eight keys', 'Moss grows on the north side', 'Sails catch the wind',
  'Wheels turn on axles', 'Honey never spoils', 'Paper yellows in the sun', 'Wolves howl to gather', 'Stones skip on calm water',
  'Frost draws on windows', 'Apples float in water'];
const PERSONS = SENTENCES.map((s) => [`First word: ${s}`, s.split(' ')[0]]);
const PERSONS_JSONL = (() => {
  const lines = PERSONS.map(([q, a]) => JSON.stringify({ prompt: q, completion: a }));
  lines.splice(3, 0, '{"prompt": "First word: broken');
  lines.splice(10, 0, '{"prompt": "First word: no completion"}');
  lines.splice(18, 0, 'not json at all');
  return `${lines.join('\n')}\n`;
})();

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

    // the person's own conversations, three lines of them bad: the skipped lines stay listed
    // after the run, and the checks ask the conversations held out from them
    await page.setInputFiles('#sft-file', { name: 'first-words.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(PERSONS_JSONL) });
    await page.fill('#sft-steps', '4');
    await page.click('#sft-start');
    await waitFor(page, () => window.kilnApp.state === 'idle' && window.kilnApp.progress.some((p) => p.stage === 'sft') || window.kilnApp.error);
    assert.equal(await app(page, () => window.kilnApp.error), null);
    const skipped = await app(page, () => ({
      summary: document.querySelector('#sft-skipped summary')?.textContent,
      lines: [...document.querySelectorAll('#sft-skipped li')].map((li) => li.textContent),
      stats: document.getElementById('sft-stats').textContent,
    }));
    console.log(`after fine-tuning on the file: ${JSON.stringify(skipped)}`);
    assert.match(skipped.summary, /Skipped 3 lines/);
    assert.deepEqual(skipped.lines.map((l) => l.match(/^line (\d+)/)?.[1]), ['4', '11', '19']);
    assert.match(skipped.stats, /step 4\/4/, 'the stats line went on to the steps, the list stayed');

    await page.click('#chat-heldout');
    await waitFor(page, () => document.getElementById('chat-input').value !== '' && window.kilnApp.expectedAnswer != null);
    const asked = await app(page, () => ({ q: document.getElementById('chat-input').value, expected: window.kilnApp.expectedAnswer, says: document.getElementById('chat-check').textContent }));
    console.log(`held-out question: ${JSON.stringify(asked)}`);
    const fromFile = PERSONS.find(([q]) => q === asked.q);
    assert.ok(fromFile, 'the held-out question is one of the person\'s own');
    assert.equal(asked.expected, fromFile[1]);
    assert.match(asked.says, /held out from your fine-tuning data/);
    await page.click('#chat-send');
    await waitFor(page, () => window.kilnApp.lastMatched != null || window.kilnApp.error);
    assert.match(await page.textContent('#chat-check'), new RegExp(`Expected: ${fromFile[1]} · the answer (matches|does not match)`));

    await page.click('#compare');
    await waitFor(page, () => document.querySelectorAll('#compare-table tbody tr').length > 0 || window.kilnApp.error);
    const table = await app(page, () => [...document.querySelectorAll('#compare-table tbody tr')].map((tr) => [...tr.cells].map((c) => c.textContent)));
    console.log(`before/after: ${JSON.stringify(table)}`);
    for (const [question, expected] of table) {
      assert.deepEqual(PERSONS.find(([q]) => q === question)?.[1], expected, 'the table asks the person\'s held-out questions, with their answers');
    }

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
