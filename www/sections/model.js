// The model section: its shape (a preset or custom sizes), the estimate of its parameters
// and memory before it is made, the backend badge, and Create model.
import { t, tParts, content, num } from '../i18n.js';
import { $, app, views, viewsRead, say, guard } from '../page.js';
import { trainTokenizer } from './tokenizer.js';
import { resetChart, showStage, trainingOptions } from './train.js';
import { modelOnTextInUse } from './context.js';

function modelOptions() {
  const preset = $('preset').value;
  const sizes = { nLayer: Number($('n-layer').value), nHead: Number($('n-head').value), nEmbd: Number($('n-embd').value), blockSize: Number($('block-size').value) };
  return preset === 'custom' ? { preset: 'tiny', ...sizes } : { preset };
}

export function setPreset(name) {
  const p = app.defaults.presets[name];
  if (p) [$('n-layer').value, $('n-head').value, $('n-embd').value, $('block-size').value] = [p.nLayer, p.nHead, p.nEmbd, p.blockSize];
}

export async function estimate() {
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
export function showBackend(b) {
  $('backend').className = `badge ${b.kind}`;
  say('backend', () => {
    // the core's reason and the adapter's name are data
    const why = b.reason ? tParts('backend.why', { reason: content(b.reason) }) : '';
    const threads = b.threads > 1 ? t('backend.threads', { n: b.threads }) : t('backend.oneThread');
    // which WebAssembly build runs: relaxed SIMD (fused multiply-adds) or SIMD128 alone
    const simd = b.simd === 'relaxed' ? t('backend.relaxed') : t('backend.simdOnly');
    if (b.kind === 'cpu') return tParts('backend.cpu', { simd, threads, why });
    return tParts(b.software ? 'backend.software' : 'backend.gpu', { adapter: content(b.adapter), why });
  });
}

/** A model's shape, for the model.* lines. */
export const sizes = (c) => ({ layers: c.n_layer, heads: c.n_head, width: c.n_embd, context: c.block_size });

/** A new model (made, imported or resumed): what the runs of the one before showed goes
 * (the stats lines, the stage, the charts and samples, the before/after answers). */
export function forgetRun() {
  resetChart();
  say('train-stats', () => t('train.statsEmpty'));
  showStage(null);
  for (const id of ['sft-stats', 'sft-skipped', 'align-stats']) say(id, () => '');
  $('align-samples').replaceChildren();
  $('compare-table').tBodies[0].replaceChildren();
  app.alignPlot?.setData([[], [], [], []]);
  app.alignMetrics = {};
  app.restored = null;
  app.stage = null;
}

export async function createModel() {
  if (!app.tokenizer) await trainTokenizer();
  if (app.backend.auto) say('model-stats', () => t('model.timing'));
  const info = await app.kiln.createModel(modelOptions(), trainingOptions());
  app.model = info;
  modelOnTextInUse();
  if (info.backend) showBackend(app.backend = info.backend);
  forgetRun();
  const c = info.config;
  say('model-stats', () => tParts('model.ready', {
    ...sizes(c), vocab: c.vocab_size, params: num(info.params), memory: content(info.memory),
    trainRows: num(info.trainRows), valRows: num(info.valRows),
  }));
  app.done = {};
  await viewsRead(views.refresh('model'));
}

/** The shape's inputs: a preset fills the sizes, a size typed makes the preset custom. */
export function wireModel() {
  $('preset').addEventListener('change', () => {
    setPreset($('preset').value);
    guard(estimate);
  });
  for (const id of ['n-layer', 'n-head', 'n-embd', 'block-size']) {
    $(id).addEventListener('input', () => { $('preset').value = 'custom'; guard(estimate); });
  }
  $('batch').addEventListener('input', () => guard(estimate));
  $('create-model').addEventListener('click', () => guard(createModel));
}
