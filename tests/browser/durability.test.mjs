// Nothing lost, nothing broken (issue 10), in the real page in headless Chromium: a page
// closed mid-training resumes from its autosave and continues exactly as the run that was
// never interrupted; a reload mid-ranking keeps every ranking and the question being
// ranked; hostile model files are refused with their messages and leave the current model
// as it was; model output that looks like HTML stays text.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import zlib from 'node:zlib';
import { launch, serveWww, isLocal, openPage, ARTIFACTS } from './chromium.mjs';

const site = serveWww();

const open = (context, query = '?backend=cpu') => openPage(site, context, query);

/** Runs `fn({context, page, log, requests})` on the page in a fresh browser context. */
async function inPage({ webgpu = false, query } = {}, fn) {
  const browser = await launch({ webgpu });
  try {
    const context = await browser.newContext();
    await fn({ context, ...(await open(context, query)) });
    await context.close();
  } finally {
    await browser.close();
  }
}

/** The page's tokenizer and a tiny model, by its buttons. */
async function tokenizerAndModel(page) {
  await page.click('#train-tokenizer');
  await waitFor(page, () => /vocabulary of/.test(document.getElementById('tok-stats').textContent) || window.kilnApp.error);
  await page.click('#create-model');
  await waitFor(page, () => /parameters/.test(document.getElementById('model-stats').textContent) || window.kilnApp.error);
}

const waitFor = (page, fn, arg, timeout = 300_000) => page.waitForFunction(fn, arg, { timeout, polling: 200 });

/** The same run every time: tiny preset, BPE 512 on the built-in stories, seed 7. */
const RUN = { steps: 40, batchSize: 8, logEvery: 1, evalEvery: 10, sampleEvery: 0, seed: 7 };

/** Starts (without awaiting) pretraining RUN in the page; losses land in window.losses.
 * With `pauseAt`, the page itself pauses the run once that step is reported (the worker
 * takes a pause at once, so at most the step in flight follows), whatever the CPU's speed;
 * with `fault` = {kind, step, saved} it injects that fault once step `step` is reported and
 * the autosave of step `saved` is stored, its outcome in window.fault. */
async function startRun(page, { pauseAt = null, fault = null } = {}) {
  await page.evaluate(async ({ run, pauseAt, fault }) => {
    const kiln = window.kilnApp.kiln;
    await kiln.useDefaultCorpus('en');
    await kiln.trainTokenizer(null, { kind: 'bpe', vocabSize: 512 });
    await kiln.createModel({ preset: 'tiny' }, run);
    window.losses = [];
    window.saved = [];
    window.events = [];
    window.fault = null;
    const inject = () => {
      if (!fault || window.fault || (window.losses.at(-1)?.[0] ?? 0) < fault.step) return;
      if (!window.saved.some((s) => s.step === fault.saved)) return;
      window.fault = kiln.injectFault(fault.kind).then(() => 'no error', (e) => `${e.code}: ${e.message}`);
    };
    window.finished = kiln.pretrain({
      ...run,
      onProgress: (p) => {
        if (p.event) return window.events.push(p.event);
        window.losses.push([p.step, p.loss]);
        if (p.step === pauseAt) kiln.pause();
        return inject();
      },
      onAutosave: (a) => { window.saved.push(a); inject(); },
    });
    // a wait for a fault ends too if the run ends first (and the test says why)
    window.done = false;
    window.finished.then(() => { window.done = true; }, () => { window.done = true; });
  }, { run: RUN, pauseAt, fault });
}

