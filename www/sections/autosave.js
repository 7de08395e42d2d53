// The autosave section: where the last autosave stands, the stored autosaves with Resume
// and Delete, and the offer to resume the newest one when the page opens.
import { t, tParts, content, num, numberLocale, onLanguageChange } from '../i18n.js';
import { $, app, views, viewsRead, say, guard, pageError, mib, dateTime, stageName } from '../page.js';
import { sizes } from './model.js';
import { resetChart, onProgress } from './train.js';
import { sftSource } from './sft.js';
import { showTokens } from './tokenizer.js';

/** Says where the last autosave stands (each train call passes this as onAutosave). */
export function onAutosave(saved) {
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
export async function offerResume() {
  const saves = await showAutosaves();
  if (!saves.length) return;
  const newest = saves[0];
  say('autosave-text', () => tParts('autosave.offer', { run: describeAutosave(newest) }));
  $('autosave-offer').hidden = false;
  $('autosave-resume').onclick = () => guard(() => restoreRun(newest));
  $('autosave-dismiss').onclick = () => { $('autosave-offer').hidden = true; };
}

/** Nothing to click until the list is shown: only the language switch to follow. */
export function wireAutosave() {
  // the list says each autosave's stage and date in words
  onLanguageChange(() => showAutosaves().catch(() => {}));
}
