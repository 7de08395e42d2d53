// The Kiln demo page, built on the kiln-llm package (lib/kiln.js). Everything the model
// produces is written with textContent: nothing is ever parsed as HTML.
import { Kiln } from './lib/kiln.js';
import uPlot from './vendor/uPlot.esm.js';

const $ = (id) => document.getElementById(id);
const fmt = (x, digits = 4) => (x == null || Number.isNaN(x) ? '–' : Number(x).toFixed(digits));
const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

// What tests (and curious people) can read: window.kilnApp.
const app = { kiln: null, backend: null, defaults: null, tokenizer: null, model: null, training: false, progress: [], error: null, chat: [] };
window.kilnApp = app;

function showError(error) {
  app.error = error ? String(error.message ?? error) : null;
  $('error').textContent = app.error ? `${error.code ? `[${error.code}] ` : ''}${app.error}` : '';
}

async function guard(fn) {
  try {
    showError(null);
    return await fn();
  } catch (error) {
    showError(error);
    return undefined;
  }
}

// ---------------------------------------------------------------- text

function showCorpus(info) {
  $('corpus-stats').textContent =
    `${info.bytes.toLocaleString()} bytes · ${info.characters.toLocaleString()} characters · ${info.documents.toLocaleString()} documents`;
  $('corpus-preview').textContent = info.preview + (info.characters > info.preview.length ? ' …' : '');
  app.tokenizer = null;
  app.model = null;
  $('tok-stats').textContent = 'Train a tokenizer on this text.';
  $('tok-view').replaceChildren();
  $('model-stats').textContent = '';
}

async function chooseSource() {
  const source = document.querySelector('input[name=source]:checked').value;
  $('paste').hidden = source !== 'paste';
  $('use-text').hidden = source !== 'paste';
  $('file').hidden = source !== 'file';
  if (source === 'en' || source === 'zh') {
    await guard(async () => showCorpus(await app.kiln.useDefaultCorpus(source)));
    $('tok-sample').value = source === 'zh' ? '从前，有一只可爱的小狐狸。' : 'Once upon a time, there was a little fox.';
    $('prompt').value = source === 'zh' ? '从前' : 'Once upon a time';
  }
}

// ---------------------------------------------------------------- tokenizer

async function trainTokenizer() {
  const kind = $('tok-kind').value;
  const vocabSize = kind === 'bpe' ? Number($('tok-vocab').value) : undefined;
  $('tok-stats').textContent = 'Training the tokenizer…';
  const info = await app.kiln.trainTokenizer(null, { kind, vocabSize });
  app.tokenizer = info;
  app.model = null;
  $('tok-stats').textContent = `${info.kind === 'bpe' ? 'Byte-level BPE' : 'Character'} vocabulary of ${info.vocabSize} tokens (8 special).`;
  await showTokens();
  await estimate();
  await showSftExample();
}

async function showTokens() {
  if (!app.tokenizer) return;
  const pieces = await app.kiln.tokenize($('tok-sample').value);
  $('tok-view').replaceChildren(...pieces.map(({ id, text }) => {
    const span = document.createElement('span');
    span.textContent = text;
    span.title = `token ${id}`;
    return span;
  }));
}

// ---------------------------------------------------------------- model

function modelOptions() {
  const preset = $('preset').value;
  const sizes = { nLayer: Number($('n-layer').value), nHead: Number($('n-head').value), nEmbd: Number($('n-embd').value), blockSize: Number($('block-size').value) };
  return preset === 'custom' ? { preset: 'tiny', ...sizes } : { preset };
}

// How often the page asks for a sample, a validation and a loss: often, so the chart moves.
const PAGE_CADENCE = { sampleEvery: 50, evalEvery: 25, logEvery: 5 };

function trainingOptions() {
  return { steps: Number($('steps').value), batchSize: Number($('batch').value), lr: Number($('lr').value), seed: Number($('seed').value), ...PAGE_CADENCE };
}

