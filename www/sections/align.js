// The alignment section: a reward model, then PPO or DPO from the person's rankings, KTO
// from them read as thumbs, or RLOO and GRPO on a rule with no ranking; with their own chart
// (reward, KL, pair accuracy) and the before/after answers to held-out questions.
import uPlot from '../vendor/uPlot.esm.js';
import { t, tParts, content, hasMessage, onLanguageChange } from '../i18n.js';
import { $, app, views, viewsRead, say, sayForNow, guard, pageError, fmt, stageName, setButtons, numberField } from '../page.js';
import { remakeChart, stepLine, showStage, STEP_TICKS } from './train.js';
import { onAutosave } from './autosave.js';
import { BEFORE_AFTER, rankingsJsonl } from './rank.js';
import { ruleJson } from './rules.js';
import { thumbsJsonl } from './thumbs.js';

const alignChart = () => ({
  width: Math.min(960, document.body.clientWidth - 40), height: 220,
  scales: { x: { time: false } },
  axes: [{ label: t('chart.step'), incrs: STEP_TICKS }, { label: t('chart.alignAxis') }],
  series: [{ label: t('chart.value') }, { label: t('chart.reward'), stroke: '#b4461e', width: 2, spanGaps: true },
    { label: 'KL', stroke: '#6a3d9a', width: 2, spanGaps: true },
    { label: t('chart.pairAccuracy'), stroke: '#2166ac', width: 2, spanGaps: true, points: { show: true } }],
});
/** Each line of the chart's legend explained on hover (the series after the step). */
function legendTitles(plot) {
  const titles = [null, t('chart.rewardHelp'), t('chart.klHelp'), t('chart.pairAccuracyHelp')];
  plot.root.querySelectorAll('.u-legend .u-series').forEach((row, i) => { if (titles[i]) row.title = titles[i]; });
  return plot;
}
let alignPlot = legendTitles(new uPlot(alignChart(), [[], [], [], []], $('align-chart')));
app.alignPlot = alignPlot;

/** A preference stage's measure in words (the core's name, e.g. valPairAccuracy, in English). */
const metricName = (name) => (hasMessage(`align.metric.${name}`) ? t(`align.metric.${name}`) : name);

/** A measure's name with its one-line explanation on hover. */
function metricLabel(name) {
  const span = document.createElement('span');
  span.textContent = metricName(name);
  if (hasMessage(`align.metric.${name}.help`)) {
    span.title = t(`align.metric.${name}.help`);
    span.className = 'explained';
  }
  return span;
}

function onAlignProgress(p) {
  if (p.event) {
    app.events = [...(app.events ?? []), p.event];
    say('align-stats', () => tParts('train.event', { event: content(p.event) }));
    app.progress = app.progress.filter((q) => q.step <= p.step);
    return;
  }
  app.progress.push(p);
  app.stage = p.stage;
  showStage(p.stage);
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
  say('align-stats', () => tParts('align.stats', {
    stage: stageName(p.stage), step: p.step, steps: p.steps, loss: fmt(p.loss),
    metrics: Object.entries(metrics).flatMap(([k, v], i) => [...(i ? [' · '] : []), metricLabel(k), ` ${fmt(v, 3)}`]),
  }));
  if (p.sample != null) $('align-samples').prepend(stepLine(p.step, p.sample));
}

