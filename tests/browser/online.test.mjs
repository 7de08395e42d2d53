// Learning as you rank, in the real page on the CPU backend: with the box ticked, a
// scripted person ranks by keyboard alone (the order typed, Enter); after every fourth
// ranking the worker runs a few DPO updates while the ranking goes on, each update a point
// on the chart; the page answers clicks during an update; undo puts back the weights the
// update began from, bit for bit; a reload resumes the loop from its autosave; thumbs on
// cards and chat answers, exported as TRL's KTO lines, and KTO on them; several people's
// agreement, and the majority's rankings added.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { launch, watchRequests, serveWww, isLocal, ARTIFACTS } from './chromium.mjs';

const site = serveWww();

const app = (page, fn, arg) => page.evaluate(fn, arg);
const waitFor = (page, fn, arg, timeout = 600_000) => page.waitForFunction(fn, arg, { timeout, polling: 250 });
const noError = async (page) => assert.equal(await app(page, () => window.kilnApp.error), null);
const idle = (page) => waitFor(page, () => (window.kilnApp.state === 'idle' && !window.kilnApp.training) || window.kilnApp.error);

/** SHA-256 of the model's weights as the page would export them (hex). */
const weightsDigest = (page) => app(page, async () => {
  const folder = await window.kilnApp.kiln.exportModel();
  const hash = await crypto.subtle.digest('SHA-256', folder['model.safetensors']);
  return [...new Uint8Array(hash)].map((b) => b.toString(16).padStart(2, '0')).join('');
});

/** Waits for the next prompt's cards (two or more; one card, all answers alike, is sampled again). */
async function nextCards(page, count) {
  for (;;) {
    await waitFor(page, (n) => (window.kilnApp.rankShown ?? 0) > n || window.kilnApp.error, count);
    await noError(page);
    if (await page.locator('#rank-cards li').count() >= 2) return;
    count = await app(page, () => window.kilnApp.rankShown ?? 0);
    await page.click('#rank-sample');
  }
}