/** Puts Kiln's defaults (the core's, one source for the CLI, the JS API and the page) in the inputs. */
function showDefaults(d) {
  const pre = d.training.pretrain;
  [$('steps').value, $('batch').value, $('lr').value, $('seed').value] = [pre.steps, pre.batchSize, pre.lr, pre.seed];
  [$('sft-steps').value, $('sft-lr').value] = [d.training.sft.steps, d.training.sft.lr];
  [$('temperature').value, $('top-k').value] = [d.sampling.temperature, d.sampling.top_k];
  $('chat-temperature').value = d.chat.temperature;
  setPreset('tiny');
}

function setPreset(name) {
  const p = app.defaults.presets[name];
  if (p) [$('n-layer').value, $('n-head').value, $('n-embd').value, $('block-size').value] = [p.nLayer, p.nHead, p.nEmbd, p.blockSize];
}

async function estimate() {
  if (!app.tokenizer) {
    $('model-estimate').textContent = 'Train a tokenizer to see the model\'s size.';
    return;
  }
  await guard(async () => {
    const e = await app.kiln.estimateModel(modelOptions(), { batchSize: Number($('batch').value) });
    $('model-estimate').textContent = e.fits
      ? `${e.params.toLocaleString()} parameters · needs ${e.memory}`
      : `Too large for this device: ${e.problem}`;
    $('model-estimate').classList.toggle('error', !e.fits);
  });
}

async function createModel() {
  if (!app.tokenizer) await trainTokenizer();
  const info = await app.kiln.createModel(modelOptions(), trainingOptions());
  app.model = info;
  resetChart();
  const c = info.config;
  $('model-stats').textContent = `Model ready: ${c.n_layer} layers × ${c.n_head} heads × ${c.n_embd} wide, context ${c.block_size}, vocabulary ${c.vocab_size} — ${info.params.toLocaleString()} parameters, ${info.memory}; ${info.trainRows.toLocaleString()} training rows, ${info.valRows.toLocaleString()} validation rows.`;
}

// ---------------------------------------------------------------- training

const plot = new uPlot({
  width: Math.min(900, document.body.clientWidth - 40),
  height: 240,
  scales: { x: { time: false } },
  axes: [{ label: 'step' }, { label: 'loss (nats/token)' }],
  series: [{}, { label: 'training', stroke: '#b4461e', width: 2 }, { label: 'validation', stroke: '#2166ac', width: 2, spanGaps: true, points: { show: true } }],
}, [[], [], []], $('chart'));

function setButtons(state) {
  // While a run is going, the text, tokenizer and model stay as they are.
  for (const id of ['train-tokenizer', 'create-model', 'import', 'use-text', 'file', 'sft-start', 'sft-file']) $(id).disabled = state !== 'idle';
  for (const radio of document.querySelectorAll('input[name=source], input[name=sft-source]')) radio.disabled = state !== 'idle';
  $('start').disabled = state !== 'idle';
  $('pause').disabled = state !== 'running';
  $('resume').disabled = state !== 'paused';
  $('stop').disabled = state === 'idle';
  app.state = state;
}

function resetChart() {
  app.progress = [];
  plot.setData([[], [], []]);
  $('samples').replaceChildren();
}

function onProgress(p) {
  app.progress.push(p);
  if (p.loss != null || p.valLoss != null) {
    const [xs, loss, val] = plot.data;
    plot.setData([[...xs, p.step], [...loss, p.loss], [...val, p.valLoss]]);
  }
  const last = app.progress.findLast((q) => q.loss != null);
  const lastVal = app.progress.findLast((q) => q.valLoss != null);
  const stats = `step ${p.step}/${p.steps} · loss ${fmt(last?.loss)} · validation ${fmt(lastVal?.valLoss)} · ${Math.round(p.tokensPerS).toLocaleString()} tokens/s · ETA ${Math.round(p.etaS)} s · lr ${p.lr.toExponential(2)}`;
  $('train-stats').textContent = stats;
  $('stage-name').textContent = p.stage === 'sft' ? '— fine-tuning' : '— pretraining';
  if (p.stage === 'sft') $('sft-stats').textContent = stats;
  if (p.sample != null) {
    const li = document.createElement('li');
    li.textContent = `step ${p.step}: ${p.sample}`;
    $('samples').prepend(li);
  }
}