async function align(stage) {
  setButtons('running');
  await guard(async () => {
    if (!app.model) throw pageError('error.modelBeforeAlign', 'config');
    const ranked = app.rankings.filter((r) => r.verdict === 'ranked');
    // KTO also learns from "all bad" (every answer a thumb down); RLOO and GRPO from the rule alone
    const judged = stage === 'kto' ? app.rankings.filter((r) => r.verdict !== 'skipped') : ranked;
    const onRule = RULE_STAGES.includes(stage);
    // KTO also learns from the thumbs given in the chat and on the cards
    const thumbs = stage === 'kto' ? app.thumbs.length : 0;
    if (!onRule && stage !== 'ppo' && judged.length + thumbs < 2) {
      throw pageError('error.rankTwo', 'data', { count: judged.length });
    }
    const rule = onRule ? ruleJson() : undefined;
    app.training = true;
    // RLOO and GRPO answer the built-in questions, whose answers a rule may compare with
    const data = (onRule ? [] : [judged.length ? rankingsJsonl() : '', thumbs ? thumbsJsonl() : '']).join('') || undefined;
    // until the stage has begun, a refusal leaves the chart, the samples and this line as they were
    const putBack = sayForNow('align-stats', () => t('align.starting', { stage: stageName(stage) }));
    let begun = false;
    const onStage = () => {
      begun = true;
      app.progress = [];
      app.alignMetrics = {};
      alignPlot.setData([[], [], [], []]);
      $('align-samples').replaceChildren();
    };
    let last;
    try {
      // LoRA for every preference stage (the reward model's and PPO's heads train in full beside the adapters)
      last = await app.kiln.train({ stage, data, rule, steps: numberField('align-steps'), loraRank: numberField('align-lora'), restart: true, onStage, onProgress: onAlignProgress, onAutosave });
    } catch (error) {
      if (!begun) putBack();
      throw error;
    }
    app.aligned = stage === 'reward' ? app.aligned : stage;
    if (stage !== 'reward') app.done.align = last?.step ?? true;
    if (stage === 'reward') app.rewardTrained = true;
    if (last && stage !== 'reward') await compare();
  });
  app.training = false;
  setButtons('idle');
  await viewsRead(views.refresh('done'));
}

/** The stages that learn from the rule rather than from rankings. */
const RULE_STAGES = ['rloo', 'grpo'];

/** The typed questions the before/after table answers at most (each is two generations). */
const MAX_TYPED = 8;

/** The same held-out questions answered by the fine-tuned model and the current one. */
async function compare() {
  // the conversations the fine-tuning held out (the person's own when they gave a file)
  const own = await app.kiln.heldOut(BEFORE_AFTER);
  const convs = own.length ? own : await app.kiln.instructionExamples('en', 'heldout', BEFORE_AFTER);
  // and the person's own questions, typed (no expected answer)
  const typed = $('compare-typed').value.split('\n').map((q) => q.trim()).filter(Boolean).slice(0, MAX_TYPED);
  const prompts = [...convs.map((c) => c.slice(0, c.findLastIndex((m) => m.role === 'user') + 1)), ...typed.map((q) => [{ role: 'user', content: q }])];
  const expected = [...convs.map((c) => (c.at(-1).role === 'assistant' ? c.at(-1).content : '')), ...typed.map(() => '')];
  const before = await app.kiln.answers(prompts, 'reference');
  const after = await app.kiln.answers(prompts, 'current');
  const rows = prompts.map((p, i) => {
    const tr = document.createElement('tr');
    for (const text of [p.at(-1).content, expected[i], before[i], after[i]]) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  });
  $('compare-table').tBodies[0].replaceChildren(...rows);
  app.compared = { prompts, expected, before, after };
}

/** The stages' buttons, and the chart made again after a language switch. */
export function wireAlignment() {
  $('reward-start').addEventListener('click', () => align('reward'));
  $('ppo-start').addEventListener('click', () => align('ppo'));
  $('dpo-start').addEventListener('click', () => align('dpo'));
  for (const stage of ['kto', ...RULE_STAGES]) $(`${stage}-start`).addEventListener('click', () => align(stage));
  $('align-pause').addEventListener('click', () => { setButtons('paused'); guard(() => app.kiln.pause()); });
  $('align-resume').addEventListener('click', () => { setButtons('running'); guard(() => app.kiln.resume()); });
  $('align-stop').addEventListener('click', () => guard(() => app.kiln.stop()));
  $('compare').addEventListener('click', () => guard(compare));
  $('align-steps').addEventListener('change', () => guard(() => app.kiln?.checkTraining('dpo', { steps: numberField('align-steps') })));
  onLanguageChange(() => {
    alignPlot = legendTitles(remakeChart(alignPlot, alignChart(), $('align-chart')));
    app.alignPlot = alignPlot;
  });
}