test('on the CPU: learn as I rank, by keyboard, with updates charted as they land, undo, and a reload that goes on', async () => {
  const browser = await launch({ webgpu: false });
  try {
    const page = await browser.newPage();
    const requests = watchRequests(page);
    await page.goto(`${site.origin}/index.html?backend=cpu`);
    await waitFor(page, () => window.kilnApp?.ready || window.kilnApp?.error);
    await noError(page);
    await app(page, () => localStorage.removeItem('kiln.rankings'));
    await page.click('#train-tokenizer');
    await waitFor(page, () => /vocabulary of/.test(document.getElementById('tok-stats').textContent) || window.kilnApp.error);
    await page.fill('#steps', '5');
    await page.click('#start');
    await idle(page);
    await page.fill('#sft-steps', '5');
    await page.click('#sft-start');
    await idle(page);
    await noError(page);

    await page.check('#rank-online');
    assert.equal(await page.isVisible('#online-box'), true);
    let count = await app(page, () => window.kilnApp.rankShown ?? 0);
    let afterFirst;
    await page.click('#rank-sample');
    // eight rankings, each by keys alone: the second card first, Enter
    for (let i = 0; i < 8; i += 1) {
      await nextCards(page, count);
      count = await app(page, () => window.kilnApp.rankShown ?? 0);
      await page.focus('#rank-order');
      await page.keyboard.type('21');
      await page.keyboard.press('Enter');
      if (i === 3) {
        // the fourth ranking starts an update in the worker; the page answers a click
        // meanwhile (how soon is printed, not asserted: tests do not time)
        const seen = await app(page, () => new Promise((resolve) => {
          const summary = document.querySelector('#rank-section details summary');
          const t0 = performance.now();
          summary.addEventListener('click', () => resolve({ ms: performance.now() - t0, pending: window.kilnApp.online.pending }), { once: true });
          summary.click();
        }));
        console.log(`a click during the update: handled after ${seen.ms.toFixed(1)} ms, updates in flight ${seen.pending}`);
        // the weights the first update left, to hold the undo of the second to
        await waitFor(page, () => window.kilnApp.online.updates.length >= 1 && window.kilnApp.online.pending === 0 || window.kilnApp.online.error);
        afterFirst = await weightsDigest(page);
      }
    }
    await nextCards(page, count);
    await waitFor(page, () => window.kilnApp.online.updates.length >= 2 && window.kilnApp.online.pending === 0 || window.kilnApp.online.error);
    const online = await app(page, () => ({ ...window.kilnApp.online, chart: window.kilnApp.onlinePlot.data }));
    assert.equal(online.error, null);
    assert.deepEqual(online.updates.map((u) => u.rankings), [4, 8]);
    assert.ok(online.updates.every((u) => u.valPairAccuracy >= 0 && u.valPairAccuracy <= 1 && Number.isFinite(u.loss) && Number.isFinite(u.kl)), JSON.stringify(online.updates));
    assert.deepEqual(online.chart[2], online.updates.map((u) => u.kl), 'the KL is charted');
    assert.deepEqual(online.chart[0], [4, 8], 'a point a update');
    assert.match(await page.textContent('#online-stats'), /2 updates, the last after 8 rankings/);
    const rankings = await app(page, () => JSON.parse(localStorage.getItem('kiln.rankings')));
    assert.equal(rankings.length, 8);
    await page.locator('#rank-section').screenshot({ path: path.join(ARTIFACTS, 'rank-online.png') });

    // undo: the last update taken back, its point gone; the rankings stay
    const afterSecond = await weightsDigest(page);
    assert.notEqual(afterSecond, afterFirst, 'the second update changed the weights');
    await page.click('#rank-undo');
    await waitFor(page, () => window.kilnApp.online.updates.length === 1 || window.kilnApp.error);
    await noError(page);
    assert.equal(await weightsDigest(page), afterFirst, 'undo puts back the weights the first update left, bit for bit');
    assert.deepEqual(await app(page, () => window.kilnApp.onlinePlot.data[0]), [4]);
    assert.equal((await app(page, () => JSON.parse(localStorage.getItem('kiln.rankings')))).length, 8);

    // a reload: the autosave after the undo holds the model and the loop; resumed, the
    // chart has its one point and the loop goes on, the next update after the 12th ranking
    await page.reload();
    await waitFor(page, () => window.kilnApp?.ready || window.kilnApp?.error);
    await waitFor(page, () => !document.getElementById('autosave-offer').hidden, null, 60_000);
    await page.click('#autosave-resume');
    await waitFor(page, () => window.kilnApp.model || window.kilnApp.error);
    await noError(page);
    assert.deepEqual(await app(page, () => window.kilnApp.online.updates.map((u) => u.rankings)), [4]);
    assert.equal(await page.isChecked('#rank-online'), true);
    assert.deepEqual(await app(page, () => window.kilnApp.onlinePlot.data[0]), [4]);
    count = await app(page, () => window.kilnApp.rankShown ?? 0);
    await page.click('#rank-sample');
    for (let i = 0; i < 4; i += 1) {
      await nextCards(page, count);
      count = await app(page, () => window.kilnApp.rankShown ?? 0);
      await page.focus('#rank-order');
      await page.keyboard.type('21');
      await page.keyboard.press('Enter');
    }
    await waitFor(page, () => window.kilnApp.online.updates.length >= 2 && window.kilnApp.online.pending === 0 || window.kilnApp.online.error);
    const resumed = await app(page, () => window.kilnApp.online);
    assert.equal(resumed.error, null);
    assert.deepEqual(resumed.updates.map((u) => u.rankings), [4, 12]);
    console.log(`online updates: ${JSON.stringify(online.updates)}; after the reload: ${JSON.stringify(resumed.updates.at(-1))}`);

    // thumbs: + on a focused card, a card's − button, a thumb down on a chat answer; the
    // same thumb twice takes it back; exported in TRL's unpaired (KTO) format
    await nextCards(page, count);
    const cards = await page.locator('#rank-cards li .text').allTextContents();
    await page.focus('#rank-cards li:nth-child(1)');
    await page.keyboard.press('+');
    await page.click('#rank-cards li:nth-child(2) .thumb-down');
    await page.click('#rank-cards li:nth-child(2) .thumb-up');
    await page.click('#rank-cards li:nth-child(2) .thumb-up');
    assert.equal(await page.getAttribute('#rank-cards li:nth-child(1) .thumb-up', 'aria-pressed'), 'true');
    await page.fill('#chat-input', 'Who came to play?');
    await page.click('#chat-send');
    await waitFor(page, () => window.kilnApp.lastAnswer != null || window.kilnApp.error);
    await page.click('#chat-log .msg.assistant + .thumbs .thumb-down');
    const thumbs = await app(page, () => JSON.parse(localStorage.getItem('kiln.thumbs')));
    assert.deepEqual(thumbs.map((a) => [a.completion[0].content, a.label]), [[cards[0], true], [await app(page, () => window.kilnApp.lastAnswer), false]]);
    assert.match(await page.textContent('#thumbs-count'), /^1 thumbs up, 1 down/);
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#thumbs-export')]);
    const lines = fs.readFileSync(await download.path(), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(lines.map((l) => Object.keys(l).sort()), [['completion', 'label', 'prompt'], ['completion', 'label', 'prompt']]);
    assert.equal(lines[1].prompt.at(-1).content, 'Who came to play?');

    // KTO on the thumbs and the rankings (read as thumbs)
    await page.fill('#align-steps', '2');
    await page.click('#kto-start');
    await idle(page);
    await noError(page);
    const kto = await app(page, () => window.kilnApp.progress);
    assert.equal(kto.at(-1).stage, 'kto');
    assert.ok(kto.every((p) => Number.isFinite(p.loss)));

    // least sure first: of the next 4 built-in questions, the one whose answers the model
    // finds most alike in likelihood is asked
    await page.check('#rank-doubt');
    count = await app(page, () => window.kilnApp.rankShown ?? 0);
    await page.focus('#rank-order');
    await page.keyboard.type('21');
    await page.keyboard.press('Enter');
    await nextCards(page, count);
    const doubt = await app(page, () => window.kilnApp.doubt);
    assert.equal(doubt.spreads.length, 4);
    assert.ok(doubt.spreads.every((s) => s >= 0) && doubt.spreads[doubt.pick] === Math.min(...doubt.spreads), JSON.stringify(doubt.spreads));
    assert.equal(await page.textContent('#rank-question'), doubt.window[doubt.pick].at(-1).content);
    console.log(`least sure first: spreads ${doubt.spreads.map((s) => s.toFixed(3)).join(' ')}, asked ${doubt.pick + 1} of 4`);

    // several people: ana and bo order two prompts' answers alike, cy the other way round;
    // then the majority's rankings are added to the page's own
    const prompt = (q) => [{ role: 'user', content: q }];
    const person = (ranks) => ['Who?', 'Where?'].map((q) => JSON.stringify({ prompt: prompt(q), answers: ['a', 'b', 'c'], ranks, verdict: 'ranked' })).join('\n');
    const dir = fs.mkdtempSync(path.join(ARTIFACTS, 'people-'));
    const named = ['ana', 'bo', 'cy'].map((name, i) => {
      const file = path.join(dir, `${name}.jsonl`);
      fs.writeFileSync(file, person(i < 2 ? [1, 2, 3] : [3, 2, 1]));
      return file;
    });
    await page.click('#people-box summary');
    await page.setInputFiles('#people-files', named);
    await waitFor(page, () => window.kilnApp.people || window.kilnApp.error);
    await noError(page);
    const people = await app(page, () => window.kilnApp.people.agreement);
    assert.deepEqual(people.annotators.map((p) => [p.name, p.rankings, p.pairs]), [['ana', 2, 6], ['bo', 2, 6], ['cy', 2, 6]]);
    assert.deepEqual(people.between.map((b) => [b.annotators.join('-'), b.pairwiseAgreement, b.meanTauB]), [['ana-bo', 1, 1], ['ana-cy', 0, -1], ['bo-cy', 0, -1]]);
    // the krippendorff package (PyPI) gives -0.2592592592592593 for these ranks: -7/27
    assert.ok(Math.abs(people.krippendorffAlpha + 7 / 27) < 1e-12, `two against one, reversed: alpha ${people.krippendorffAlpha}`);
    assert.equal(await page.locator('#people-between tbody tr').count(), 3);
    const before = (await app(page, () => JSON.parse(localStorage.getItem('kiln.rankings')))).length;
    await page.selectOption('#people-combine', 'majority');
    await page.click('#people-add');
    await waitFor(page, (n) => JSON.parse(localStorage.getItem('kiln.rankings')).length > n || window.kilnApp.error, before);
    const added = (await app(page, () => JSON.parse(localStorage.getItem('kiln.rankings')))).slice(before);
    assert.deepEqual(added.map((r) => [r.ranks, r.annotator]), [[[1, 2, 3], 'majority'], [[1, 2, 3], 'majority']]);
    console.log(`people: ${JSON.stringify(people.between)}, alpha ${people.krippendorffAlpha}`);
    for (const url of requests) assert.ok(isLocal(site, url), url);
  } finally {
    await browser.close();
  }
});