test('a page closed mid-training reopens, offers its autosave, and resumes exactly where the uninterrupted run goes', async () => {
  const browser = await launch({ webgpu: false });
  try {
    // the uninterrupted run
    const straight = await browser.newContext();
    const a = await open(straight);
    await startRun(a.page);
    await a.page.evaluate(() => window.finished);
    const expected = await a.page.evaluate(() => window.losses);
    assert.equal(expected.length, RUN.steps);
    await straight.close();

    // the same run, its page closed after the autosave of step 20, mid-training
    const context = await browser.newContext();
    const b = await open(context);
    await startRun(b.page, { pauseAt: 23 });
    await waitFor(b.page, () => window.saved.some((s) => s.step === 20) && window.losses.length >= 23);
    const saved = await b.page.evaluate(() => window.saved);
    console.log(`autosaves before closing: ${JSON.stringify(saved)}`);
    assert.ok(saved.every((s) => !s.error), JSON.stringify(saved));
    await b.page.close();

    // reopened: the page offers the run, and resumes it
    const c = await open(context);
    await waitFor(c.page, () => !document.getElementById('autosave-offer').hidden, null, 30_000);
    const offer = await c.page.textContent('#autosave-text');
    console.log(`offer: ${offer}`);
    // paused at step 23 or 24: the newest autosave is the validation of step 20
    assert.match(offer, /Pretraining at step 20 of 40/);
    await c.page.screenshot({ path: path.join(ARTIFACTS, 'autosave-offer.png') });
    const step = Number(offer.match(/at step (\d+)/)[1]);
    await c.page.click('#autosave-resume');
    await waitFor(c.page, () => /Resumed Pretraining/.test(document.getElementById('autosave-status').textContent) || window.kilnApp.error, null, 60_000);
    assert.equal(await c.page.evaluate(() => window.kilnApp.error), null);
    assert.match(await c.page.textContent('#autosave-status'), new RegExp(`Resumed Pretraining at step ${step} of 40`));
    // the page's own Start continues the run
    await c.page.evaluate(() => { window.kilnApp.progress.length = 0; });
    await c.page.click('#start');
    await waitFor(c.page, () => (window.kilnApp.state === 'idle' && window.kilnApp.progress.at(-1)?.step === 40) || window.kilnApp.error);
    assert.equal(await c.page.evaluate(() => window.kilnApp.error), null);
    const resumed = (await c.page.evaluate(() => window.kilnApp.progress)).map((p) => [p.step, p.loss]);
    assert.deepEqual(resumed.map(([s]) => s), expected.slice(step).map(([s]) => s), 'steps after the resume');
    assert.deepEqual(resumed, expected.slice(step), 'every loss after the resume equals the uninterrupted run\'s, bit for bit');
    console.log(`resumed at step ${step}: ${resumed.length} losses equal the uninterrupted run's (last ${resumed.at(-1)[1]})`);
    // the autosave list shows the run, and a delete removes it
    const listed = await c.page.locator('#autosave-list li').count();
    assert.ok(listed >= 1);
    await c.page.locator('#autosave-list li button', { hasText: 'Delete' }).first().click();
    await waitFor(c.page, (n) => document.querySelectorAll('#autosave-list li').length === n - 1, listed, 10_000);
    assert.ok(c.requests.every((url) => isLocal(site, url)));
    await context.close();
  } finally {
    await browser.close();
  }
});

test('a full storage quota: the autosave fails with an explanation, training goes on, and the last good autosave stays', () => inPage({}, async ({ context, page }) => {
  // a failed write that the estimate does not explain (10 bytes fit this site's quota)
  // still says what to do, and keeps the browser's words only as the reason
  const unknown = await page.evaluate(async () => {
    const { storageError } = await import(new URL('lib/autosave.js', location.href).href);
    const error = await storageError(new Error('Failed to write data to data pipe'), 10);
    return { message: error.message, code: error.code, full: error.full };
  });
  console.log(`a failed write the quota does not explain: ${JSON.stringify(unknown)}`);
  assert.deepEqual(unknown, {
    message: 'the autosave (0.0 MiB) could not be written (the browser said: Failed to write data to data pipe): '
      + 'free space on this device or for this site in the browser\'s settings, or delete old autosaves',
    code: 'storage',
    full: false,
  });

  // the autosave of step 10 stored, the run paused by the page at step 12
  await startRun(page, { pauseAt: 12 });
  await waitFor(page, () => window.saved.some((s) => s.step === 10) && window.losses.length >= 12);
  // then the origin may store 100 KB: an autosave of the tiny model is 2.5 MiB
  const cdp = await context.newCDPSession(page);
  await cdp.send('Storage.overrideQuotaForOrigin', { origin: site.origin, quotaSize: 100_000 });
  await page.evaluate(() => window.kilnApp.kiln.resume());
  const last = await page.evaluate(() => window.finished);
  const saved = await page.evaluate(() => window.saved);
  const failed = saved.filter((s) => s.error);
  console.log(`with a 100 KB quota: ${JSON.stringify(failed[0])}`);
  assert.equal(last.step, RUN.steps, 'training went on');
  assert.deepEqual(saved.filter((s) => !s.error).map((s) => s.step), [10], JSON.stringify(saved));
  assert.ok(failed.length >= 3, JSON.stringify(saved));
  // Chromium reports a full quota as QuotaExceededError or only as a failed write, and its
  // estimate may lag: either way the person is told the size and what to do
  for (const s of failed) {
    assert.equal(s.code, 'storage');
    assert.match(s.error, /autosave \(2\.\d MiB\)/);
    assert.match(s.error, /delete old autosaves/);
    if (s.full) assert.match(s.error, /^the browser has no room for this autosave/);
    else assert.match(s.error, /^the autosave \(2\.\d MiB\) could not be written \(the browser said: .+\): free space/);
  }
  console.log(`quota recognised as full in ${failed.filter((s) => s.full).length} of ${failed.length} failed autosaves${failed.filter((s) => !s.full).map((s) => `; not: ${s.error}`).join('')}`);
  // the failed writes left the run's autosave of step 10 whole, and nothing half-written
  const kept = await page.evaluate(() => window.kilnApp.kiln.listAutosaves());
  assert.deepEqual(kept.map((m) => [m.step, m.bytes]), [[10, saved.find((s) => s.step === 10).bytes]], JSON.stringify(kept));
}));

