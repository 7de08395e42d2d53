// The Kiln demo page, built on the kiln-llm package (lib/kiln.js). Everything the model
// produces is written with textContent: nothing is ever parsed as HTML. The page's own
// words come from i18n.js (English or Chinese); data goes in untranslated (content()).
import { Kiln } from './lib/kiln.js';
import uPlot from './vendor/uPlot.esm.js';
import { t, tParts, content, num, numberLocale, hasMessage, onLanguageChange, startI18n } from './i18n.js';
import { setUpViews } from './views.js';

const $ = (id) => document.getElementById(id);
const fmt = (x, digits = 4) => (x == null || Number.isNaN(x) ? '–' : Number(x).toFixed(digits));
const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
const dateTime = (at) => new Date(at).toLocaleString(numberLocale());

// What tests (and curious people) can read: window.kilnApp.
const app = { kiln: null, backend: null, defaults: null, tokenizer: null, model: null, training: false, progress: [], error: null, chat: [], done: {} };
/** The views of the inside (views.js): refresh(reason) after anything that changes the model. */
let views = { refresh: async () => {}, stageMap: () => {}, readCompare: async () => {} };
/** A view's reading: its failure is shown, but it neither clears an error already shown
 * (a training run's) nor stops what asked for it (Start, Create model, Import). */
const viewsRead = (promise) => promise.catch(showError);
window.kilnApp = app;

// ---------------------------------------------------------------- words

/** The lines that show state, by element id: how to draw each, so a language switch
 * redraws them from the values they were last drawn with. */
const lines = new Map();

/** Shows `draw()` (a string, or a list of strings and nodes) in element `id`, now and
 * again after each language switch. */
function say(id, draw) {
  lines.set(id, draw);
  const parts = draw();
  $(id).replaceChildren(...(Array.isArray(parts) ? parts : [parts]));
}

onLanguageChange(() => {
  for (const id of lines.keys()) say(id, lines.get(id));
  redrawCharts();
  rewordStepLines();
  showAutosaves().catch(() => {});
  if (app.rankings) showRankList();
  if (rank.current) renderCards();
  // the tokens' titles say 'token 12' in words
  showTokens().catch(() => {});
  showSftExample().catch(() => {});
  // made in JS, not from the HTML
  for (const button of document.querySelectorAll('#sft-table button')) Object.assign(button, { textContent: t('sft.removeRow'), title: t('sft.removeRowTitle') });
});

/** An error of the page's own, worded by message `key` (shown in the chosen language). */
function pageError(key, code, vars = {}) {
  return Object.assign(new Error(t(key, vars)), { code, i18n: { key, vars } });
}

/** The kind of an error in words ('[data] …'): the core's codes have names, others show as they are. */
const codeLabel = (code) => (hasMessage(`error.code.${code}`) ? t(`error.code.${code}`) : code);

function showError(error) {
  app.error = error ? String(error.message ?? error) : null;
  if (!error) {
    say('error', () => '');
    return;
  }
  // the page's own errors in the chosen language; the core's message as it came
  const message = () => (error.i18n ? t(error.i18n.key, error.i18n.vars) : content(app.error));
  say('error', () => (error.code ? tParts('error.withCode', { code: codeLabel(error.code), message: message() }) : message()));
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
  say('corpus-stats', () => t('text.stats', { bytes: num(info.bytes), characters: num(info.characters), documents: num(info.documents) }));
  $('corpus-preview').textContent = info.preview + (info.characters > info.preview.length ? ' …' : '');
  app.tokenizer = null;
  app.model = null;
  app.done = {};
  views.stageMap();
  say('tok-stats', () => t('tokenizer.trainPrompt'));
  $('tok-view').replaceChildren();
  say('model-stats', () => '');
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
    $('next-prompt').value = $('prompt').value;
  }
}

// ---------------------------------------------------------------- tokenizer

async function trainTokenizer() {
  const kind = $('tok-kind').value;
  const vocabSize = kind === 'bpe' ? Number($('tok-vocab').value) : undefined;
  say('tok-stats', () => t('tokenizer.training'));
  const info = await app.kiln.trainTokenizer(null, { kind, vocabSize });
  app.tokenizer = info;
  app.model = null;
  say('tok-stats', () => t(info.kind === 'bpe' ? 'tokenizer.statsBpe' : 'tokenizer.statsChar', { size: info.vocabSize }));
  app.done = {};
  await showTokens();
  await estimate();
  await showSftExample();
  await viewsRead(views.readCompare());
  views.stageMap();
}

