// Headless Debian Chromium for the browser tests, driven by playwright-core.
// WebGPU in headless Chromium on a machine without a GPU comes from SwiftShader and
// needs --enable-unsafe-webgpu; without that flag requestAdapter() returns null, which
// is how the tests get a browser with no WebGPU. The network flags keep Chromium from
// calling home (this machine has no route out, and the page must not need one).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { startServer } from '../../www/serve.mjs';

export const ARTIFACTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'artifacts');

const QUIET = [
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-default-apps',
];

const WEBGPU = ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-webgpu-adapter=swiftshader'];

export async function launch({ webgpu = true } = {}) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: webgpu ? [...QUIET, ...WEBGPU] : QUIET,
  });
}

/// Records every request the page makes, so a test can assert none leaves the origin.
export function watchRequests(page) {
  const urls = [];
  page.on('request', (request) => urls.push(request.url()));
  return urls;
}

/** Serves www/ on a free port around a test file's tests; `site.origin` is set before they run. */
export function serveWww() {
  const site = { origin: null };
  let server;
  before(async () => {
    server = await startServer(path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'www'), 0);
    site.origin = `http://127.0.0.1:${server.address().port}`;
  });
  after(() => server.close());
  return site;
}

/** Whether a request stays with the page: its origin, or blob:/data: URLs it made. */
export const isLocal = (site, url) => url.startsWith(site.origin) || url.startsWith('blob:') || url.startsWith('data:');

/** Opens the page (`query` e.g. '?backend=cpu') in `target` (a browser or a context) and
 * waits until it has started: {page, requests (every URL it asked for), log (console and
 * page errors)}. */
export async function openPage(site, target, query = '') {
  const page = await target.newPage({ acceptDownloads: true });
  const requests = watchRequests(page);
  const log = [];
  page.on('console', (m) => log.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));
  await page.goto(`${site.origin}/index.html${query}`);
  await page.waitForFunction(() => window.kilnApp?.ready || window.kilnApp?.error, null, { timeout: 120_000 });
  const error = await page.evaluate(() => window.kilnApp.error);
  assert.equal(error, null, `the page failed to start: ${error}\n${log.join('\n')}`);
  return { page, requests, log };
}

/** The by-hand picture scripts' wait: the run ended (or the page failed). */
export const runEnded = (page) => page.waitForFunction(() => (window.kilnApp.state === 'idle' && !window.kilnApp.training
  && window.kilnApp.progress.length > 0) || window.kilnApp.error, null, { timeout: 900_000, polling: 500 });

/** For the by-hand picture scripts: a 1100×900 page at `origin` on the CPU backend (SwiftShader's
 * WebGPU is slow), its tokenizer trained on the built-in stories and `steps` of pretraining done. */
export async function pretrainedPage(browser, origin, steps) {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  await page.goto(`${origin}/index.html?backend=cpu`);
  await page.waitForFunction(() => window.kilnApp?.ready, null, { timeout: 60_000 });
  await page.click('#train-tokenizer');
  await page.waitForFunction(() => window.kilnApp.tokenizer, null, { timeout: 60_000 });
  await page.fill('#steps', String(steps));
  await page.click('#start');
  await runEnded(page);
  return page;
}
