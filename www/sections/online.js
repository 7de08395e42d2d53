// Learning as you rank: with the box ticked, each submitted ranking also goes to the
// worker, which every few rankings runs a few DPO steps on all of them so far (the core's
// online DPO, held near the fine-tuned model). The page does not wait: the person ranks
// on, and the next prompt's answers, asked of the worker after the update, come from the
// updated model. Each update is a point on this chart (its agreement with the rankings
// held back from training, and its KL to the fine-tuned model); the last ones can be undone.
import uPlot from '../vendor/uPlot.esm.js';
import { t, tParts, onLanguageChange } from '../i18n.js';
import { $, app, say, fmt, guard, pageError, numberField } from '../page.js';
import { remakeChart, STEP_TICKS } from './train.js';

const chart = () => ({
  width: Math.min(640, document.body.clientWidth - 40), height: 160,
  scales: { x: { time: false }, y: { range: [0, 1] }, kl: { auto: true } },
  axes: [{ label: t('online.axisRankings'), incrs: STEP_TICKS }, { label: t('online.axisAgreement') }, { scale: 'kl', side: 1, label: 'KL', grid: { show: false } }],
  series: [{ label: t('online.axisRankings') }, { label: t('online.agreement'), stroke: '#2166ac', width: 2, points: { show: true } },
    { label: 'KL', scale: 'kl', stroke: '#6a3d9a', width: 2, points: { show: true } }],
});

app.online = { updates: [], pending: 0, error: null };
let plot = null;

function show() {
  const { updates, pending, error } = app.online;
  $('online-box').hidden = !$('rank-online').checked && !updates.length;
  $('rank-undo').disabled = !updates.length || pending > 0;
  plot ??= new uPlot(chart(), [[], [], []], $('online-chart'));
  plot.setData([updates.map((u) => u.rankings), updates.map((u) => u.valPairAccuracy), updates.map((u) => u.kl)]);
  app.onlinePlot = plot;
  const last = updates.at(-1);
  say('online-stats', () => {
    if (error) return tParts('online.failed', { message: error });
    const vars = last && { updates: updates.length, rankings: last.rankings, trained: last.trainedOn, held: last.heldBack, agreement: fmt(last.valPairAccuracy, 2), kl: fmt(last.kl, 3) };
    const parts = last ? t(updates.length === 1 ? 'online.statsOne' : 'online.stats', vars) : t(app.online.undone ? 'online.allUndone' : 'online.waiting');
    return pending ? `${parts} ${t('online.updating')}` : parts;
  });
}

/** The loop as a restored autosave had it (`updates`, or null when it was not learning). */
export function restoreOnline(updates) {
  if (!updates) return;
  app.online = { updates, pending: 0, error: null };
  $('rank-online').checked = true;
  show();
}

/** Gives the worker a submitted ranking when learning as you rank is on. */
export function learnFrom(ranking) {
  if (!$('rank-online').checked || !app.model) return;
  // a training run owns the model until it ends: the ranking is kept, the loop waits
  if (app.training) {
    app.online.error = t('online.busy');
    show();
    return;
  }
  app.online.pending += 1;
  app.online.error = null;
  show();
  // with LoRA when the alignment section asks for it (the adapters train, the weights stay)
  app.kiln.learnFromRanking(ranking, { loraRank: numberField('align-lora') })
    .then((update) => { if (update) app.online.updates = [...app.online.updates, update]; })
    .catch((error) => { app.online.error = error.message; })
    .finally(() => { app.online.pending -= 1; show(); });
}

export function wireOnline() {
  $('rank-online').addEventListener('change', show);
  $('rank-undo').addEventListener('click', () => guard(async () => {
    if (app.training) throw pageError('online.busy', 'config');
    if (await app.kiln.undoUpdate()) {
      app.online.updates = app.online.updates.slice(0, -1);
      app.online.undone = true;
    }
    show();
  }));
  onLanguageChange(() => {
    if (plot) plot = remakeChart(plot, chart(), $('online-chart'));
    app.onlinePlot = plot;
  });
}