test('a reload in the middle of ranking keeps every ranking and the question being ranked', () => inPage({}, async ({ page }) => {
    await tokenizerAndModel(page);
    await page.fill('#rank-k', '3');
    const shown = () => page.evaluate(() => window.kilnApp.rankShown ?? 0);
    // the next prompt's answers; sampled again where they all came out the same (one card)
    const next = async (count) => {
      for (;;) {
        await waitFor(page, (n) => (window.kilnApp.rankShown ?? 0) > n || window.kilnApp.error, count);
        if (await page.locator('#rank-cards li').count() >= 2) return;
        count = await shown();
        await page.click('#rank-sample');
      }
    };
    // one question ranked and submitted; the next comes by itself
    await page.click('#rank-sample');
    await next(0);
    const count = await shown();
    await page.locator('#rank-cards li').last().press('1');
    await page.click('#rank-submit');
    await waitFor(page, () => /1 prompt ranked/.test(document.getElementById('rank-count').textContent));
    // the next one half ranked when the page reloads
    await next(count);
    await page.locator('#rank-cards li').last().press('1');
    const before = await page.evaluate(() => ({
      question: document.getElementById('rank-question').textContent,
      cards: [...document.querySelectorAll('#rank-cards li')].map((li) => li.textContent),
    }));
    await page.reload();
    await page.waitForFunction(() => window.kilnApp?.ready || window.kilnApp?.error, null, { timeout: 120_000 });
    assert.match(await page.textContent('#rank-count'), /1 prompt ranked/);
    const after = await page.evaluate(() => ({
      question: document.getElementById('rank-question').textContent,
      cards: [...document.querySelectorAll('#rank-cards li')].map((li) => li.textContent),
    }));
    assert.deepEqual(after, before, 'the question being ranked, its answers and their order, as left');
    assert.equal(await page.isEnabled('#rank-submit'), true);
}));

test('a forced NaN is rolled back to the last validation with the learning rate halved, said in the page, and training goes on', () => inPage({}, async ({ page }) => {
    await page.click('#train-tokenizer');
    await waitFor(page, () => /vocabulary of/.test(document.getElementById('tok-stats').textContent) || window.kilnApp.error);
    await page.fill('#steps', '60');
    // the page validates every 25 steps: the state kept at step 25 is the one to return to.
    // The fault goes in from the page as soon as step 30 is shown, whatever the CPU's speed
    const injected = page.evaluate(() => new Promise((resolve, reject) => {
      const watch = () => {
        if (window.kilnApp.error) return reject(new Error(window.kilnApp.error));
        if (window.kilnApp.progress.at(-1)?.step >= 30) return window.kilnApp.kiln.injectFault('nan').then(resolve, reject);
        return setTimeout(watch, 5);
      };
      watch();
    }));
    await page.click('#start');
    await injected;
    await waitFor(page, () => (window.kilnApp.state === 'idle' && window.kilnApp.progress.at(-1)?.step === 60) || window.kilnApp.error);
    assert.equal(await page.evaluate(() => window.kilnApp.error), null);
    const events = await page.evaluate(() => window.kilnApp.events);
    console.log(`events: ${JSON.stringify(events)}`);
    assert.equal(events.length, 1);
    assert.match(events[0], /^the loss became NaN at step \d+: rolled back to step (25|50) and halved the learning rate to 1\.5e-3/);
    assert.match(await page.textContent("#samples li.event"), /rolled back to step (25|50)/);
    const losses = await page.evaluate(() => window.kilnApp.progress.filter((p) => p.loss != null).map((p) => p.loss));
    assert.ok(losses.every(Number.isFinite), 'every loss kept is finite');
    await page.screenshot({ path: path.join(ARTIFACTS, 'nan-rollback.png'), fullPage: true });
}));

