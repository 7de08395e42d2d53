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

/** The person's prompts to rank, from a file of theirs: the last word of a sentence. */
const PROMPTS = SENTENCES.slice(0, 12).map((s) => `Last word: ${s}`);
const PROMPTS_JSONL = PROMPTS.map((prompt) => JSON.stringify({ prompt })).join('\n') + '\n';

async function streamText(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

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

    // ranking before there is a model: said beside the button, and gone once a model exists
    await page.click('#rank-sample');
    await lineSays(page, 'rank-section');
    const early = (await lineOf(page, 'rank-section')).text;
    console.log(`Sample answers with no model: ${early}`);
    assert.match(early, /model/);

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
    assert.equal((await lineOf(page, 'rank-section')).text, '', 'a model exists now: the ranking section\'s line is gone');
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

    await page.fill('#compare-typed', 'Last word: Owls hunt at night');
    await page.click('#compare');
    await waitFor(page, () => document.querySelectorAll('#compare-table tbody tr').length > 0 || window.kilnApp.error);
    const table = await app(page, () => [...document.querySelectorAll('#compare-table tbody tr')].map((tr) => [...tr.cells].map((c) => c.textContent)));
    console.log(`before/after: ${JSON.stringify(table)}`);
    assert.deepEqual(table.at(-1).slice(0, 2), ['Last word: Owls hunt at night', ''], 'a typed question is asked too, with no expected answer');
    for (const [question, expected] of table.slice(0, -1)) {
      assert.deepEqual(PERSONS.find(([q]) => q === question)?.[1], expected, 'the table asks the person\'s held-out questions, with their answers');
    }

    // answers to rank: 2 to 6, refused by the bound of the one options definition
    await page.fill('#rank-k', '1');
    await page.dispatchEvent('#rank-k', 'change');
    await lineSays(page, 'rank-section');
    line = await lineOf(page, 'rank-section');
    console.log(`1 answer to rank: ${line.text}`);
    assert.match(line.text, /answersPerPrompt must be 2 to 6, not 1/);
    await page.fill('#rank-k', '4');

    // the prompts from the person's file; a cancelled chooser leaves a button to open it again
    const [cancelled] = await Promise.all([page.waitForEvent('filechooser'), page.check('input[name=rank-source][value=file]')]);
    assert.ok(cancelled);
    await page.dispatchEvent('#rank-file', 'cancel');
    await waitFor(page, () => /No file chosen/.test(document.getElementById('rank-file-name').textContent));
    assert.equal(await page.isVisible('#rank-file-choose'), true);
    const [chooser] = await Promise.all([page.waitForEvent('filechooser'), page.click('#rank-file-choose')]);
    await chooser.setFiles({ name: 'my-prompts.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(PROMPTS_JSONL) });
    await waitFor(page, () => /my-prompts\.jsonl: 12 prompts/.test(document.getElementById('rank-file-name').textContent));

    // temperature 0 is warned of; its four answers are one card, which cannot be ranked
    await page.fill('#rank-temperature', '0');
    await page.dispatchEvent('#rank-temperature', 'change');
    await waitFor(page, () => /temperature this low/.test(document.getElementById('rank-note').textContent));
    const shown = () => app(page, () => window.kilnApp.rankShown ?? 0);
    let count = await shown();
    await page.click('#rank-sample');
    await waitFor(page, (n) => (window.kilnApp.rankShown ?? 0) > n || window.kilnApp.error, count);
    const cold = await app(page, () => ({
      cards: [...document.querySelectorAll('#rank-cards li')].map((li) => li.textContent),
      note: document.getElementById('rank-note').textContent,
      focus: document.activeElement.id,
    }));
    console.log(`temperature 0: ${JSON.stringify(cold)}`);
    assert.equal(cold.cards.length, 1);
    assert.match(cold.cards[0], /×4$/);
    assert.match(cold.note, /All 4 answers are the same text/);
    assert.equal(cold.focus, 'rank-order', 'the keys go to the order field');
    await page.keyboard.press('Enter');
    await lineSays(page, 'rank-section');
    line = await lineOf(page, 'rank-section');
    assert.match(line.text, /every answer is the same text: this ranking would give no pair/);
    assert.equal(await app(page, () => JSON.parse(localStorage.getItem('kiln.rankings') ?? '[]').length), 0, 'nothing stored');
    await page.fill('#rank-temperature', '1');
    await page.dispatchEvent('#rank-temperature', 'change');
    await page.click('#rank-order');

    // keyboard only from here: S skips (the next prompt comes by itself, the keys stay on its order field)
    count = await shown();
    await page.keyboard.press('s');
    await waitFor(page, (n) => (window.kilnApp.rankShown ?? 0) > n || window.kilnApp.error, count);
    assert.equal(await app(page, () => document.activeElement.id), 'rank-order', 'after a verdict the keys are on the next prompt');

    // an order that names no card, or one card twice, is refused beside the field
    for (const [typed, says] of [['9', /there is no card 9: the cards are numbered 1 to \d/], ['11', /card 1 is named twice in the order/], ['x', /type the cards' numbers/]]) {
      await page.fill('#rank-order', typed);
      await page.press('#rank-order', 'Enter');
      await waitFor(page, (re) => new RegExp(re).test(document.getElementById('rank-section-error')?.textContent ?? ''), says.source);
    }
    await page.fill('#rank-order', '');

    // ten prompts ranked by keys alone: a full order typed as the cards' numbers, with a
    // tie, a digit moving a focused card, and B for all bad; every key press counted
    let keys = 0;
    const press = async (key) => { keys += 1; await page.keyboard.press(key); };
    const orders = [];
    let typedFull = 0;
    for (let prompt = 0; prompt < 10; prompt += 1) {
      const cards = await app(page, () => [...document.querySelectorAll('#rank-cards li')].map((li) => li.dataset.card));
      const m = cards.length;
      count = await shown();
      if (prompt === 3) {
        await press('b');
      } else if (prompt === 5 && m >= 2) {
        // on the last card, a digit moves it to the first place; the focus stays on it
        keys += 1; // Shift
        await page.keyboard.down('Shift'); await press('Tab'); await page.keyboard.up('Shift');
        const last = await app(page, () => document.activeElement.dataset.card);
        await press('1');
        const moved = await app(page, () => ({ first: document.querySelector('#rank-cards li').dataset.card, focus: document.activeElement.dataset.card }));
        assert.deepEqual(moved, { first: last, focus: last }, 'the card moved to place 1 and kept the focus');
        await press('Enter');
        orders.push(`moved ${Number(last) + 1} to 1`);
      } else if (m >= 2) {
        // best first: the cards in reverse, the last left out (it comes last by itself); a tie once
        const numbers = cards.map((c) => Number(c) + 1).sort((a, b) => b - a).slice(0, m - 1);
        const typed = prompt === 1 && m >= 3 ? `${numbers[0]}=${numbers.slice(1).join('')}` : numbers.join('');
        for (const ch of typed) await press(ch);
        await press('Enter');
        orders.push(typed);
        if (m === 4) typedFull += 1;
      } else {
        await press('s');
      }
      await waitFor(page, (n) => (window.kilnApp.rankShown ?? 0) > n || window.kilnApp.error, count);
      assert.equal(await app(page, () => window.kilnApp.error), null);
    }
    const ranked = await app(page, () => JSON.parse(localStorage.getItem('kiln.rankings') ?? '[]'));
    console.log(`10 prompts by keyboard: ${keys} keys (${(keys / 10).toFixed(1)} a prompt), orders ${JSON.stringify(orders)}, ${typedFull} full orders of 4 cards`);
    assert.ok(keys / 10 <= 5, `at most 5 keys a prompt, not ${keys / 10}`);
    assert.equal(ranked.length, 11);
    assert.equal(ranked[4].verdict, 'all_bad');
    assert.equal(ranked.filter((r) => r.verdict === 'ranked').length, 10 - 1 - ranked.slice(1).filter((r) => r.verdict === 'skipped').length);
    assert.ok(ranked.slice(1).every((r) => PROMPTS.includes(r.prompt.at(-1).content)), 'the prompts came from the person\'s file');
    const tie = ranked[2];
    if (tie.verdict === 'ranked' && new Set(tie.answers.map((a) => a.trim())).size >= 3) {
      assert.equal(new Set(tie.ranks).size, new Set(tie.answers.map((a) => a.trim())).size - 1, `a tie typed with '=': ${tie.ranks}`);
    }
    // ? shows the keys; the count reads in words
    await page.keyboard.press('?');
    assert.equal(await page.isVisible('#rank-keys'), true);
    assert.match(await page.textContent('#rank-count'), /^\d+ prompts? ranked/);

    // the pairs exported from all of it never prefer an answer to itself
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#pairs-export')]);
    const pairs = (await streamText(await download.createReadStream())).trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
    console.log(`${pairs.length} pairs exported`);
    assert.ok(pairs.length > 0);
    for (const p of pairs) assert.notEqual(p.chosen[0].content.trim(), p.rejected[0].content.trim());

    // a reload keeps the prompts' source and its file
    await page.reload();
    await waitFor(page, () => window.kilnApp?.ready || window.kilnApp?.error);
    const source = await app(page, () => ({
      checked: document.querySelector('input[name=rank-source]:checked').value,
      file: document.getElementById('rank-file-name').textContent,
    }));
    console.log(`after a reload: ${JSON.stringify(source)}`);
    assert.deepEqual(source, { checked: 'file', file: 'my-prompts.jsonl: 12 prompts.' });
    assert.ok(!log.some((l) => l.startsWith('pageerror')), log.join('\n'));
  } finally {
    await browser.close();
  }
});