async function start() {
  setButtons('running');
  await guard(async () => {
    if (!app.model) await createModel();
    app.training = true;
    const steps = Number($('steps').value);
    if (app.progress.at(-1)?.stage === 'sft') resetChart();
    await app.kiln.train({ stage: 'pretrain', steps, ...PAGE_CADENCE, onProgress });
  });
  app.training = false;
  setButtons('idle');
}

// ---------------------------------------------------------------- fine-tuning

const sftSource = () => document.querySelector('input[name=sft-source]:checked').value;

function addExampleRow(instruction = '', response = '') {
  const tr = document.createElement('tr');
  for (const value of [instruction, response]) {
    const td = document.createElement('td');
    const area = document.createElement('textarea');
    area.value = value;
    area.addEventListener('input', () => guard(showSftExample));
    td.append(area);
    tr.append(td);
  }
  const remove = document.createElement('button');
  remove.textContent = '×';
  remove.title = 'Remove this example';
  remove.addEventListener('click', () => { tr.remove(); guard(showSftExample); });
  const td = document.createElement('td');
  td.append(remove);
  tr.append(td);
  $('sft-table').tBodies[0].append(tr);
}

function tableRows() {
  return [...$('sft-table').tBodies[0].rows]
    .map((tr) => [...tr.querySelectorAll('textarea')].map((a) => a.value.trim()))
    .filter(([instruction, response]) => instruction && response);
}

/** What train({stage: 'sft'}) gets for the chosen source. */
function sftData() {
  const source = sftSource();
  if (source === 'en' || source === 'zh') return { lang: source };
  if (source === 'file') {
    const file = $('sft-file').files[0];
    if (!file) throw Object.assign(new Error('choose a JSONL file first'), { code: 'data' });
    return { data: file };
  }
  const rows = tableRows();
  if (rows.length < 2) throw Object.assign(new Error('write at least two examples (one is held out for validation)'), { code: 'data' });
  return { data: rows.map(([prompt, completion]) => JSON.stringify({ prompt, completion })).join('\n') };
}

/** The first example of the chosen source, as messages. */
async function firstExample() {
  const source = sftSource();
  if (source === 'en' || source === 'zh') return (await app.kiln.instructionExamples(source, 'train', 1))[0];
  if (source === 'table') {
    const [row] = tableRows();
    return row && [{ role: 'user', content: row[0] }, { role: 'assistant', content: row[1] }];
  }
  const file = $('sft-file').files[0];
  if (!file) return null;
  const line = (await file.slice(0, 64 * 1024).text()).split('\n').find((l) => l.trim());
  try {
    const o = JSON.parse(line);
    if (Array.isArray(o.messages)) return o.messages;
    if (typeof o.prompt === 'string') return [{ role: 'user', content: o.prompt }, { role: 'assistant', content: String(o.completion) }];
  } catch { /* the core reports bad lines by number when training starts */ }
  return null;
}

async function showSftExample() {
  $('sft-file').hidden = sftSource() !== 'file';
  $('sft-table-box').hidden = sftSource() !== 'table';
  const messages = app.tokenizer ? await firstExample() : null;
  if (!messages) {
    $('sft-example').replaceChildren();
    return;
  }
  const pieces = await app.kiln.renderChat(messages);
  $('sft-example').replaceChildren(...pieces.map(({ id, text, supervised }) => {
    const span = document.createElement('span');
    span.textContent = text;
    span.title = `token ${id} — ${supervised ? 'learnt' : 'masked (weight 0)'}`;
    if (supervised) span.className = 'sup';
    return span;
  }));
}

