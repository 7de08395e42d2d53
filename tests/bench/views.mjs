// Training tokens/s of the demo page with its inspection views closed, against the page
// as it was before the views (another www/ folder), and with the views open, in one run:
// the three alternate, three rounds, each a fresh browser. The figure is the page's own
// (Progress.tokensPerS, the median over a run after its first two reports), on the CPU
// backend on one worker (the least noisy here) and, with --gpu, on WebGPU. Prints JSON.
//   node tests/bench/views.mjs --before ../before/www [--gpu] [--steps N] [--rounds N]
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../www/serve.mjs';
import { launch } from '../browser/chromium.mjs';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const arg = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const beforeRoot = arg('--before');
if (!beforeRoot) throw new Error('usage: node tests/bench/views.mjs --before DIR/www [--gpu] [--steps N] [--rounds N]');
const steps = Number(arg('--steps', 80));
const rounds = Number(arg('--rounds', 3));
const backends = process.argv.includes('--gpu') ? ['cpu', 'gpu'] : ['cpu'];

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Trains `steps` steps through the page's own Start button; returns the page's tokens/s. */
async function timeRun(origin, backend, views) {
  const browser = await launch({ webgpu: backend === 'gpu' });
  try {
    const page = await browser.newPage();
    await page.goto(`${origin}/index.html?backend=${backend}&threads=1`);
    await page.waitForFunction(() => window.kilnApp?.ready || window.kilnApp?.error, null, { timeout: 120_000 });
    const viewCount = await page.evaluate((open) => {
      const views = [...document.querySelectorAll('details.view')];
      for (const d of views) d.open = open;
      return views.length;
    }, views === 'open');
    await page.fill('#steps', String(steps));
    await page.click('#start');
    await page.waitForFunction(() => window.kilnApp.progress.length > 0 && !window.kilnApp.training, null, { timeout: 1_800_000 });
    const result = await page.evaluate(() => ({
      rates: window.kilnApp.progress.map((p) => p.tokensPerS).filter((x) => x > 0),
      reads: window.kilnApp.inside?.reads ?? null,
      error: window.kilnApp.error,
    }));
    if (result.error) throw new Error(result.error);
    return { tokens_per_s: median(result.rates.slice(2)), reports: result.rates.length, views: viewCount, view_reads: result.reads };
  } finally {
    await browser.close();
  }
}

const before = await startServer(path.resolve(beforeRoot), 0);
const after = await startServer(path.join(ROOT, 'www'), 0);
const origin = (server) => `http://127.0.0.1:${server.address().port}`;
const out = { steps, rounds, runs: [], median: {} };
try {
  for (const backend of backends) {
    const kinds = { before: [], closed: [], open: [] };
    for (let r = 0; r < rounds; r += 1) {
      for (const [kind, server, views] of [['before', before, 'none'], ['closed', after, 'closed'], ['open', after, 'open']]) {
        const run = await timeRun(origin(server), backend, views);
        kinds[kind].push(run.tokens_per_s);
        out.runs.push({ backend, round: r + 1, page: kind, ...run });
        process.stderr.write(`${backend} round ${r + 1} ${kind}: ${run.tokens_per_s.toFixed(0)} tokens/s (view readings ${run.view_reads})\n`);
      }
    }
    const m = Object.fromEntries(Object.entries(kinds).map(([k, xs]) => [k, median(xs)]));
    const spread = (xs) => (Math.max(...xs) - Math.min(...xs)) / median(xs);
    out.median[backend] = { ...m, closed_over_before: m.closed / m.before, open_over_before: m.open / m.before,
      spread_before: spread(kinds.before), spread_closed: spread(kinds.closed) };
  }
} finally {
  before.close();
  after.close();
}
console.log(JSON.stringify(out, null, 2));