test('a lost WebGPU device (device.destroy()) mid-training: a new worker continues the run from its autosave', () => inPage({ webgpu: true, query: '?backend=gpu' }, async ({ page }) => {
    const run = { steps: 8, batchSize: 2, logEvery: 1, evalEvery: 2, sampleEvery: 0, seed: 3 };
    await page.evaluate(async (run) => {
      const kiln = window.kilnApp.kiln;
      await kiln.useDefaultCorpus('en');
      await kiln.trainTokenizer(null, { kind: 'char' });
      await kiln.createModel({ preset: 'tiny', blockSize: 32 }, run);
      window.losses = [];
      window.events = [];
      window.saved = [];
      // the device is lost from the page itself once step 3 is reported and an autosave of
      // step 2 or later is stored, whatever the speed of the machine
      window.injected = false;
      const inject = () => {
        if (window.injected || !window.saved.some((s) => s.step >= 2) || window.losses.length < 3) return;
        window.injected = true;
        kiln.injectFault('lose-device');
      };
      window.finished = kiln.pretrain({
        ...run,
        onProgress: (p) => { if (p.event) window.events.push(p); else window.losses.push([p.step, p.loss]); inject(); },
        onAutosave: (a) => { window.saved.push(a); inject(); },
      }).then((last) => ({ last }), (error) => ({ error: `${error.code}: ${error.message}` }));
      window.done = false;
      window.finished.then(() => { window.done = true; });
    }, run);
    await waitFor(page, () => window.injected || window.done);
    assert.ok(await page.evaluate(() => window.injected), `the run ended before the device was lost: ${JSON.stringify(await page.evaluate(() => window.saved))}`);
    const outcome = await page.evaluate(() => window.finished);
    const events = await page.evaluate(() => window.events);
    console.log(`outcome: ${JSON.stringify(outcome)}; events: ${JSON.stringify(events)}`);
    assert.equal(outcome.error, undefined);
    assert.equal(outcome.last.step, run.steps, 'the run reached its last step');
    assert.equal(events.length, 1);
    assert.match(events[0].event, /GPU device was lost.*restarted its worker, restored the autosave of step \d+ and continues/);
    const backend = await page.evaluate(() => window.kilnApp.kiln.backend);
    assert.equal(backend.kind, 'gpu', 'the new worker trains on a new WebGPU device');
    const losses = await page.evaluate(() => window.losses);
    assert.ok(losses.every(([, loss]) => Number.isFinite(loss)));
    assert.deepEqual(losses.slice(-run.steps + events[0].step).map(([s]) => s), Array.from({ length: run.steps - events[0].step }, (_, i) => events[0].step + i + 1));
}));

test('a wasm trap mid-training (a panic): a new worker continues the run from its autosave', () => inPage({}, async ({ page }) => {
  // the trap goes in from the page once step 12 is reported and the autosave of step 10 is
  // stored, whatever the machine's speed
  await startRun(page, { fault: { kind: 'trap', step: 12, saved: 10 } });
  await waitFor(page, () => window.fault || window.done);
  assert.ok(await page.evaluate(() => window.fault != null), `the run ended before the trap: ${JSON.stringify(await page.evaluate(() => window.saved))}`);
  const trapped = await page.evaluate(() => window.fault);
  assert.match(trapped, /RuntimeError: unreachable/);
  const last = await page.evaluate(() => window.finished);
  const losses = await page.evaluate(() => window.losses);
  const events = await page.evaluate(() => window.events);
  console.log(`after the trap: ${JSON.stringify(events)}; finished at step ${last.step}`);
  assert.equal(last.step, RUN.steps);
  assert.equal(events.length, 1);
  assert.match(events[0], /unreachable.*Kiln restarted its worker, restored the autosave of step \d+ and continues/);
  assert.ok(losses.every(([, loss]) => Number.isFinite(loss)));
}));

