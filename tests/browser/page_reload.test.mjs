// A reload resumes the context, not just the weights (CPU backend, small steps): the
// person's own prose is pretrained on and fine-tuned; after a reload the resume offer is at
// the top, in view and focused, the page not scrolled away from it; resuming puts back the
// text (section 1), the stage map and the last stats line; Start on the same text goes
// on without a word, Start on another text asks first; a file whose words were not kept
// is named to be opened again, and the same file opened again keeps the model. Also: an
// empty paste and an empty playground prompt are refused in words, a chat model's
// playground output says why it may end at once, a new model clears the old one's stats,
// the stage label follows the reward model, the alignment read-outs explain themselves on
// hover, and the "no training row" line follows a switch to Chinese.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, serveWww, openPage } from './chromium.mjs';
import zh from '../../www/i18n/zh.js';

const site = serveWww();

/** A person's own prose (not the built-in stories): a lighthouse keeper's notes. */
const PROSE_DAYS = [
  'The lamp was lit at dusk, as every evening, and the wind came round to the north before the tide turned.',
  'Mending the north window took most of the morning. The putty would not set in the cold, so I warmed it on the stove.',
  'A coaster passed close under the rocks at noon, low in the water with slate from the quarry at Penhallow.',
  'Fog from the afternoon until late. The horn sounded every half minute for six hours, and my ears still ring with it.',
  'Counted forty gannets diving off the point. The seals have come back to the long ledge below the boathouse.',
  'The supply boat was two days late. Flour, paraffin, letters from my sister, and a new wick for the spare burner.',
  'Cleaned the lens with spirit and soft cloth. Every prism has to be wiped the same way, top to bottom, or it streaks.',
  'Heavy sea in the night. Spray reached the gallery rail, and the whole tower hummed like a struck bell until dawn.',
  'Painted the railings on the landward side while the weather held. Green on the gate, white on everything else.',
  'A quiet week. I read the almanac twice, mended two nets for the harbour master, and wrote up the weather for the board.',
].map((line, i) => `Day ${i + 1}. ${line} ${line.split(' ').reverse().join(' ')}`).join('\n\n');

const app = (page, fn, arg) => page.evaluate(fn, arg);
const waitFor = (page, fn, arg, timeout = 300_000) => page.waitForFunction(fn, arg, { timeout, polling: 250 });
const noError = async (page) => assert.equal(await app(page, () => window.kilnApp.error), null);

const PROSE = `${PROSE_DAYS}\n\n${PROSE_DAYS.replace(/Day (\d+)/g, (_, n) => `Day ${Number(n) + 10}`)}`;

/** A section's message line (made on first use), once it says something. */
async function lineOf(page, section) {
  await waitFor(page, (id) => document.getElementById(`${id}-error`)?.textContent, section, 60_000);
  return page.textContent(`#${section}-error`);
}

/** What a reload should give back: the text, the stage map, the stats line and the stage. */
const readContext = (page) => app(page, () => ({
  source: document.querySelector('input[name=source]:checked').value,
  pasted: document.getElementById('paste').value.length,
  corpus: document.getElementById('corpus-stats').textContent,
  map: Object.fromEntries([...document.querySelectorAll('.stage-map li')].map((li) => [li.id, `${li.dataset.state}: ${li.querySelector('.state').textContent}`])),
  stats: document.getElementById('train-stats').textContent,
  stage: document.getElementById('stage-name').textContent,
}));