async function showTokens() {
  if (!app.tokenizer) return;
  const pieces = await app.kiln.tokenize($('tok-sample').value);
  $('tok-view').replaceChildren(...pieces.map(({ id, text }) => {
    const span = document.createElement('span');
    span.textContent = text;
    span.title = t('tokenizer.tokenTitle', { id });
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

// ---------------------------------------------------------------- autosave

/** Says where the last autosave stands (each train call passes this as onAutosave). */
function onAutosave(saved) {
  if (saved.error) {
    // the package's explanation (a full quota says what to do), as it came
    say('autosave-status', () => tParts('autosave.failed', { error: content(saved.error) }));
    return;
  }
  app.lastAutosave = saved;
  const at = Date.now();
  say('autosave-status', () => t('autosave.saved', {
    stage: saved.stage ? stageName(saved.stage) : t('autosave.theRun'), step: saved.step, size: mib(saved.bytes),
    time: new Date(at).toLocaleTimeString(numberLocale()),
  }));
  showAutosaves();
}

/** A stage's name in words ('pretrain' stays 'pretrain' in English, the names the tests read). */
const stageName = (stage) => (hasMessage(`stage.${stage}`) ? t(`stage.${stage}`) : stage);

/** An autosave in words: its stage, step and date (the date in its own span, as data). */
const describeAutosave = (a) => tParts(a.steps ? 'autosave.describeOf' : 'autosave.describe', {
  stage: a.stage ? stageName(a.stage) : t('autosave.aRun'), step: a.step, steps: a.steps ?? '',
  date: content(dateTime(a.savedAt)), size: mib(a.bytes),
});

/** Lists the autosaves with Resume and Delete; returns them. */
async function showAutosaves() {
  const saves = await app.kiln.listAutosaves();
  $('autosave-list').replaceChildren(...saves.map((a) => {
    const li = document.createElement('li');
    li.append(...describeAutosave(a));
    const resume = document.createElement('button');
    resume.textContent = t('common.resume');
    resume.addEventListener('click', () => guard(() => restoreRun(a)));
    const remove = document.createElement('button');
    remove.textContent = t('autosave.delete');
    remove.addEventListener('click', () => guard(async () => { await app.kiln.deleteAutosave(a.id); await showAutosaves(); }));
    li.append(resume, remove);
    return li;
  }));
  return saves;
}

/** Continues an autosaved run: the page shows its model, curve and stage; Start (or
 * Fine-tune) goes on from its step. */
async function restoreRun(saved) {
  if (app.training) throw pageError('error.stopFirst', 'busy');
  const info = await app.kiln.restoreAutosave(saved.id);
  $('autosave-offer').hidden = true;
  app.model = info;
  app.tokenizer = { vocabSize: info.config.vocab_size, kind: 'restored' };
  const c = info.config;
  say('tok-stats', () => t('tokenizer.restored', { size: c.vocab_size }));
  say('model-stats', () => t('model.restored', { ...sizes(c), params: num(info.params) }));
  resetChart();
  for (const point of info.history) onProgress({ stage: info.stage, step: point.step, steps: saved.steps ?? point.step, loss: point.loss, valLoss: point.val_loss, lr: 0, tokensPerS: 0, etaS: 0 });
  if (saved.steps) $(info.stage === 'sft' ? 'sft-steps' : 'steps').value = String(saved.steps);
  app.restored = info;
  app.done = { [info.stage === 'sft' || info.stage === 'pretrain' ? info.stage : 'align']: info.step };
  if (info.stage === 'sft') app.sftSource = sftSource();
  const button = { sft: 'sft.start', pretrain: 'train.start' }[info.stage];
  say('autosave-status', () => tParts(saved.steps ? 'autosave.resumedOf' : 'autosave.resumed', {
    stage: stageName(info.stage), step: info.step, steps: saved.steps ?? '', date: content(dateTime(saved.savedAt)),
    next: button ? t('autosave.continueWith', { button: t(button) }) : t('autosave.continueStage'),
    // the core's note, as it came
    note: info.note ? tParts('autosave.note', { note: content(info.note) }) : '',
  }));
  await showTokens().catch(() => {});
  await viewsRead(views.refresh('model'));
}

/** On opening the page: offers to resume the newest autosave. */
async function offerResume() {
  const saves = await showAutosaves();
  if (!saves.length) return;
  const newest = saves[0];
  say('autosave-text', () => tParts('autosave.offer', { run: describeAutosave(newest) }));
  $('autosave-offer').hidden = false;
  $('autosave-resume').onclick = () => guard(() => restoreRun(newest));
  $('autosave-dismiss').onclick = () => { $('autosave-offer').hidden = true; };
}

function trainingOptions() {
  return { steps: Number($('steps').value), batchSize: Number($('batch').value), lr: Number($('lr').value), seed: Number($('seed').value), ...PAGE_CADENCE };
}

/** Puts Kiln's defaults (the core's, one source for the CLI, the JS API and the page) in the inputs. */
function showDefaults(d) {
  const pre = d.training.pretrain;
  [$('steps').value, $('batch').value, $('lr').value, $('seed').value] = [pre.steps, pre.batchSize, pre.lr, pre.seed];
  [$('sft-steps').value, $('sft-lr').value] = [d.training.sft.steps, d.training.sft.lr];
  // the core's f32 defaults, written as they were meant (0.8, not 0.800000011920929)
  const f32 = (x) => Number(x.toPrecision(6));
  [$('temperature').value, $('top-k').value] = [f32(d.sampling.temperature), d.sampling.top_k];
  $('chat-temperature').value = f32(d.chat.temperature);
  $('next-temperature').value = $('next-temperature-value').textContent = f32(d.sampling.temperature);
  const ppo = d.training.ppo;
  [$('rank-k').value, $('rank-temperature').value, $('rank-top-k').value, $('rank-top-p').value] = [ppo.answersPerPrompt, f32(ppo.temperature), ppo.topK, f32(ppo.topP)];
  setPreset('tiny');
}

function setPreset(name) {
  const p = app.defaults.presets[name];
  if (p) [$('n-layer').value, $('n-head').value, $('n-embd').value, $('block-size').value] = [p.nLayer, p.nHead, p.nEmbd, p.blockSize];
}

async function estimate() {
  if (!app.tokenizer) {
    say('model-estimate', () => t('model.estimatePrompt'));
    return;
  }
  await guard(async () => {
    const e = await app.kiln.estimateModel(modelOptions(), { batchSize: Number($('batch').value) });
    // the memory breakdown and the refusal are the core's words
    say('model-estimate', () => (e.fits
      ? tParts('model.estimate', { params: num(e.params), memory: content(e.memory) })
      : tParts('model.tooLarge', { problem: content(e.problem) })));
    $('model-estimate').classList.toggle('error', !e.fits);
  });
}

/** The badge: where models train, and why (with auto's two figures once a model is made). */
function showBackend(b) {
  $('backend').className = `badge ${b.kind}`;
  say('backend', () => {
    // the core's reason and the adapter's name are data
    const why = b.reason ? tParts('backend.why', { reason: content(b.reason) }) : '';
    const threads = b.threads > 1 ? t('backend.threads', { n: b.threads }) : t('backend.oneThread');
    if (b.kind === 'cpu') return tParts('backend.cpu', { threads, why });
    return tParts(b.software ? 'backend.software' : 'backend.gpu', { adapter: content(b.adapter), why });
  });
}

/** A model's shape, for the model.* lines. */
const sizes = (c) => ({ layers: c.n_layer, heads: c.n_head, width: c.n_embd, context: c.block_size });

async function createModel() {
  if (!app.tokenizer) await trainTokenizer();
  if (app.backend.auto) say('model-stats', () => t('model.timing'));
  const info = await app.kiln.createModel(modelOptions(), trainingOptions());
  app.model = info;
  if (info.backend) showBackend(app.backend = info.backend);
  resetChart();
  const c = info.config;
  say('model-stats', () => tParts('model.ready', {
    ...sizes(c), vocab: c.vocab_size, params: num(info.params), memory: content(info.memory),
    trainRows: num(info.trainRows), valRows: num(info.valRows),
  }));
  app.done = {};
  await viewsRead(views.refresh('model'));
}

// ---------------------------------------------------------------- training

// The charts' labels are words too: a language switch makes each chart again with its data.
const lossChart = () => ({
  width: Math.min(900, document.body.clientWidth - 40),
  height: 240,
  scales: { x: { time: false } },
  axes: [{ label: t('chart.step') }, { label: t('chart.loss') }],
  series: [{ label: t('chart.value') }, { label: t('chart.training'), stroke: '#b4461e', width: 2 }, { label: t('chart.validation'), stroke: '#2166ac', width: 2, spanGaps: true, points: { show: true } }],
});
let plot = new uPlot(lossChart(), [[], [], []], $('chart'));

function setButtons(state) {
  // While a run is going, the text, tokenizer and model stay as they are.
  for (const id of ['train-tokenizer', 'create-model', 'import', 'use-text', 'file', 'sft-start', 'sft-file',
    'reward-start', 'ppo-start', 'dpo-start', 'rank-sample', 'compare']) $(id).disabled = state !== 'idle';
  for (const radio of document.querySelectorAll('input[name=source], input[name=sft-source]')) radio.disabled = state !== 'idle';
  $('start').disabled = state !== 'idle';
  $('pause').disabled = state !== 'running';
  $('resume').disabled = state !== 'paused';
  $('stop').disabled = state === 'idle';
  $('align-pause').disabled = state !== 'running';
  $('align-resume').disabled = state !== 'paused';
  $('align-stop').disabled = state === 'idle';
  app.state = state;
}

function resetChart() {
  app.progress = [];
  plot.setData([[], [], []]);
  $('samples').replaceChildren();
}

function onProgress(p) {
  if (p.event) {
    // the divergence guard or a worker recovery: said, and the curve cut back to its step
    app.events = [...(app.events ?? []), p.event];
    say('train-stats', () => tParts('train.event', { event: content(p.event) }));
    app.progress = app.progress.filter((q) => q.step <= p.step);
    const [xs, loss, val] = plot.data;
    const keep = xs.filter((x) => x <= p.step).length;
    plot.setData([xs.slice(0, keep), loss.slice(0, keep), val.slice(0, keep)]);
    const li = stepLine(p.step, p.event);
    li.className = 'event';
    $('samples').prepend(li);
    return;
  }
  app.progress.push(p);
  app.stage = p.stage;
  app.done[p.stage] = p.step;
  viewsRead(views.refresh('progress', p));
  if (p.loss != null || p.valLoss != null) {
    const [xs, loss, val] = plot.data;
    plot.setData([[...xs, p.step], [...loss, p.loss], [...val, p.valLoss]]);
  }
  const last = app.progress.findLast((q) => q.loss != null);
  const lastVal = app.progress.findLast((q) => q.valLoss != null);
  const stats = () => t('train.stats', {
    step: p.step, steps: p.steps, loss: fmt(last?.loss), validation: fmt(lastVal?.valLoss),
    speed: num(Math.round(p.tokensPerS)), eta: Math.round(p.etaS), lr: p.lr.toExponential(2),
    memory: p.memoryPeakBytes != null ? t('train.gpuMemory', { size: mib(p.memoryPeakBytes) }) : '',
  });
  say('train-stats', stats);
  say('stage-name', () => t(p.stage === 'sft' ? 'train.stageSft' : 'train.stagePretrain'));
  if (p.stage === 'sft') say('sft-stats', stats);
  if (p.sample != null) $('samples').prepend(stepLine(p.step, p.sample));
}

/** A list item 'step 40: <text>', the text (a sample, or the core's event) as data. */
function stepLine(step, text) {
  const li = document.createElement('li');
  li.dataset.step = String(step);
  li.append(...tParts('train.stepLine', { step, text: content(text) }));
  return li;
}

/** Rewords the samples' 'step 40:' after a language switch, their text kept. */
function rewordStepLines() {
  for (const li of document.querySelectorAll('li[data-step]')) {
    li.replaceChildren(...tParts('train.stepLine', { step: li.dataset.step, text: li.querySelector('[data-content]') }));
  }
}

async function start() {
  setButtons('running');
  await guard(async () => {
    if (!app.model) await createModel();
    app.training = true;
    const steps = Number($('steps').value);
    if (app.progress.at(-1)?.stage === 'sft') resetChart();
    await app.kiln.train({ stage: 'pretrain', steps, ...PAGE_CADENCE, onProgress, onAutosave });
  });
  app.training = false;
  setButtons('idle');
  await viewsRead(views.refresh('done'));
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
  remove.textContent = t('sft.removeRow');
  remove.title = t('sft.removeRowTitle');
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
    if (!file) throw pageError('error.chooseJsonl', 'data');
    return { data: file };
  }
  const rows = tableRows();
  if (rows.length < 2) throw pageError('error.twoExamples', 'data');
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
    span.title = t(supervised ? 'sft.tokenLearnt' : 'sft.tokenMasked', { id });
    if (supervised) span.className = 'sup';
    return span;
  }));
}

