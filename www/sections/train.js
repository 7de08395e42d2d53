// The training section: pretraining's Start, Pause, Resume and Stop, the loss chart and
// the samples the model writes as it learns (fine-tuning draws on the same chart).
import uPlot from '../vendor/uPlot.esm.js';
import { t, tParts, content, num, onLanguageChange } from '../i18n.js';
import { $, app, views, viewsRead, say, guard, fmt, mib, setButtons, numberField } from '../page.js';
import { createModel } from './model.js';
import { onAutosave } from './autosave.js';
import { modelOnTextInUse } from './context.js';

// How often the page asks for a sample, a validation and a loss: often, so the chart moves.
export const PAGE_CADENCE = { sampleEvery: 50, evalEvery: 25, logEvery: 5 };

export function trainingOptions() {
  return { steps: numberField('steps'), batchSize: numberField('batch'), lr: numberField('lr'), seed: numberField('seed'), ...PAGE_CADENCE };
}

/** Steps are whole: the charts' step axes tick at these spacings only (never at 1.5). */
export const STEP_TICKS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 50000, 100000];

// The charts' labels are words too: a language switch makes each chart again with its data.
const lossChart = () => ({
  width: Math.min(900, document.body.clientWidth - 40),
  height: 240,
  scales: { x: { time: false } },
  axes: [{ label: t('chart.step'), incrs: STEP_TICKS }, { label: t('chart.loss') }],
  series: [{ label: t('chart.value') }, { label: t('chart.training'), stroke: '#b4461e', width: 2 }, { label: t('chart.validation'), stroke: '#2166ac', width: 2, spanGaps: true, points: { show: true } }],
});
let plot = new uPlot(lossChart(), [[], [], []], $('chart'));

/** A chart made again with `options` (new words), the data it shows kept. */
export function remakeChart(old, options, where) {
  const { data } = old;
  old.destroy();
  return new uPlot(options, data, where);
}

export function resetChart() {
  app.progress = [];
  plot.setData([[], [], []]);
  $('samples').replaceChildren();
}

/** `x` written by `write`, or '–' when it is not known. */
const known = (x, write) => (x == null || Number.isNaN(x) ? '–' : write(x));

const STAGE_LABELS = { pretrain: 'train.stagePretrain', sft: 'train.stageSft', reward: 'train.stageReward', ppo: 'train.stagePpo', dpo: 'train.stageDpo', kto: 'train.stageKto', rloo: 'train.stageRloo', grpo: 'train.stageGrpo' };

/** The stage beside section 4's heading: the model's current stage (none for a new model). */
export function showStage(stage) {
  say('stage-name', () => (STAGE_LABELS[stage] ? t(STAGE_LABELS[stage]) : ''));
}

export function onProgress(p) {
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
  // a resumed run's history has no speed or learning rate but the last one saved with it
  const stats = () => t('train.stats', {
    step: p.step, steps: p.steps, loss: fmt(last?.loss), validation: fmt(lastVal?.valLoss),
    speed: known(p.tokensPerS, (x) => num(Math.round(x))), eta: known(p.etaS, Math.round), lr: known(p.lr, (x) => x.toExponential(2)),
    memory: p.memoryPeakBytes != null ? t('train.gpuMemory', { size: mib(p.memoryPeakBytes) }) : '',
  });
  say('train-stats', stats);
  showStage(p.stage);
  if (p.stage === 'sft') say('sft-stats', stats);
  if (p.sample != null) $('samples').prepend(stepLine(p.step, p.sample));
}

/** A list item 'step 40: <text>', the text (a sample, or the core's event) as data. */
export function stepLine(step, text) {
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

/** A text in words, for the warning before Start. */
function textInWords(text) {
  if (!text) return t('train.noText');
  if (text.source === 'en' || text.source === 'zh') return t(text.source === 'zh' ? 'text.builtinZh' : 'text.builtinEn');
  return text.source === 'file' ? t('text.describeFile', { name: text.name, bytes: num(text.bytes) }) : t('text.describePaste', { bytes: num(text.bytes) });
}

/** Whether Start may go on: when the model (or the resumed one a new text replaced) was
 * pretrained on another text than the one section 1 holds now, the person says so first. */
function sameTextOrAsked() {
  const trained = app.modelText;
  if (!trained || !(app.model || app.restored) || trained.hash === app.text?.hash) return true;
  const words = { trained: textInWords(trained), now: textInWords(app.text) };
  app.warnedText = t(app.model ? 'train.otherText' : 'train.otherTextNewModel', words);
  if (!window.confirm(app.warnedText)) return false;
  // the model goes on learning from the text in use (a new model does anyway)
  if (app.model) modelOnTextInUse();
  return true;
}

async function start() {
  if (!sameTextOrAsked()) return;
  setButtons('running');
  await guard(async () => {
    if (!app.model) await createModel();
    app.training = true;
    const steps = numberField('steps');
    if (app.progress.at(-1)?.stage === 'sft') resetChart();
    await app.kiln.train({ stage: 'pretrain', steps, ...PAGE_CADENCE, onProgress, onAutosave });
  });
  app.training = false;
  setButtons('idle');
  await viewsRead(views.refresh('done'));
}

/** The run's buttons, and the chart and step lines redrawn after a language switch. */
export function wireTraining() {
  $('start').addEventListener('click', start);
  // each field checked against its bounds as it is typed, before anything runs
  for (const id of ['steps', 'batch', 'lr', 'seed']) {
    $(id).addEventListener('change', () => guard(() => app.kiln?.checkTraining('pretrain', trainingOptions())));
  }
  $('pause').addEventListener('click', (event) => {
    // how long the click waited for the page: the worker keeps this thread free
    app.lastClickDelayMs = performance.now() - event.timeStamp;
    setButtons('paused');
    guard(() => app.kiln.pause());
  });
  $('resume').addEventListener('click', () => { setButtons('running'); guard(() => app.kiln.resume()); });
  $('stop').addEventListener('click', () => guard(() => app.kiln.stop()));
  onLanguageChange(() => {
    plot = remakeChart(plot, lossChart(), $('chart'));
    rewordStepLines();
  });
}
