// Screenshots of sections 5 (fine-tuning), 7 (ranking) and 8 (alignment) walked with a person's
// own data on the CPU backend: `node tests/browser/section-screenshots.mjs OUT_DIR`. The same
// walk runs on an older checkout, for before/after pictures.
import path from 'node:path';
import { startServer } from '../../www/serve.mjs';
import { launch, pretrainedPage, runEnded } from './chromium.mjs';

const out = process.argv[2] ?? 'tests/browser/artifacts';
const server = await startServer(path.resolve('www'), 0);
const browser = await launch({ webgpu: false });
const SENTENCES = ['Rivers carve valleys over long ages', 'Bread rises when yeast feeds on sugar', 'Violins need rosin on the bow',
  'Maps fold along their creases', 'Tides follow the moon', 'Glass is made from sand', 'Owls hunt at night',
  'Copper turns green in the rain', 'Bees dance to show the way', 'Clocks once ran on weights', 'Salt keeps fish from spoiling',
  'Kites rise against the wind', 'Ink was made from soot', 'Bridges sway a little in storms', 'Lanterns burned whale oil'];
const lines = SENTENCES.map((s) => JSON.stringify({ prompt: `First word: ${s}`, completion: s.split(' ')[0] }));
lines.splice(3, 0, '{"prompt": "First word: broken');
lines.splice(9, 0, 'not json at all');
const rankings = SENTENCES.slice(0, 10).map((s) => {
  const w = s.split(' ');
  return JSON.stringify({ prompt: [{ role: 'user', content: `First word: ${s}` }], answers: [w[0], w[1], w[0].toLowerCase(), w.at(-1)], ranks: [1, 3, 2, 4] });
});
try {
  const page = await pretrainedPage(browser, `http://127.0.0.1:${server.address().port}`, 60);
  await page.check('input[name=sft-source][value=file]').catch(() => {});
  await page.setInputFiles('#sft-file', { name: 'first-words.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(`${lines.join('\n')}\n`) });
  await page.fill('#sft-steps', '20');
  await page.click('#sft-start');
  await page.waitForFunction(() => window.kilnApp.progress.some((p) => p.stage === 'sft') || window.kilnApp.error, null, { timeout: 120_000 });
  await runEnded(page);
  await page.locator('#sft-section details').evaluateAll((ds) => ds.forEach((d) => { d.open = true; }));
  await page.locator('#sft-section').screenshot({ path: path.join(out, 'section-5-fine-tune.png') });
  await page.fill('#rank-temperature', '1');
  await page.click('#rank-sample');
  await page.waitForFunction(() => document.querySelectorAll('#rank-cards li').length > 0 || window.kilnApp.error, null, { timeout: 120_000 });
  await page.keyboard.press('?').catch(() => {});
  await page.setInputFiles('#rank-import', { name: 'rankings.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(`${rankings.join('\n')}\n`) });
  await page.waitForFunction(() => /Imported/.test(document.getElementById('rank-count').textContent) || window.kilnApp.error, null, { timeout: 60_000 });
  await page.locator('#rank-section').screenshot({ path: path.join(out, 'section-7-rank.png') });
  await page.fill('#align-steps', '8');
  await page.click('#dpo-start');
  await page.waitForFunction(() => window.kilnApp.progress.some((p) => p.stage === 'dpo') || window.kilnApp.error, null, { timeout: 120_000 });
  await runEnded(page);
  await page.click('#compare');
  await page.waitForFunction(() => document.querySelectorAll('#compare-table tbody tr').length > 0 || window.kilnApp.error, null, { timeout: 300_000 });
  await page.locator('#align-section').screenshot({ path: path.join(out, 'section-8-align.png') });
  console.log(JSON.stringify({ error: await page.evaluate(() => window.kilnApp.error) }));
} finally {
  await browser.close();
  server.close();
}