/** ' Skipped 2 lines: …' after a line of stats, the core's reasons as data; nothing when none were. */
const skippedLines = (skipped) => (skipped?.length
  ? tParts('common.skipped', { count: skipped.length, lines: content(skipped.slice(0, 5).join('; ')) }) : '');

async function fineTune() {
  setButtons('running');
  await guard(async () => {
    if (!app.model) throw pageError('error.modelBeforeSft', 'config');
    const last = app.progress.at(-1);
    const unfinished = last?.stage === 'sft' && last.step < last.steps && app.sftSource === sftSource();
    if (!unfinished) resetChart();
    app.sftSource = sftSource();
    app.training = true;
    say('sft-stats', () => t('sft.preparing'));
    await app.kiln.train({
      stage: 'sft', ...(unfinished ? {} : { ...sftData(), restart: true }),
      steps: Number($('sft-steps').value), lr: Number($('sft-lr').value), ...PAGE_CADENCE, sampleEvery: 25,
      onProgress, onAutosave,
      onStage: (info) => {
        say('sft-stats', () => tParts('sft.stats', { train: num(info.trainRows), validation: num(info.valRows), skipped: skippedLines(info.skipped) }));
        app.sftInfo = info;
      },
    });
  });
  app.training = false;
  setButtons('idle');
  await viewsRead(views.refresh('done'));
}


