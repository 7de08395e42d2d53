// Preference ranking in the real page on WebGPU (SwiftShader), by mouse and keyboard:
// a briefly pretrained and fine-tuned tiny model samples answers; they are ranked by
// dragging, by digit keys (with a tie), submitted unchanged (which asks first), skipped
// and marked all bad; a reload finds the rankings kept; then the reward model trains on
// them, and a few PPO and DPO updates run, with the charts and the before/after view
// holding real numbers and text; KTO on the rankings read as thumbs; and GRPO on a rule
// built in the page, with no ranking. The model is too briefly trained for its answers to be
// good: tests/align_learning.rs measures that alignment works; this test shows the page
// and the WebGPU path do it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { launch, watchRequests, serveWww, isLocal, ARTIFACTS } from './chromium.mjs';

const site = serveWww();

const app = (page, fn, arg) => page.evaluate(fn, arg);
const waitFor = (page, fn, timeout = 900_000) => page.waitForFunction(fn, null, { timeout, polling: 250 });
const idle = (page) => waitFor(page, () => (window.kilnApp.state === 'idle' && !window.kilnApp.training) || window.kilnApp.error);
const noError = async (page) => assert.equal(await app(page, () => window.kilnApp.error), null);

async function ready(page) {
  await waitFor(page, () => window.kilnApp?.ready || window.kilnApp?.error, 120_000);
  await noError(page);
}

/** How many prompts have had their answers shown so far. */
const shown = (page) => app(page, () => window.kilnApp.rankShown ?? 0);

/** Waits for the answers of the prompt after the `count`-th (a verdict brings it by itself);
 * where every answer came out the same (one card, nothing to rank), samples that prompt again. */
async function nextCards(page, count) {
  for (;;) {
    await page.waitForFunction((n) => (window.kilnApp.rankShown ?? 0) > n || window.kilnApp.error, count, { timeout: 300_000, polling: 250 });
    await noError(page);
    if (await page.locator('#rank-cards li').count() >= 2) return;
    count = await shown(page);
    await page.click('#rank-sample');
  }
}

/** Samples answers for the next built-in question and waits for the cards. */
async function sample(page) {
  const count = await shown(page);
  await page.click('#rank-sample');
  await nextCards(page, count);
}

/** The cards' answer texts in the order shown (identical answers are one card). */
const cardTexts = (page) => page.locator('#rank-cards li .text').allTextContents();

/** Does `action`, a verdict, and waits for the next prompt's cards. */
async function verdict(page, action) {
  const count = await shown(page);
  await action();
  await nextCards(page, count);
}

/** Each answer's rank when the cards stay as sampled: its card's number (copies share one). */
function sampledRanks(answers) {
  const cards = [...new Set(answers.map((a) => a.trim()))];
  return answers.map((a) => cards.indexOf(a.trim()) + 1);
}

const stored = (page) => app(page, () => JSON.parse(localStorage.getItem('kiln.rankings') ?? '[]'));

