// A person's own model in the real page, by clicks, on each backend: a Llama folder made
// by transformers (tests/golden/smollm2_like: SmolLM2's shape, its byte-level BPE and
// ChatML template) chosen with the folder input; LoRA fine-tuning on a JSONL file (the
// imported weights frozen, rank 8 by default for a model made elsewhere); a chat in the
// model's own template; answers ranked; DPO with LoRA on the rankings, going on with the
// fine-tuning's adapters; the adapter exported as a PEFT folder; on the CPU, the reward
// model and PPO with LoRA too (their heads as PEFT's modules_to_save). The exported adapter is
// the one `tests/interop/peft_adapter.py --adapter DIR` loads with PEFT by hand
// (KILN_ADAPTER_OUT=DIR keeps it there).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { launch, watchRequests, serveWww, isLocal, ARTIFACTS } from './chromium.mjs';

const site = serveWww();
const FOLDER = path.resolve('tests/golden/smollm2_like');

const app = (page, fn, arg) => page.evaluate(fn, arg);
const waitFor = (page, fn, timeout = 600_000) => page.waitForFunction(fn, null, { timeout, polling: 250 });
const idle = (page) => waitFor(page, () => (window.kilnApp.state === 'idle' && !window.kilnApp.training) || window.kilnApp.error);
const noError = async (page) => assert.equal(await app(page, () => window.kilnApp.error), null);

const CHATS = [['Hi', 'Hello there.'], ['Name a colour.', 'Blue.'], ['Two plus two?', 'Four.'], ['Bye', 'Goodbye!'], ['Say yes.', 'Yes.'], ['Greet me.', 'Hello!']];
const JSONL = CHATS.map(([q, a]) => JSON.stringify({ messages: [{ role: 'user', content: q }, { role: 'assistant', content: a }] })).join('\n');

/** Waits for the next prompt's cards after `count` prompts were shown (resampling where
 * every answer came out the same). */
async function nextCards(page, count) {
  for (;;) {
    await page.waitForFunction((n) => (window.kilnApp.rankShown ?? 0) > n || window.kilnApp.error, count, { timeout: 300_000, polling: 250 });
    await noError(page);
    if (await page.locator('#rank-cards li').count() >= 2) return;
    count = await app(page, () => window.kilnApp.rankShown ?? 0);
    await page.click('#rank-sample');
  }
}

/** On the CPU the fine-tuning is long enough to see it learn, and three prompts of four
 * answers are ranked; SwiftShader (WebGPU on the CPU) takes tens of seconds a step of
 * this model, so there the same clicks run two steps each, on two prompts of two answers. */
const STEPS = { cpu: { sft: 30, dpo: 3, prompts: 3, answers: 4 }, gpu: { sft: 2, dpo: 1, prompts: 2, answers: 2 } };