// ---------------------------------------------------------------- ranking

// The person's rankings: kept in this browser (localStorage) across reloads, editable,
// exported and imported as JSONL ({prompt, answers, ranks, verdict}, rank 1 best).
const RANKINGS_KEY = 'kiln.rankings';
/** The question being ranked (its answers and the order so far), so a reload loses no work. */
const IN_PROGRESS_KEY = 'kiln.ranking-in-progress';
/** Held-out questions the before/after view answers (the first ones of the split). */
const BEFORE_AFTER = 4;
const rank = { prompts: [], next: 0, current: null, editing: null, dragged: null, note: null };

function loadRankings() {
  try {
    const stored = JSON.parse(localStorage.getItem(RANKINGS_KEY) ?? '[]');
    return Array.isArray(stored) ? stored : [];
  } catch {
    return [];
  }
}

function saveRankings(list) {
  app.rankings = list;
  localStorage.setItem(RANKINGS_KEY, JSON.stringify(list));
  showRankings();
  views.stageMap();
}

const rankingsJsonl = () => app.rankings.map((r) => JSON.stringify(r)).join('\n') + (app.rankings.length ? '\n' : '');

/** Shows the count of rankings, with `note` (what the last file read or import did) after it. */
function showRankCount(note = null) {
  rank.note = note;
  say('rank-count', () => {
    const ranked = app.rankings.filter((r) => r.verdict === 'ranked').length;
    const other = app.rankings.length - ranked;
    const count = other ? t('rank.countWithOther', { ranked, other }) : t('rank.count', { ranked });
    return [count, ...(rank.note?.() ?? [])];
  });
}