async function fineTune() {
  setButtons('running');
  await guard(async () => {
    if (!app.model) throw Object.assign(new Error('create (and pretrain) or import a model first'), { code: 'config' });
    const last = app.progress.at(-1);
    const unfinished = last?.stage === 'sft' && last.step < last.steps && app.sftSource === sftSource();
    if (!unfinished) resetChart();
    app.sftSource = sftSource();
    app.training = true;
    $('sft-stats').textContent = 'Preparing the conversations…';
    await app.kiln.train({
      stage: 'sft', ...(unfinished ? {} : { ...sftData(), restart: true }),
      steps: Number($('sft-steps').value), lr: Number($('sft-lr').value), ...PAGE_CADENCE, sampleEvery: 25,
      onProgress,
      onStage: (info) => {
        const skipped = info.skipped?.length ? ` Skipped ${info.skipped.length} lines: ${info.skipped.slice(0, 5).join('; ')}` : '';
        $('sft-stats').textContent = `Fine-tuning on ${info.trainRows.toLocaleString()} conversations, validating on ${info.valRows.toLocaleString()}.${skipped}`;
        app.sftInfo = info;
      },
    });
  });
  app.training = false;
  setButtons('idle');
}

// ---------------------------------------------------------------- chat

function chatBubble(role, text) {
  const div = document.createElement('div');
  div.className = `msg ${role}`;
  div.textContent = text;
  $('chat-log').append(div);
  div.scrollIntoView({ block: 'nearest' });
  return div;
}

async function sendChat() {
  const content = $('chat-input').value.trim();
  if (!content) return;
  $('chat-send').disabled = true;
  await guard(async () => {
    if (!app.model) throw Object.assign(new Error('create or import a model first'), { code: 'config' });
    $('chat-input').value = '';
    app.chat.push({ role: 'user', content });
    chatBubble('user', content);
    const bubble = chatBubble('assistant', '');
    const system = $('chat-system').value.trim();
    const messages = system ? [{ role: 'system', content: system }, ...app.chat] : app.chat;
    let answer = '';
    for await (const piece of app.kiln.chat(messages, { temperature: Number($('chat-temperature').value) })) {
      answer += piece;
      bubble.textContent = answer;
    }
    app.chat.push({ role: 'assistant', content: answer });
    app.lastAnswer = answer;
  });
  $('chat-send').disabled = false;
}

function resetChat() {
  app.chat = [];
  $('chat-log').replaceChildren();
}

async function askHeldOut() {
  const lang = sftSource() === 'zh' ? 'zh' : 'en';
  app.heldOut ??= {};
  app.heldOut[lang] ??= await app.kiln.instructionExamples(lang, 'heldout', 20);
  // in order, so a person (or a test) can go through them one by one
  app.heldOutIndex = ((app.heldOutIndex ?? -1) + 1) % app.heldOut[lang].length;
  const conv = app.heldOut[lang][app.heldOutIndex];
  app.expectedAnswer = conv.at(-1).content;
  $('chat-input').value = conv.at(-2).content;
}

// ---------------------------------------------------------------- playground

async function generate() {
  $('generate').disabled = true;
  $('output').textContent = $('prompt').value;
  await guard(async () => {
    if (!app.model) throw Object.assign(new Error('create or import a model first'), { code: 'config' });
    const options = { maxTokens: Number($('max-tokens').value), temperature: Number($('temperature').value), topK: Number($('top-k').value) };
    for await (const piece of app.kiln.generate($('prompt').value, options)) {
      $('output').textContent += piece;
    }
  });
  $('generate').disabled = false;
  app.generated = $('output').textContent;
}

// ---------------------------------------------------------------- files