// ---------------------------------------------------------------- hostile files

/** A .zip of [name, bytes, {deflate, declare}] entries; `declare` overrides the size the
 * headers state (a lie). */
function zipOf(entries) {
  const locals = [];
  const centrals = [];
  let offset = 0;
  for (const [name, bytes, { deflate = false, declare } = {}] of entries) {
    const data = deflate ? zlib.deflateRawSync(bytes) : Buffer.from(bytes);
    const nameBytes = Buffer.from(name);
    const size = declare ?? bytes.length;
    const crc = zlib.crc32(bytes);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(deflate ? 8 : 0, 8);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(size, 22);
    local.writeUInt16LE(nameBytes.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(deflate ? 8 : 0, 10);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(size, 24);
    central.writeUInt16LE(nameBytes.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, nameBytes, data);
    centrals.push(central, nameBytes);
    offset += 30 + nameBytes.length + data.length;
  }
  const directory = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, directory, end]);
}

/** model.safetensors with `value` written at element `at` of tensor `name`. */
function withWeight(safetensors, name, at, value) {
  const bytes = Buffer.from(safetensors);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString());
  bytes.writeFloatLE(value, 8 + headerLength + header[name].data_offsets[0] + 4 * at);
  return bytes;
}

test('hostile model files are refused with their messages, and the current model stays as it was', () => inPage({}, async ({ page, log }) => {
    await tokenizerAndModel(page);
    const generate = async () => {
      await page.fill('#prompt', 'Once upon a time');
      await page.fill('#temperature', '0');
      await page.fill('#max-tokens', '12');
      await page.click('#generate');
      await waitFor(page, () => !document.getElementById('generate').disabled && window.kilnApp.generated != null);
      const text = await page.evaluate(() => window.kilnApp.generated);
      await page.evaluate(() => { window.kilnApp.generated = null; });
      return text;
    };
    const modelStats = await page.textContent('#model-stats');
    const answer = await generate();
    const files = Object.fromEntries(Object.entries(await page.evaluate(async () => {
      const exported = await window.kilnApp.kiln.exportModel();
      return Object.fromEntries(Object.entries(exported).map(([name, bytes]) => [name, Array.from(bytes)]));
    })).map(([name, bytes]) => [name, Buffer.from(bytes)]));
    const folder = (replace = {}) => Object.entries({ ...files, ...replace }).map(([name, bytes]) => [name, bytes, { deflate: true }]);

    const tokenizer = JSON.parse(files['tokenizer.json']);
    for (const added of tokenizer.added_tokens) if (added.content === '<|eos|>') added.special = false;
    const cases = [
      ['a 200-byte zip declaring 2 GiB', zipOf([['config.json', Buffer.from('{"model_type":"gpt2"}'), { declare: 2 ** 31 }]]),
        /config\.json declares 2048\.0 MiB, over the 64\.0 MiB Kiln reads for it/],
      ['a deflate bomb', zipOf([['config.json', files['config.json']], ['tokenizer.json', files['tokenizer.json']],
        ['model.safetensors', Buffer.alloc(256 * 2 ** 20), { deflate: true }]]), /model\.safetensors declares 256\.0 MiB/],
      ['256 layers × 16384 wide', zipOf(folder({ 'config.json': Buffer.from(JSON.stringify({
        ...JSON.parse(files['config.json']), n_layer: 256, n_embd: 16384, n_head: 128 })) })), /far beyond what a browser can train/],
      ['a weight of 1e30', zipOf(folder({ 'model.safetensors': withWeight(files['model.safetensors'], 'h.0.attn.c_attn.weight', 5, 1e30) })),
        /holds 1e30 at element 5/],
      ['a NaN weight', zipOf(folder({ 'model.safetensors': withWeight(files['model.safetensors'], 'h.1.mlp.c_fc.bias', 3, NaN) })),
        /holds NaN at element 3/],
      ['<|eos|> typed as text maps to the control id', zipOf(folder({ 'tokenizer.json': Buffer.from(JSON.stringify(tokenizer)) })),
        /turns the text <\|eos\|> into the control token/],
      ['duplicate entries', zipOf([...folder(), ['copy/model.safetensors', files['model.safetensors']]]), /holds model\.safetensors twice/],
    ];
    for (const [name, zip, message] of cases) {
      await page.setInputFiles('#import', { name: 'model.zip', mimeType: 'application/zip', buffer: zip });
      await waitFor(page, () => window.kilnApp.error != null, null, 60_000);
      const error = await page.evaluate(() => window.kilnApp.error);
      console.log(`${name} (${zip.length.toLocaleString()} bytes): ${error}`);
      assert.match(error, message, name);
      assert.equal(await page.textContent('#model-stats'), modelStats, `${name}: the page's model is unchanged`);
      await page.evaluate(() => { window.kilnApp.error = null; });
    }
    assert.equal(await generate(), answer, 'the worker lives and the model answers as before');
    assert.ok(!log.some((line) => line.startsWith('pageerror')), log.join('\n'));
}));