function showRankings() {
  showRankCount();
  showRankList();
}

function showRankList() {
  const items = app.rankings.map((r, i) => {
    const li = document.createElement('li');
    const order = r.answers.map((a, j) => [r.ranks[j], a]).sort((x, y) => x[0] - y[0]);
    // the prompt and the answers are data; a verdict other than a ranking is the page's word
    const what = r.verdict === 'ranked'
      ? content(order.map(([k, a]) => `${k}. ${a}`).join('  '))
      : (hasMessage(`rank.verdict.${r.verdict}`) ? t(`rank.verdict.${r.verdict}`) : r.verdict);
    li.append(content(r.prompt.at(-1)?.content ?? ''), ' → ', what, ' ');
    const edit = document.createElement('button');
    edit.textContent = t('rank.edit');
    edit.addEventListener('click', () => editRanking(i));
    li.append(edit);
    return li;
  });
  $('rank-list').replaceChildren(...items);
}

const rankSource = () => document.querySelector('input[name=rank-source]:checked').value;

/** The next prompt to rank, as messages ending with the user's turn. */
async function nextPrompt() {
  const source = rankSource();
  if (source === 'typed') {
    const text = $('rank-typed').value.trim();
    if (!text) throw pageError('error.typePrompt', 'data');
    return [{ role: 'user', content: text }];
  }
  if (source === 'file') {
    if (!rank.prompts.length) throw pageError('error.openPrompts', 'data');
  } else if (!rank.prompts.length || rank.source !== 'builtin') {
    // held-out questions the fine-tuning never showed, past the first few that the
    // before/after view answers
    const convs = await app.kiln.instructionExamples('en', 'heldout', 300);
    rank.prompts = convs.slice(BEFORE_AFTER).map((c) => c.slice(0, c.findLastIndex((m) => m.role === 'user') + 1));
  }
  rank.source = source;
  const prompt = rank.prompts[rank.next % rank.prompts.length];
  rank.next += 1;
  return prompt;
}

async function sampleAnswers() {
  if (!app.model) throw pageError('error.modelBeforeRank', 'config');
  const prompt = await nextPrompt();
  const options = {
    k: Number($('rank-k').value), temperature: Number($('rank-temperature').value),
    topK: Number($('rank-top-k').value), topP: Number($('rank-top-p').value), seed: Date.now() % 1e9,
  };
  $('rank-question').textContent = t('rank.sampling');
  const candidates = await app.kiln.sampleCandidates(prompt, options);
  showCandidates({ prompt, answers: candidates.map((c) => c.text), ranks: candidates.map((_, i) => i + 1) }, null);
}

/** Shows a prompt's answers as cards in rank order; `editing` is the stored index. */
function showCandidates(ranking, editing) {
  rank.current = { ...ranking, ranks: [...ranking.ranks], changed: editing != null };
  rank.editing = editing;
  $('rank-question').replaceChildren(content(ranking.prompt.at(-1)?.content ?? ''));
  renderCards();
  for (const id of ['rank-submit', 'rank-skip', 'rank-bad']) $(id).disabled = false;
  $('rank-cards').firstElementChild?.focus();
}

function renderCards(focusAnswer) {
  const c = rank.current;
  localStorage.setItem(IN_PROGRESS_KEY, JSON.stringify({ ...c, editing: rank.editing }));
  const order = c.answers.map((_, i) => i).sort((a, b) => c.ranks[a] - c.ranks[b] || a - b);
  const cards = order.map((i) => {
    const li = document.createElement('li');
    li.tabIndex = 0;
    li.draggable = true;
    li.dataset.answer = String(i);
    const badge = document.createElement('span');
    badge.className = 'rank';
    badge.textContent = String(c.ranks[i]);
    li.append(badge, c.answers[i] ? content(c.answers[i]) : t('rank.empty'));
    li.setAttribute('aria-label', t('rank.cardLabel', { rank: c.ranks[i], answer: c.answers[i] }));
    return li;
  });
  $('rank-cards').replaceChildren(...cards);
  if (focusAnswer != null) $('rank-cards').querySelector(`[data-answer="${focusAnswer}"]`)?.focus();
}