test('on WebGPU: rank answers by mouse and keyboard, keep them across a reload, train the reward model, PPO, DPO and KTO, and GRPO on a rule', async () => {
  const browser = await launch({ webgpu: true });
  try {
    const page = await browser.newPage();
    const requests = watchRequests(page);
    await page.goto(`${site.origin}/index.html?backend=gpu`);
    await ready(page);
    assert.equal(await app(page, () => window.kilnApp.backend.kind), 'gpu');
    await app(page, () => localStorage.removeItem('kiln.rankings'));

    // a model that answers: a few pretraining and fine-tuning steps
    await page.click('#train-tokenizer');
    await waitFor(page, () => /vocabulary of/.test(document.getElementById('tok-stats').textContent) || window.kilnApp.error, 120_000);
    await page.fill('#steps', '5');
    await page.click('#start');
    await idle(page);
    await page.fill('#sft-steps', '5');
    await page.click('#sft-start');
    await idle(page);
    await noError(page);
    const defaults = await app(page, () => window.kilnApp.defaults);
    assert.equal(Number(await page.inputValue('#rank-k')), defaults.training.ppo.answersPerPrompt);

    // 1. the mouse: drag the last card in front of the first
    await sample(page);
    const before = await cardTexts(page);
    const m = before.length;
    assert.ok(m >= 2, `answers to rank: ${JSON.stringify(before)}`);
    await page.dragAndDrop(`#rank-cards li:nth-child(${m})`, '#rank-cards li:nth-child(1)', { targetPosition: { x: 5, y: 5 } });
    const dragged = await cardTexts(page);
    assert.equal(dragged[0], before[m - 1], 'the dragged answer comes first');
    assert.match(await page.textContent('#rank-cards li:nth-child(1) .rank'), /^1$/);
    await verdict(page, () => page.click('#rank-submit'));
    let rankings = await stored(page);
    assert.equal(rankings.length, 1);
    const first = rankings[0];
    assert.equal(first.verdict, 'ranked');
    const best = first.answers.map((a, i) => [a, first.ranks[i]]).filter(([, r]) => r === 1).map(([a]) => a.trim());
    assert.ok(best.length >= 1 && best.every((a) => a === before[m - 1].trim()), `the dragged answer is ranked first: ${JSON.stringify(first)}`);

    // 2. the keyboard alone: a digit on the focused first card moves it to the last place, the
    // focus staying on it; Enter submits
    const keyed0 = await cardTexts(page);
    await page.focus('#rank-cards li:nth-child(1)');
    await page.keyboard.press(String(keyed0.length));
    const moved = await app(page, () => ({ focus: document.activeElement.querySelector('.text')?.textContent, last: [...document.querySelectorAll('#rank-cards li .text')].at(-1).textContent }));
    assert.deepEqual(moved, { focus: keyed0[0], last: keyed0[0] }, 'the moved card is last and keeps the focus');
    await verdict(page, () => page.keyboard.press('Enter'));
    rankings = await stored(page);
    assert.equal(rankings.length, 2);
    const keyed = rankings[1];
    keyed.answers.forEach((a, i) => { if (a.trim() === keyed0[0].trim()) assert.equal(keyed.ranks[i], keyed0.length, `${keyed.ranks}`); });

    // 3. the unchanged sampled order asks for confirmation (declined, then accepted)
    await page.locator('#rank-section').screenshot({ path: path.join(ARTIFACTS, 'ranking.png') });
    let asked = null;
    page.once('dialog', (d) => { asked = d.message(); d.dismiss(); });
    await page.focus('#rank-order');
    await page.keyboard.press('Enter');
    assert.match(asked ?? '', /order they were sampled/);
    assert.equal((await stored(page)).length, 2, 'declined: nothing stored');
    page.once('dialog', (d) => d.accept());
    await verdict(page, () => page.click('#rank-submit'));
    const third = (await stored(page))[2];
    assert.deepEqual(third.ranks, sampledRanks(third.answers));

    // 4. skip one, mark one all bad; the count says what is ranked
    await verdict(page, () => page.click('#rank-skip'));
    await verdict(page, () => page.click('#rank-bad'));
    rankings = await stored(page);
    assert.deepEqual(rankings.map((r) => r.verdict), ['ranked', 'ranked', 'ranked', 'skipped', 'all_bad']);
    assert.match(await page.textContent('#rank-count'), /^3 prompts ranked, 2 skipped or all bad/);
    // answers are text, never markup
    assert.equal(await page.locator('#rank-list b, #rank-list img, #rank-cards img').count(), 0);

    // 5. a reload keeps the rankings (the model is exported and imported back)
    const zip = path.join(ARTIFACTS, 'align-sft-model.zip');
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
    await download.saveAs(zip);
    // and as GGUF in 8-bit blocks: llama.cpp's header (magic, version 3), GPT-2's tensors
    // (4, 12 a layer, the output layer), the architecture its first key
    await page.selectOption('#gguf-type', 'q8_0');
    const [gguf] = await Promise.all([page.waitForEvent('download'), page.click('#export-gguf')]);
    assert.equal(gguf.suggestedFilename(), 'kiln-model-q8_0.gguf');
    const bytes = fs.readFileSync(await gguf.path());
    const layers = await app(page, () => window.kilnApp.model.config.n_layer);
    assert.equal(bytes.subarray(0, 4).toString('latin1'), 'GGUF');
    assert.equal(bytes.readUInt32LE(4), 3);
    assert.equal(Number(bytes.readBigUInt64LE(8)), 4 + 12 * layers + 1);
    const keyLength = Number(bytes.readBigUInt64LE(24));
    assert.equal(bytes.subarray(32, 32 + keyLength).toString(), 'general.architecture');
    assert.match(await page.textContent('#files-stats'), /kiln-model-q8_0\.gguf/);
    console.log(`GGUF (q8_0): ${bytes.length} bytes beside the .zip's ${fs.statSync(zip).size}`);
    await page.reload();
    await ready(page);
    assert.equal((await stored(page)).length, 5);
    assert.match(await page.textContent('#rank-count'), /^3 prompts ranked/);
    assert.equal(await page.locator('#rank-list li').count(), 5);
    await page.setInputFiles('#import', zip);
    await waitFor(page, () => window.kilnApp.model || window.kilnApp.error, 120_000);
    await noError(page);

    // 6. edit a ranking: the first one, its best answer moved to the last place
    await page.click('#rank-section details summary');
    await page.click('#rank-list li:nth-child(1) button');
    const edited0 = await cardTexts(page);
    await page.focus('#rank-cards li:nth-child(1)');
    await page.keyboard.press(String(edited0.length));
    await page.click('#rank-submit');
    rankings = await stored(page);
    assert.equal(rankings.length, 5);
    rankings[0].answers.forEach((a, i) => { if (a.trim() === edited0[0].trim()) assert.equal(rankings[0].ranks[i], edited0.length, 'the edit replaced the first ranking'); });

    // 7. the reward model learns the rankings; its held-out pair accuracy is charted
    await page.fill('#align-steps', '4');
    await page.click('#reward-start');
    await idle(page);
    await noError(page);
    const rewardProgress = await app(page, () => window.kilnApp.progress);
    assert.equal(rewardProgress.at(-1).stage, 'reward');
    assert.equal(rewardProgress.at(-1).step, 4);
    const accuracy = rewardProgress.at(-1).metrics.valPairAccuracy;
    assert.ok(accuracy >= 0 && accuracy <= 1, `held-out pair accuracy ${accuracy}`);
    const rewardChart = await app(page, () => window.kilnApp.alignPlot.data);
    assert.ok(rewardChart[3].some((v) => Number.isFinite(v)), 'the pair-accuracy series has points');
    console.log(`reward model: loss ${rewardProgress.map((p) => p.loss?.toFixed(3)).join(' ')}, held-out pair accuracy ${accuracy}`);

    // 8. a PPO round (four updates on one batch of rollouts): reward and KL charted, before/after shown
    await page.fill('#align-steps', '4');
    await page.click('#ppo-start');
    await idle(page);
    await noError(page);
    const ppo = await app(page, () => window.kilnApp.progress);
    assert.equal(ppo.at(-1).stage, 'ppo');
    const withRollouts = ppo.find((p) => p.metrics?.meanReward != null);
    assert.ok(Number.isFinite(withRollouts.metrics.meanReward) && Number.isFinite(withRollouts.metrics.kl));
    for (const key of ['clipFraction', 'entropy', 'valueLoss']) assert.ok(Number.isFinite(ppo.at(-1).metrics[key]), key);
    const ppoChart = await app(page, () => window.kilnApp.alignPlot.data);
    assert.ok(ppoChart[1].some((v) => Number.isFinite(v)) && ppoChart[2].some((v) => Number.isFinite(v)), 'reward and KL series have points');
    await waitFor(page, () => window.kilnApp.compared || window.kilnApp.error, 300_000);
    const rows = await page.locator('#compare-table tbody tr').count();
    assert.equal(rows, 4);
    const cells = await page.locator('#compare-table tbody td').allTextContents();
    // question (with its story), expected answer, fine-tuned, aligned
    assert.ok(cells.every((c) => typeof c === 'string') && cells.filter((c, i) => i % 4 === 0).every((q) => q.endsWith('?')));
    assert.ok(cells.filter((c, i) => i % 4 === 1).every((a) => a.length > 0), 'each question shows its expected answer');
    console.log(`PPO: meanReward ${withRollouts.metrics.meanReward.toFixed(3)}, KL ${withRollouts.metrics.kl.toFixed(3)}; before/after: ${JSON.stringify(cells.slice(0, 4))}`);
    await page.locator('#align-section').screenshot({ path: path.join(ARTIFACTS, 'align-ppo.png') });

    // 9. DPO on the same rankings
    await app(page, () => { window.kilnApp.compared = null; });
    await page.click('#dpo-start');
    await idle(page);
    await noError(page);
    const dpo = await app(page, () => window.kilnApp.progress);
    assert.equal(dpo.at(-1).stage, 'dpo');
    for (const key of ['pairAccuracy', 'rewardMargin', 'logpChosen', 'logpRejected']) assert.ok(Number.isFinite(dpo.at(-1).metrics[key]), key);
    await waitFor(page, () => window.kilnApp.compared || window.kilnApp.error, 300_000);
    console.log(`DPO: loss ${dpo.map((p) => p.loss?.toFixed(3)).join(' ')}, logp chosen ${dpo.at(-1).metrics.logpChosen.toFixed(2)}, rejected ${dpo.at(-1).metrics.logpRejected.toFixed(2)}`);
    await page.locator('#align-section').screenshot({ path: path.join(ARTIFACTS, 'align-dpo.png') });

    // 10. KTO on the same rankings, read as thumbs (the best answers up, the worst down)
    await app(page, () => { window.kilnApp.compared = null; });
    await page.fill('#align-steps', '3');
    await page.click('#kto-start');
    await idle(page);
    await noError(page);
    const kto = await app(page, () => window.kilnApp.progress);
    assert.equal(kto.at(-1).stage, 'kto');
    assert.equal(kto.at(-1).step, 3);
    assert.ok(kto.every((p) => Number.isFinite(p.loss)), `KTO losses ${kto.map((p) => p.loss)}`);
    await waitFor(page, () => window.kilnApp.compared || window.kilnApp.error, 300_000);

    // 11. no rankings: a rule built in the page. An incomplete check is refused beside the
    // buttons; a pattern the engine cannot bound is refused by the core, naming the check;
    // then GRPO on the rule with the reward model as one of its checks, which reports how
    // many groups scored alike
    await page.click('#rule-box summary');
    assert.deepEqual(await page.locator('#rule-checks .rule-check').evaluateAll((s) => s.map((e) => e.value)), ['endsWith', 'equalsReference']);
    await page.click('#rule-add');
    await page.click('#grpo-start');
    await waitFor(page, () => /check 3 of the rule is missing/.test(document.getElementById('align-section-error')?.textContent ?? ''), 60_000);
    await page.selectOption('#rule-checks li:nth-child(3) .rule-check', 'matches');
    await page.fill('#rule-checks li:nth-child(3) .rule-value', '(a{1000}){1000}');
    await page.click('#grpo-start');
    await waitFor(page, () => /check 3: the pattern .* is too large/.test(document.getElementById('align-section-error')?.textContent ?? ''), 120_000);
    await idle(page);
    // the third check becomes the reward model trained above, its score weighed by a half
    await page.selectOption('#rule-checks li:nth-child(3) .rule-check', 'rewardModel');
    assert.equal(await page.isHidden('#rule-checks li:nth-child(3) .rule-value'), true);
    await page.fill('#rule-checks li:nth-child(3) .rule-weight', '0.5');
    await app(page, () => { window.kilnApp.compared = null; });
    await page.fill('#align-steps', '2');
    await page.click('#grpo-start');
    await idle(page);
    await noError(page);
    const grpo = await app(page, () => window.kilnApp.progress);
    assert.equal(grpo.at(-1).stage, 'grpo');
    const round = grpo.find((p) => p.metrics?.zeroStdShare != null);
    assert.ok(round && round.metrics.zeroStdShare >= 0 && round.metrics.zeroStdShare <= 1 && Number.isFinite(round.metrics.meanReward), JSON.stringify(grpo.at(-1)));
    assert.match(await page.textContent('#align-stats'), /groups all alike/);
    await waitFor(page, () => window.kilnApp.compared || window.kilnApp.error, 300_000);
    console.log(`KTO: loss ${kto.map((p) => p.loss?.toFixed(3)).join(' ')}; GRPO: meanReward ${round.metrics.meanReward.toFixed(3)}, zeroStdShare ${round.metrics.zeroStdShare}`);

    for (const url of requests) assert.ok(isLocal(site, url), url);
  } finally {
    await browser.close();
  }
});