test('a reload resumes the context: the offer in view and focused, then the text, stage map and stats back; another text asks first', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
    const { page, log } = await openPage(site, context, '?backend=cpu');

    // an empty paste is refused as such (not as an empty file)
    await page.check('input[name=source][value=paste]');
    await page.click('#use-text');
    const empty = await lineOf(page, 'data-section');
    console.log(`empty paste: ${empty}`);
    assert.match(empty, /the pasted text is empty/);
    assert.doesNotMatch(empty, /file/);

    // the person's prose, a tokenizer, a few steps of pretraining and of fine-tuning
    await page.fill('#paste', PROSE);
    await page.click('#use-text');
    await waitFor(page, () => window.kilnApp.text?.source === 'paste' || window.kilnApp.error);
    await noError(page);
    await page.click('#train-tokenizer');
    await waitFor(page, () => /vocabulary of/.test(document.getElementById('tok-stats').textContent) || window.kilnApp.error);
    await page.fill('#steps', '6');
    await page.click('#start');
    // the run autosaves as its stage begins and as it ends: wait for the end's
    await waitFor(page, () => (window.kilnApp.state === 'idle' && window.kilnApp.lastAutosave?.step === 6) || window.kilnApp.error);
    await noError(page);
    await page.fill('#sft-steps', '3');
    await page.click('#sft-start');
    await waitFor(page, () => (window.kilnApp.state === 'idle' && window.kilnApp.lastAutosave?.stage === 'sft' && window.kilnApp.lastAutosave.step === 3) || window.kilnApp.error);
    await noError(page);
    const before = await readContext(page);
    console.log(`before the reload: ${JSON.stringify(before)}`);
    assert.equal(before.map['map-pretrain'], 'done: done · 6 steps');

    // a question left half ranked, and the page scrolled far down, when it reloads
    await app(page, () => {
      localStorage.setItem('kiln.ranking-in-progress', JSON.stringify({ prompt: [{ role: 'user', content: 'Which is best?' }], answers: ['one', 'two'], ranks: [1, 2], changed: false }));
      window.scrollTo(0, document.body.scrollHeight);
    });
    await page.reload();
    await waitFor(page, () => window.kilnApp?.ready || window.kilnApp?.error, null, 120_000);
    await noError(page);
    const landing = await app(page, () => {
      const box = document.getElementById('autosave-offer').getBoundingClientRect();
      return {
        shown: !document.getElementById('autosave-offer').hidden, top: Math.round(box.top), bottom: Math.round(box.bottom),
        height: window.innerHeight, scrollY: window.scrollY, focused: document.activeElement?.id,
        offer: document.getElementById('autosave-text').textContent,
      };
    });
    console.log(`after the reload: ${JSON.stringify(landing)}`);
    assert.ok(landing.shown, 'the resume offer is shown');
    assert.ok(landing.top >= 0 && landing.bottom <= landing.height, 'the whole offer is in the viewport');
    assert.ok(landing.scrollY < 2, `the page is at the top (scrollY ${landing.scrollY})`);
    assert.equal(landing.focused, 'autosave-resume', 'Resume is focused');
    assert.match(landing.offer, /Fine-tuning \(SFT\) at step 3 of 3/);

    // Enter on the focused button resumes
    await page.keyboard.press('Enter');
    await waitFor(page, () => /Resumed/.test(document.getElementById('autosave-status').textContent) || window.kilnApp.error, null, 60_000);
    await noError(page);
    const after = await readContext(page);
    console.log(`after resuming: ${JSON.stringify(after)}`);
    assert.equal(after.source, 'paste');
    assert.equal(await page.inputValue('#paste'), PROSE, 'the pasted prose is back in its box');
    assert.equal(after.corpus, before.corpus, 'section 1 says the same figures');
    assert.deepEqual(after.map, before.map, 'the stage map as it was');
    assert.equal(after.map['map-pretrain'], 'done: done · 6 steps', 'pretraining stays done, not "ready to start"');
    assert.doesNotMatch(after.stats, /(^|\D)0 tokens\/s|0\.00e\+0/);
    const figures = (s) => s.match(/(\S+) tokens\/s .* lr (\S+)/).slice(1);
    assert.deepEqual(figures(after.stats), figures(before.stats), 'the last real speed and learning rate');
    assert.equal(after.stage, '— fine-tuning');
    const texts = await app(page, () => [window.kilnApp.text.hash, window.kilnApp.modelText.hash]);
    assert.equal(texts[0], texts[1], 'the text in use is the one the model learnt');

    // the playground: an empty prompt is refused in words; a chat model's output says why it may end at once
    await page.fill('#prompt', '');
    await page.click('#generate');
    const refused = await lineOf(page, 'play-section');
    console.log(`empty playground prompt: ${refused}`);
    assert.match(refused, /type a prompt first/);
    await page.fill('#prompt', 'The lamp');
    await page.fill('#max-tokens', '12');
    await page.click('#generate');
    await waitFor(page, () => (!document.getElementById('generate').disabled && document.getElementById('play-note').textContent) || window.kilnApp.error);
    const note = await page.textContent('#play-note');
    console.log(`playground on the fine-tuned model: ${JSON.stringify(await page.textContent('#output'))}; note: ${note}`);
    assert.match(note, /fine-tuned for chat.*6 · Chat/);
    assert.equal(await page.textContent('#play-section-error'), '', 'the refusal went with the next good Generate');

    // Start on the text the model learnt: no question, it pretrains
    let asked = null;
    page.on('dialog', (d) => { asked = d.message(); d.dismiss(); });
    await page.fill('#steps', '2');
    await page.click('#start');
    await waitFor(page, () => (window.kilnApp.state === 'idle' && window.kilnApp.progress.at(-1)?.stage === 'pretrain') || window.kilnApp.error);
    await noError(page);
    assert.equal(asked, null, 'no question on the same text');
    assert.equal(await page.textContent('#stage-name'), '— pretraining');

    // another text: Start asks first (declined: nothing runs)
    await page.check('input[name=source][value=zh]');
    await waitFor(page, () => window.kilnApp.text?.source === 'zh');
    const steps = await app(page, () => window.kilnApp.progress.length);
    await page.click('#start');
    await waitFor(page, () => window.kilnApp.warnedText);
    console.log(`Start on another text asks: ${asked}`);
    assert.match(asked, /pretrained on the text you pasted \([\d,]+ bytes\).*now Built-in stories \(中文\)/);
    assert.equal(await app(page, () => [window.kilnApp.state, window.kilnApp.progress.length, window.kilnApp.model]).then(JSON.stringify), JSON.stringify(['idle', steps, null]));

    // a new model: the old one's stats go
    await page.selectOption('#tok-kind', 'char');
    await page.click('#create-model');
    await waitFor(page, () => /parameters/.test(document.getElementById('model-stats').textContent) || window.kilnApp.error);
    await noError(page);
    const fresh = await app(page, () => ['train-stats', 'stage-name', 'sft-stats', 'align-stats'].map((id) => document.getElementById(id).textContent));
    console.log(`after Create model: ${JSON.stringify(fresh)}`);
    assert.deepEqual(fresh, ['step – · loss – · validation – · – tokens/s · ETA – · lr –', '', '', '']);

    // a file whose words are not kept (as when it is too large: only its name and hash
    // are): after the reload the page says which file to open again, and the same file
    // opened again keeps the resumed model, Start going on without a question
    const file = { name: 'keeper.txt', mimeType: 'text/plain', buffer: Buffer.from(PROSE_DAYS) };
    await page.check('input[name=source][value=file]');
    await page.setInputFiles('#file', file);
    await waitFor(page, () => window.kilnApp.text?.source === 'file' || window.kilnApp.error);
    await page.fill('#steps', '2');
    await page.click('#start');
    await waitFor(page, () => (window.kilnApp.state === 'idle' && window.kilnApp.lastAutosave?.step === 2) || window.kilnApp.error);
    await noError(page);
    await app(page, () => Object.keys(localStorage).filter((k) => k.startsWith('kiln.run-text.')).forEach((k) => localStorage.removeItem(k)));
    await page.reload();
    await waitFor(page, () => window.kilnApp?.ready || window.kilnApp?.error, null, 120_000);
    assert.equal(await app(page, () => document.activeElement?.id), 'autosave-resume');
    await page.keyboard.press('Enter');
    await waitFor(page, () => /Resumed/.test(document.getElementById('autosave-status').textContent) || window.kilnApp.error, null, 60_000);
    await noError(page);
    const reopen = await readContext(page);
    console.log(`resumed, the file's words not kept: ${JSON.stringify(reopen)}`);
    assert.equal(reopen.source, 'file');
    assert.match(reopen.corpus, /trained on the file “keeper\.txt” \([\d,]+ bytes\).*open it again/);
    await page.setInputFiles('#file', file);
    await waitFor(page, () => /documents/.test(document.getElementById('corpus-stats').textContent) || window.kilnApp.error);
    assert.ok(await app(page, () => window.kilnApp.model && window.kilnApp.text.hash === window.kilnApp.modelText.hash), 'the same file keeps the model');
    asked = null;
    await page.fill('#steps', '3');
    await page.click('#start');
    await waitFor(page, () => (window.kilnApp.state === 'idle' && window.kilnApp.progress.at(-1)?.step === 3) || window.kilnApp.error);
    await noError(page);
    assert.equal(asked, null, 'no question on the same file');

    // (last: a new model made after a preference stage would carry that stage's kept models
    // into its autosaves, which then do not restore; a core fix, see the report)
    // the reward model (from rankings given to the page): the stage label follows, the read-outs explain themselves
    await app(page, () => {
      const ranked = (q) => ({ prompt: [{ role: 'user', content: q }], answers: ['The lamp is lit.', 'Fog.', 'The seals came back.'], ranks: [1, 3, 2], verdict: 'ranked' });
      window.kilnApp.rankings = ['When is the lamp lit?', 'What came late?', 'What did you paint?', 'What did you count?', 'What hummed?'].map(ranked);
    });
    await page.fill('#align-steps', '2');
    await page.click('#reward-start');
    await waitFor(page, () => (window.kilnApp.state === 'idle' && window.kilnApp.rewardTrained) || window.kilnApp.error);
    await noError(page);
    const readOuts = await app(page, () => ({
      stage: document.getElementById('stage-name').textContent,
      legend: [...document.querySelectorAll('#align-chart .u-legend .u-series')].map((row) => [row.textContent.trim(), row.title]),
      metrics: [...document.querySelectorAll('#align-stats span[title]')].map((s) => [s.textContent, s.title]),
    }));
    console.log(`after the reward model: ${JSON.stringify(readOuts)}`);
    assert.equal(readOuts.stage, '— training the reward model');
    assert.ok(readOuts.legend.slice(1).every(([, title]) => title.length > 20), 'each legend line has its explanation');
    assert.ok(readOuts.metrics.length >= 2 && readOuts.metrics.every(([, title]) => title.length > 20), 'each measure has its explanation');

    // a preference stage has no training row: the line says so, in Chinese after the switch
    await waitFor(page, () => /No training row/.test(document.getElementById('row-stats').textContent) || window.kilnApp.error);
    await page.selectOption('#language', 'zh');
    const row = await page.textContent('#row-stats');
    console.log(`the training-row line in Chinese: ${row}`);
    assert.equal(row, zh['inside.rowNone']);
    await page.selectOption('#language', 'en');

    assert.ok(!log.some((l) => l.startsWith('pageerror')), log.join('\n'));
  } finally {
    await browser.close();
  }
});