/** Ranks from the cards' order after a drag: 1, 2, 3 … by position. */
function ranksFromOrder() {
  const c = rank.current;
  [...$('rank-cards').children].forEach((li, position) => { c.ranks[Number(li.dataset.answer)] = position + 1; });
  c.changed = true;
  renderCards();
}

function onCardKey(event) {
  const li = event.target.closest('li');
  if (!li || !rank.current) return;
  const cards = [...$('rank-cards').children];
  const at = cards.indexOf(li);
  if (/^[1-6]$/.test(event.key) && Number(event.key) <= rank.current.answers.length) {
    rank.current.ranks[Number(li.dataset.answer)] = Number(event.key);
    rank.current.changed = true;
    renderCards(li.dataset.answer);
  } else if (event.key === 'ArrowRight' || event.key === 'ArrowDown') {
    cards[Math.min(at + 1, cards.length - 1)].focus();
  } else if (event.key === 'ArrowLeft' || event.key === 'ArrowUp') {
    cards[Math.max(at - 1, 0)].focus();
  } else if (event.key === 'Enter') {
    submitRanking('ranked');
  } else {
    return;
  }
  event.preventDefault();
}

function submitRanking(verdict) {
  const c = rank.current;
  if (!c) return;
  if (verdict === 'ranked' && !c.changed
      && !window.confirm(t('rank.confirmUnchanged'))) return;
  // ranks become 1.. dense-free as given (ties stay ties)
  const entry = { prompt: c.prompt, answers: c.answers, ranks: c.ranks, verdict };
  const list = [...app.rankings];
  if (rank.editing != null) list[rank.editing] = entry;
  else list.push(entry);
  saveRankings(list);
  localStorage.removeItem(IN_PROGRESS_KEY);
  rank.current = null;
  rank.editing = null;
  $('rank-cards').replaceChildren();
  $('rank-question').textContent = '';
  for (const id of ['rank-submit', 'rank-skip', 'rank-bad']) $(id).disabled = true;
}

/** Shows the question that was being ranked when the page closed, as it was left. */
function restoreRankingInProgress() {
  let saved = null;
  try {
    saved = JSON.parse(localStorage.getItem(IN_PROGRESS_KEY) ?? 'null');
  } catch {
    // unreadable: nothing to restore
  }
  const valid = saved && Array.isArray(saved.prompt) && Array.isArray(saved.answers) && Array.isArray(saved.ranks)
    && saved.answers.length === saved.ranks.length && saved.answers.every((a) => typeof a === 'string');
  if (!valid) return;
  const editing = Number.isInteger(saved.editing) && saved.editing < app.rankings.length ? saved.editing : null;
  showCandidates({ prompt: saved.prompt, answers: saved.answers, ranks: saved.ranks.map(Number) }, editing);
  rank.current.changed = Boolean(saved.changed);
}

function editRanking(i) {
  const r = app.rankings[i];
  showCandidates({ prompt: r.prompt, answers: r.answers, ranks: r.ranks.length ? r.ranks : r.answers.map((_, j) => j + 1) }, i);
}

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: 'application/jsonl' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  a.click();
  URL.revokeObjectURL(url);
}

async function importRankings(file) {
  const read = await app.kiln.checkRankings(file);
  saveRankings([...app.rankings, ...read.rankings]);
  showRankCount(() => [...tParts('rank.imported', { count: read.rankings.length, pairs: read.pairs }), ...[skippedLines(read.skipped)].flat()]);
}

// ---------------------------------------------------------------- alignment

const alignChart = () => ({
  width: Math.min(960, document.body.clientWidth - 40), height: 220,
  scales: { x: { time: false } },
  axes: [{ label: t('chart.step') }, { label: t('chart.alignAxis') }],
  series: [{ label: t('chart.value') }, { label: t('chart.reward'), stroke: '#b4461e', width: 2, spanGaps: true },
    { label: 'KL', stroke: '#6a3d9a', width: 2, spanGaps: true },
    { label: t('chart.pairAccuracy'), stroke: '#2166ac', width: 2, spanGaps: true, points: { show: true } }],
});
let alignPlot = new uPlot(alignChart(), [[], [], [], []], $('align-chart'));
app.alignPlot = alignPlot;

/** Makes both charts again in the current language, with the data they show. */
function redrawCharts() {
  const remake = (old, options, where) => {
    const { data } = old;
    old.destroy();
    return new uPlot(options, data, where);
  };
  plot = remake(plot, lossChart(), $('chart'));
  alignPlot = remake(alignPlot, alignChart(), $('align-chart'));
  app.alignPlot = alignPlot;
}

/** A preference stage's measure in words (the core's name, e.g. valPairAccuracy, in English). */
const metricName = (name) => (hasMessage(`align.metric.${name}`) ? t(`align.metric.${name}`) : name);