async function exportModel() {
  const zip = await app.kiln.exportZip();
  const url = URL.createObjectURL(new Blob([zip], { type: 'application/zip' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = 'kiln-model.zip';
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  $('files-stats').textContent = `Exported kiln-model.zip (${mib(zip.byteLength)}).`;
}

async function importModel(file) {
  const info = await app.kiln.importModel(file, trainingOptions());
  app.model = info;
  app.tokenizer = { vocabSize: info.config.vocab_size, kind: 'imported' };
  $('tok-stats').textContent = `Imported tokenizer: ${info.config.vocab_size} tokens.${info.notes?.length ? ` ${info.notes.join(' ')}` : ''}`;
  await showSftExample();
  await showTokens();
  const c = info.config;
  $('model-stats').textContent = `Imported model: ${c.n_layer} layers × ${c.n_head} heads × ${c.n_embd} wide, context ${c.block_size} — ${info.params.toLocaleString()} parameters.`;
  $('files-stats').textContent = `Imported ${file.name} (${mib(file.size)}).`;
}

// ---------------------------------------------------------------- wiring

function wire() {
  for (const radio of document.querySelectorAll('input[name=source]')) radio.addEventListener('change', chooseSource);
  $('use-text').addEventListener('click', () => guard(async () => showCorpus(await app.kiln.useCorpus($('paste').value))));
  $('file').addEventListener('change', () => guard(async () => {
    const file = $('file').files[0];
    if (file) showCorpus(await app.kiln.useCorpus(file));
  }));
  $('tok-kind').addEventListener('change', () => { $('tok-vocab').disabled = $('tok-kind').value === 'char'; });
  $('train-tokenizer').addEventListener('click', () => guard(trainTokenizer));
  let typing;
  $('tok-sample').addEventListener('input', () => { clearTimeout(typing); typing = setTimeout(() => guard(showTokens), 150); });
  $('preset').addEventListener('change', () => {
    setPreset($('preset').value);
    guard(estimate);
  });
  for (const id of ['n-layer', 'n-head', 'n-embd', 'block-size']) {
    $(id).addEventListener('input', () => { $('preset').value = 'custom'; guard(estimate); });
  }
  $('batch').addEventListener('input', () => guard(estimate));
  $('create-model').addEventListener('click', () => guard(createModel));
  $('start').addEventListener('click', start);
  $('pause').addEventListener('click', (event) => {
    // how long the click waited for the page: the worker keeps this thread free
    app.lastClickDelayMs = performance.now() - event.timeStamp;
    setButtons('paused');
    guard(() => app.kiln.pause());
  });
  $('resume').addEventListener('click', () => { setButtons('running'); guard(() => app.kiln.resume()); });
  $('stop').addEventListener('click', () => guard(() => app.kiln.stop()));
  for (const radio of document.querySelectorAll('input[name=sft-source]')) radio.addEventListener('change', () => guard(showSftExample));
  $('sft-file').addEventListener('change', () => guard(showSftExample));
  $('sft-add-row').addEventListener('click', () => addExampleRow());
  $('sft-start').addEventListener('click', fineTune);
  $('chat-send').addEventListener('click', sendChat);
  $('chat-input').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) { event.preventDefault(); sendChat(); }
  });
  $('chat-reset').addEventListener('click', resetChat);
  $('chat-heldout').addEventListener('click', () => guard(askHeldOut));
  $('generate').addEventListener('click', generate);
  $('export').addEventListener('click', () => guard(exportModel));
  $('import').addEventListener('change', () => guard(async () => {
    const file = $('import').files[0];
    if (file) await importModel(file);
  }));
}

async function main() {
  wire();
  setButtons('idle');
  const backend = new URLSearchParams(location.search).get('backend') ?? 'auto';
  await guard(async () => {
    app.kiln = await Kiln.create({ backend });
    app.backend = app.kiln.backend;
    app.defaults = await app.kiln.defaults();
    showDefaults(app.defaults);
    addExampleRow('What is the capital of France?', 'Paris.');
    addExampleRow('Say hello in Spanish.', 'Hola.');
    const b = app.backend;
    const badge = $('backend');
    badge.className = `badge ${b.kind}`;
    badge.textContent = b.kind === 'gpu'
      ? `Training on your GPU with WebGPU: ${b.adapter}`
      : `Training on the CPU (WebAssembly): ${b.reason}`;
    await chooseSource();
    app.ready = true;
  });
}

main();