async function ownModel(backend) {
  const steps = STEPS[backend];
  const started = Date.now();
  const mark = (what) => console.log(`[${backend}] ${what} at ${((Date.now() - started) / 1000).toFixed(0)} s`);
  const browser = await launch({ webgpu: backend === 'gpu' });
  try {
    const page = await browser.newPage();
    const requests = watchRequests(page);
    await page.goto(`${site.origin}/index.html?backend=${backend}`);
    await waitFor(page, () => window.kilnApp?.ready || window.kilnApp?.error, 120_000);
    await noError(page);
    assert.equal(await app(page, () => window.kilnApp.backend.kind), backend);
    await app(page, () => localStorage.removeItem('kiln.rankings'));

    // 1. the folder, as transformers saved it: its tokenizer, template and ids kept
    await page.setInputFiles('#import-folder', FOLDER);
    await waitFor(page, () => /Imported smollm2_like/.test(document.getElementById('files-stats').textContent) || window.kilnApp.error, 120_000);
    await noError(page);
    assert.equal(await app(page, () => window.kilnApp.model.config.vocab_size), 700);
    // the folder's bf16 weights stay bf16 on the GPU (half the memory), f32 on the CPU
    assert.equal(await app(page, () => window.kilnApp.model.weights), backend === 'gpu' ? 'bf16' : 'f32');
    // an imported model fine-tunes with LoRA by default: the fields are set once the import is done
    await waitFor(page, () => document.getElementById('sft-lora').value === '8' || window.kilnApp.error, 60_000);
    await noError(page);
    const rendered = await app(page, () => window.kilnApp.kiln.renderChat([{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello.' }]));
    const text = rendered.map((t) => t.text).join('');
    assert.ok(text.startsWith('<|im_start|>system\n'), `SmolLM2's own template: ${JSON.stringify(text)}`);
    assert.deepEqual(rendered.filter((t) => t.supervised).map((t) => t.text).join(''), 'Hello.<|im_end|>');

    // 2. LoRA fine-tuning on a JSONL file
    await page.check('input[name="sft-source"][value="file"]');
    await page.setInputFiles('#sft-file', { name: 'chat.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(JSONL) });
    mark('imported');
    await page.fill('#sft-steps', String(steps.sft));
    await page.fill('#sft-lr', '0.003');
    await page.click('#sft-start');
    await idle(page);
    await noError(page);
    const sft = (await app(page, () => window.kilnApp.progress)).filter((p) => p.stage === 'sft' && p.loss != null);
    assert.equal(sft.at(-1).step, steps.sft);
    const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const [early, late] = [mean(sft.slice(0, 3).map((p) => p.loss)), mean(sft.slice(-3).map((p) => p.loss))];
    mark(`LoRA SFT: loss ${early.toFixed(3)} → ${late.toFixed(3)} over ${sft.at(-1).step} steps`);
    if (backend === 'cpu') assert.ok(late < early * 0.7, `LoRA SFT learns: ${early} → ${late}`);
    else assert.ok(sft.every((p) => Number.isFinite(p.loss)));

    // 3. a chat in the model's own template
    await page.fill('#chat-input', 'Greet me.');
    await page.click('#chat-send');
    await waitFor(page, () => (window.kilnApp.lastAnswer != null && !window.kilnApp.generating) || window.kilnApp.error, 120_000);
    await noError(page);
    const answer = await app(page, () => window.kilnApp.lastAnswer);
    mark(`chat: "Greet me." → ${JSON.stringify(answer)}`);
    assert.ok(!answer.includes('<|im_start|>') && !answer.includes('<|im_end|>'), 'the answer stops at its end of turn');

    // 4. answers ranked, each prompt's best-first as sampled
    await page.fill('#rank-k', String(steps.answers));
    let count = await app(page, () => window.kilnApp.rankShown ?? 0);
    await page.click('#rank-sample');
    await nextCards(page, count);
    for (let i = 0; i < steps.prompts; i++) {
      count = await app(page, () => window.kilnApp.rankShown ?? 0);
      await page.focus('#rank-cards li:nth-child(1)');
      await page.keyboard.press('2');
      await page.click('#rank-submit');
      await nextCards(page, count);
    }
    const rankings = await app(page, () => JSON.parse(localStorage.getItem('kiln.rankings') ?? '[]'));
    assert.equal(rankings.filter((r) => r.verdict === 'ranked').length, steps.prompts);

    // 5. DPO with LoRA on the rankings: the fine-tuning's adapters go on training
    assert.equal(await page.inputValue('#align-lora'), '8');
    const sftAdapter = await app(page, () => window.kilnApp.kiln.exportAdapter('smollm2_like'));
    mark('ranked');
    await page.fill('#align-steps', String(steps.dpo));
    await page.click('#dpo-start');
    await idle(page);
    await noError(page);
    const dpo = await app(page, () => window.kilnApp.progress);
    assert.equal(dpo.at(-1).stage, 'dpo');
    for (const key of ['pairAccuracy', 'rewardMargin', 'logpChosen', 'logpRejected']) assert.ok(Number.isFinite(dpo.at(-1).metrics[key]), key);
    mark(`DPO with LoRA: loss ${dpo.map((p) => p.loss?.toFixed(3)).join(' ')}`);

    // 6. the adapter out as a PEFT folder, by the button
    const downloads = [];
    page.on('download', (d) => downloads.push(d));
    await page.click('#export-adapter');
    await waitFor(page, () => /Exported adapter_config/.test(document.getElementById('files-stats').textContent) || window.kilnApp.error, 60_000);
    await noError(page);
    await new Promise((resolve) => { const check = () => (downloads.length >= 2 ? resolve() : setTimeout(check, 100)); check(); });
    const out = process.env.KILN_ADAPTER_OUT ? path.resolve(process.env.KILN_ADAPTER_OUT, backend) : path.join(ARTIFACTS, `own-model-adapter-${backend}`);
    fs.mkdirSync(out, { recursive: true });
    for (const d of downloads) await d.saveAs(path.join(out, d.suggestedFilename()));
    const config = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
    assert.equal(config.peft_type, 'LORA');
    assert.equal(config.r, 8);
    assert.deepEqual(config.target_modules, ['model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.v_proj', 'model.layers.1.self_attn.q_proj', 'model.layers.1.self_attn.v_proj']);
    const weights = fs.readFileSync(path.join(out, 'adapter_model.safetensors'));
    const header = JSON.parse(weights.subarray(8, 8 + Number(weights.readBigUInt64LE(0))).toString('utf8'));
    assert.deepEqual(header['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'].shape, [8, 64]);
    assert.deepEqual(header['base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight'].shape, [32, 8]);
    assert.notDeepEqual([...weights], [...sftAdapter['adapter_model.safetensors']], 'DPO moved the adapters');
    console.log(`[${backend}] exported the adapter to ${out}: ${Object.keys(header).length - 1} tensors`);
    // and the model, adapters merged, as GGUF: llama.cpp's "llama" with its 20 tensors and
    // the folder's own ChatML template
    const gguf = Buffer.from(await app(page, async () => [...await window.kilnApp.kiln.exportGguf('f32')]));
    assert.equal(gguf.subarray(0, 4).toString('latin1'), 'GGUF');
    assert.equal(Number(gguf.readBigUInt64LE(8)), 20);
    const arch = gguf.subarray(32 + 'general.architecture'.length + 4 + 8).subarray(0, 5).toString();
    assert.equal(arch, 'llama');
    assert.ok(gguf.includes(Buffer.from('<|im_start|>')), 'the chat template is inside');
    fs.writeFileSync(path.join(out, 'model-merged-f32.gguf'), gguf);

    // 7. (CPU) the reward model and PPO with LoRA: their heads train in full beside the adapters
    if (backend === 'cpu') {
      for (const [stage, n] of [['reward', 3], ['ppo', 2]]) {
        await page.fill('#align-steps', String(n));
        await page.click(`#${stage}-start`);
        await idle(page);
        await noError(page);
        const progress = await app(page, () => window.kilnApp.progress);
        assert.equal(progress.at(-1).stage, stage);
        assert.equal(progress.at(-1).step, n);
        const key = stage === 'reward' ? 'pairAccuracy' : 'kl';
        assert.ok(progress.some((p) => Number.isFinite(p.metrics?.[key])), `${stage} reports ${key}`);
        const saved = await app(page, async () => {
          const files = await window.kilnApp.kiln.exportAdapter('smollm2_like');
          return JSON.parse(new TextDecoder().decode(files['adapter_config.json']));
        });
        assert.deepEqual(saved.modules_to_save, stage === 'reward' ? ['score'] : null, `${stage}'s adapter`);
        mark(`${stage} with LoRA: loss ${progress.map((p) => p.loss?.toFixed(3)).join(' ')}`);
      }
    }

    for (const url of requests) assert.ok(isLocal(site, url), url);
  } finally {
    await browser.close();
  }
}

test('own model on the CPU (WebAssembly): import a folder, LoRA SFT, chat, rank, DPO with LoRA, export the adapter, reward model and PPO with LoRA', () => ownModel('cpu'));
test('own model on WebGPU: the same clicks', () => ownModel('gpu'));