function onAlignProgress(p) {
  if (p.event) {
    app.events = [...(app.events ?? []), p.event];
    say('align-stats', () => tParts('train.event', { event: content(p.event) }));
    app.progress = app.progress.filter((q) => q.step <= p.step);
    return;
  }
  app.progress.push(p);
  app.stage = p.stage;
  viewsRead(views.refresh('progress', p));
  const m = p.metrics ?? {};
  const reward = m.meanReward ?? m.rewardMargin ?? null;
  const accuracy = m.valPairAccuracy ?? null;
  if (reward != null || m.kl != null || accuracy != null) {
    const [xs, r, kl, acc] = alignPlot.data;
    alignPlot.setData([[...xs, p.step], [...r, reward], [...kl, m.kl ?? null], [...acc, accuracy]]);
  }
  app.alignMetrics = { ...app.alignMetrics, ...m };
  const metrics = { ...app.alignMetrics };
  say('align-stats', () => t('align.stats', {
    stage: stageName(p.stage), step: p.step, steps: p.steps, loss: fmt(p.loss),
    metrics: Object.entries(metrics).map(([k, v]) => `${metricName(k)} ${fmt(v, 3)}`).join(' · '),
  }));
  if (p.sample != null) $('align-samples').prepend(stepLine(p.step, p.sample));
}

async function align(stage) {
  setButtons('running');
  await guard(async () => {
    if (!app.model) throw pageError('error.modelBeforeAlign', 'config');
    const ranked = app.rankings.filter((r) => r.verdict === 'ranked');
    if (stage !== 'ppo' && ranked.length < 2) {
      throw pageError('error.rankTwo', 'data', { count: ranked.length });
    }
    app.progress = [];
    app.alignMetrics = {};
    alignPlot.setData([[], [], [], []]);
    $('align-samples').replaceChildren();
    app.training = true;
    const steps = Number($('align-steps').value) || app.defaults.training[stage].steps;
    const data = ranked.length ? rankingsJsonl() : undefined;
    say('align-stats', () => t('align.starting', { stage: stageName(stage) }));
    const last = await app.kiln.train({ stage, data, steps, restart: true, onProgress: onAlignProgress, onAutosave });
    app.aligned = stage === 'reward' ? app.aligned : stage;
    if (stage !== 'reward') app.done.align = last?.step ?? true;
    if (stage === 'reward') app.rewardTrained = true;
    if (last && stage !== 'reward') await compare();
  });
  app.training = false;
  setButtons('idle');
  await viewsRead(views.refresh('done'));
}