test('model output that looks like HTML renders as text and runs nothing; a UTF-16 file is explained', () => inPage({}, async ({ page }) => {
    const attack = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>';
    const corpus = `${attack}\n\n`.repeat(300);
    await page.check('input[name=source][value=file]');
    // UTF-16 first: refused with the reason, not called binary
    const utf16 = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('Once upon a time', 'utf16le')]);
    await page.setInputFiles('#file', { name: 'notepad.txt', mimeType: 'text/plain', buffer: utf16 });
    await waitFor(page, () => window.kilnApp.error != null, null, 30_000);
    assert.match(await page.evaluate(() => window.kilnApp.error), /UTF-16 text; Kiln reads UTF-8: save it as UTF-8/);
    await page.setInputFiles('#file', { name: 'attack.txt', mimeType: 'text/plain', buffer: Buffer.from(corpus) });
    // the file is read before it is used: its text shows in the preview (as text)
    await waitFor(page, () => document.getElementById('corpus-preview').textContent.includes('<img src=x') || window.kilnApp.error, null, 30_000);
    assert.equal(await page.evaluate(() => window.kilnApp.error), null);
    await page.selectOption('#tok-kind', 'char');
    await page.click('#train-tokenizer');
    await waitFor(page, () => /vocabulary of/.test(document.getElementById('tok-stats').textContent) || window.kilnApp.error);
    await page.fill('#steps', '150');
    await page.click('#start');
    await waitFor(page, () => (window.kilnApp.state === 'idle' && window.kilnApp.progress.at(-1)?.step === 150) || window.kilnApp.error);
    assert.equal(await page.evaluate(() => window.kilnApp.error), null);
    await page.fill('#prompt', '<img');
    await page.fill('#temperature', '0');
    await page.fill('#max-tokens', '80');
    await page.click('#generate');
    await waitFor(page, () => !document.getElementById('generate').disabled && window.kilnApp.generated != null);
    const shown = await page.evaluate(() => ({
      text: document.getElementById('output').textContent,
      // each sample line is 'step 40: <span data-content>text</span>': that span and nothing
      // else; nor any element inside the views' token spans, which show the same model's tokens
      elements: document.querySelectorAll('#output *, #samples li [data-content] *, #next-bars [data-content] *, #att-map * *, #att-focus [data-content] *, #row-table [data-content] *').length,
      sampleChildren: document.querySelectorAll('#samples li *').length,
      sampleSpans: document.querySelectorAll('#samples li > [data-content]').length,
      viewTokens: document.querySelectorAll('#next-bars [data-content], #att-map [data-content]').length,
      images: document.images.length,
      scripts: [...document.scripts].map((s) => s.src.split('/').pop()),
      pwned: window.pwned ?? null,
    }));
    console.log(`generated: ${JSON.stringify(shown.text)}`);
    assert.match(shown.text, /onerror=|<script>/, 'the model learned to write the markup');
    assert.equal(shown.elements, 0, 'no element was made from model output');
    assert.ok(shown.sampleSpans > 0 && shown.sampleChildren === shown.sampleSpans, `sample lines hold one data span each: ${shown.sampleChildren} elements, ${shown.sampleSpans} spans`);
    assert.ok(shown.viewTokens > 0, 'the views show this model\'s tokens');
    assert.equal(shown.images, 0);
    assert.deepEqual(shown.scripts, ['app.js']);
    assert.equal(shown.pwned, null, 'nothing ran');
    await page.screenshot({ path: path.join(ARTIFACTS, 'html-as-text.png') });
}));
