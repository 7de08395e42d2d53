// Makes the README's screenshot of the page: the tiny preset pretrained with the default
// steps on the built-in stories, fine-tuned on the built-in story questions, a held-out
// question asked in the chat, and a generation in the playground — on the CPU backend
// (?backend=cpu), since SwiftShader's WebGPU is slow. `node tests/browser/readme-screenshot.mjs`
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../www/serve.mjs';
import { launch } from './chromium.mjs';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const server = await startServer(path.join(ROOT, 'www'), 0);
const browser = await launch({ webgpu: false });
const idle = (page) => page.waitForFunction(() => window.kilnApp.state === 'idle' && !window.kilnApp.training && window.kilnApp.progress.length > 0, null, { timeout: 900_000, polling: 500 });
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  await page.goto(`http://127.0.0.1:${server.address().port}/index.html?backend=cpu`);
  await page.waitForFunction(() => window.kilnApp?.ready, null, { timeout: 60_000 });
  await page.click('#train-tokenizer');
  await page.waitForFunction(() => window.kilnApp.tokenizer, null, { timeout: 60_000 });
  await page.fill('#steps', '300');
  await page.click('#start');
  await idle(page);
  await page.click('#sft-start');
  await page.waitForFunction(() => window.kilnApp.progress.some((p) => p.stage === 'sft'), null, { timeout: 60_000 });
  await idle(page);
  await page.click('#chat-heldout');
  await page.waitForFunction(() => window.kilnApp.expectedAnswer != null || window.kilnApp.error, null, { timeout: 60_000 });
  await page.click('#chat-send');
  await page.waitForFunction(() => window.kilnApp.lastAnswer != null, null, { timeout: 60_000 });
  await page.fill('#temperature', '0.7');
  await page.click('#generate');
  await page.waitForFunction(() => window.kilnApp.generated != null, null, { timeout: 60_000 });
  const out = path.join(ROOT, 'www', 'docs', 'kiln-page.png');
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  server.close();
}