/** The same held-out questions answered by the fine-tuned model and the current one. */
async function compare() {
  const convs = await app.kiln.instructionExamples('en', 'heldout', BEFORE_AFTER);
  const prompts = convs.map((c) => c.slice(0, 1));
  const before = await app.kiln.answers(prompts, 'reference');
  const after = await app.kiln.answers(prompts, 'current');
  const rows = prompts.map((p, i) => {
    const tr = document.createElement('tr');
    for (const text of [p[0].content.split('\n').at(-1), before[i], after[i]]) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  });
  $('compare-table').tBodies[0].replaceChildren(...rows);
  app.compared = { before, after };
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
    if (!app.model) throw pageError('error.modelFirst', 'config');
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

/** Puts the next held-out question in the chat box. The questions come from the worker:
 * until they are there the button is disabled and the box and expectedAnswer are empty, so
 * nothing (a person, a test) reads the last question as the next one. */
async function askHeldOut() {
  const lang = sftSource() === 'zh' ? 'zh' : 'en';
  const button = $('chat-heldout');
  button.disabled = true;
  app.expectedAnswer = null;
  $('chat-input').value = '';
  try {
    app.heldOut ??= {};
    app.heldOut[lang] ??= await app.kiln.instructionExamples(lang, 'heldout', 20);
    // in order, so a person (or a test) can go through them one by one
    app.heldOutIndex = ((app.heldOutIndex ?? -1) + 1) % app.heldOut[lang].length;
    const conv = app.heldOut[lang][app.heldOutIndex];
    $('chat-input').value = conv.at(-2).content;
    app.expectedAnswer = conv.at(-1).content;
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- playground

async function generate() {
  $('generate').disabled = true;
  $('output').textContent = $('prompt').value;
  await guard(async () => {
    if (!app.model) throw pageError('error.modelFirst', 'config');
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
  say('files-stats', () => t('files.exported', { name: 'kiln-model.zip', size: mib(zip.byteLength) }));
}

async function importModel(file) {
  const info = await app.kiln.importModel(file, trainingOptions());
  app.model = info;
  app.tokenizer = { vocabSize: info.config.vocab_size, kind: 'imported' };
  // the core's notes on what it changed, as they came
  const notes = info.notes?.length ? [' ', content(info.notes.join(' '))] : '';
  say('tok-stats', () => tParts('tokenizer.imported', { size: info.config.vocab_size, notes }));
  await showSftExample();
  await showTokens();
  const c = info.config;
  say('model-stats', () => t('model.imported', { ...sizes(c), params: num(info.params) }));
  app.done = {};
  await viewsRead(views.refresh('model'));
  say('files-stats', () => tParts('files.imported', { name: content(file.name), size: mib(file.size) }));
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
  for (const radio of document.querySelectorAll('input[name=rank-source]')) {
    radio.addEventListener('change', () => {
      $('rank-typed-box').hidden = rankSource() !== 'typed';
      if (rankSource() === 'file') $('rank-file').click();
    });
  }
  $('rank-file').addEventListener('change', () => guard(async () => {
    const read = await app.kiln.checkRankings($('rank-file').files[0]).catch(() => null);
    if (read) rank.prompts = read.rankings.map((r) => r.prompt);
    else {
      const text = await $('rank-file').files[0].text();
      rank.prompts = text.split('\n').filter((l) => l.trim()).map((l, i) => {
        let v;
        try { v = JSON.parse(l); } catch { throw pageError('error.lineNotJson', 'data', { line: i + 1 }); }
        if (typeof v.prompt === 'string') return [{ role: 'user', content: v.prompt }];
        if (Array.isArray(v.messages)) return v.messages.slice(0, v.messages.findLastIndex((m) => m.role === 'user') + 1);
        throw pageError('error.lineNoPrompt', 'data', { line: i + 1 });
      });
    }
    rank.next = 0;
    const count = rank.prompts.length;
    say('rank-count', () => t('rank.promptsRead', { count }));
  }));
  $('rank-sample').addEventListener('click', () => guard(sampleAnswers));
  $('rank-submit').addEventListener('click', () => submitRanking('ranked'));
  $('rank-skip').addEventListener('click', () => submitRanking('skipped'));
  $('rank-bad').addEventListener('click', () => submitRanking('all_bad'));
  $('rank-cards').addEventListener('keydown', onCardKey);
  $('rank-cards').addEventListener('dragstart', (event) => {
    rank.dragged = event.target.closest('li');
    rank.dragged?.classList.add('dragging');
  });
  $('rank-cards').addEventListener('dragend', () => { rank.dragged?.classList.remove('dragging'); rank.dragged = null; });
  $('rank-cards').addEventListener('dragover', (event) => {
    event.preventDefault();
    const over = event.target.closest('li');
    if (!rank.dragged || !over || over === rank.dragged) return;
    const after = event.clientX > over.getBoundingClientRect().left + over.offsetWidth / 2;
    over.parentNode.insertBefore(rank.dragged, after ? over.nextSibling : over);
  });
  $('rank-cards').addEventListener('drop', (event) => { event.preventDefault(); ranksFromOrder(); });
  $('rank-export').addEventListener('click', () => download('kiln-rankings.jsonl', rankingsJsonl()));
  $('pairs-export').addEventListener('click', () => guard(async () => download('kiln-pairs.jsonl', await app.kiln.rankingPairs(rankingsJsonl()))));
  $('rank-import').addEventListener('change', () => guard(() => importRankings($('rank-import').files[0])));
  $('reward-start').addEventListener('click', () => align('reward'));
  $('ppo-start').addEventListener('click', () => align('ppo'));
  $('dpo-start').addEventListener('click', () => align('dpo'));
  $('align-pause').addEventListener('click', () => { setButtons('paused'); guard(() => app.kiln.pause()); });
  $('align-resume').addEventListener('click', () => { setButtons('running'); guard(() => app.kiln.resume()); });
  $('align-stop').addEventListener('click', () => guard(() => app.kiln.stop()));
  $('compare').addEventListener('click', () => guard(compare));
  $('export').addEventListener('click', () => guard(exportModel));
  $('import').addEventListener('change', () => guard(async () => {
    const file = $('import').files[0];
    if (file) await importModel(file);
  }));
}

async function main() {
  startI18n($('language'));
  say('backend', () => t('backend.starting'));
  say('train-stats', () => t('train.statsEmpty'));
  wire();
  setButtons('idle');
  const query = new URLSearchParams(location.search);
  const backend = query.get('backend') ?? 'auto';
  // ?threads=N: CPU workers sharing each step (the default is one per core, at most 4)
  const threads = Number(query.get('threads')) || undefined;
  await guard(async () => {
    app.kiln = await Kiln.create({ backend, threads });
    app.backend = app.kiln.backend;
    app.defaults = await app.kiln.defaults();
    showDefaults(app.defaults);
    views = setUpViews(app, guard);
    app.rankings = loadRankings();
    showRankings();
    addExampleRow('What is the capital of France?', 'Paris.');
    addExampleRow('Say hello in Spanish.', 'Hola.');
    showBackend(app.backend);
    $('backend-choice').value = backend;
    $('backend-choice').addEventListener('change', () => {
      const url = new URL(location.href);
      url.searchParams.set('backend', $('backend-choice').value);
      location.assign(url);
    });
    await chooseSource();
    await offerResume();
    restoreRankingInProgress();
    app.ready = true;
  });
}

main();
