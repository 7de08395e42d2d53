// Makes the README's screenshot of the page: the tiny preset pretrained with the default
// steps on the built-in stories, fine-tuned on the built-in story questions, a held-out
// question asked in the chat, and a generation in the playground — on the CPU backend
// (?backend=cpu), since SwiftShader's WebGPU is slow. `node tests/browser/readme-screenshot.mjs`
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../www/serve.mjs';
import { launch, pretrainedPage, runEnded } from './chromium.mjs';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const server = await startServer(path.join(ROOT, 'www'), 0);
const browser = await launch({ webgpu: false });
try {
  const page = await pretrainedPage(browser, `http://127.0.0.1:${server.address().port}`, 300);
  await page.click('#sft-start');
  await page.waitForFunction(() => window.kilnApp.progress.some((p) => p.stage === 'sft'), null, { timeout: 60_000 });
  await runEnded(page);
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
