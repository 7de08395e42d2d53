// The autosave section: where the last autosave stands, the stored autosaves with Resume
// and Delete, and the offer to resume the newest one when the page opens. A resume puts
// back the run's context too (its text, stages done and last stats: sections/context.js).
import { t, tParts, content, num, numberLocale, onLanguageChange } from '../i18n.js';
import { $, app, views, viewsRead, say, guard, pageError, mib, dateTime, stageName } from '../page.js';
import { sizes, forgetRun } from './model.js';
import { onProgress, showStage } from './train.js';
import { restoreText } from './text.js';
import { saveContext, loadContext, pruneContexts, modelTrainedOn } from './context.js';
import { sftSource } from './sft.js';
import { showTokens } from './tokenizer.js';
import { restoreOnline } from './online.js';

/** Says where the last autosave stands (each train call passes this as onAutosave). */
export function onAutosave(saved) {
  if (saved.error) {
    // the package's explanation (a full quota says what to do), as it came
    say('autosave-status', () => tParts('autosave.failed', { error: content(saved.error) }));
    return;
  }
  app.lastAutosave = saved;
  saveContext(saved.id, saved.step);
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
  pruneContexts(saves.map((a) => a.id));
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
  const { context, body } = loadContext(saved.id);
  const info = await app.kiln.restoreAutosave(saved.id);
  $('autosave-offer').hidden = true;
  forgetRun();
  app.model = info;
  app.tokenizer = { vocabSize: info.config.vocab_size, kind: 'restored' };
  const c = info.config;
  say('tok-stats', () => t('tokenizer.restored', { size: c.vocab_size }));
  say('model-stats', () => t('model.restored', { ...sizes(c), params: num(info.params) }));
  // the history has the losses; the speed and learning rate are the last ones saved beside it
  const stats = context?.stats?.stage === info.stage ? context.stats : null;
  const last = info.history.at(-1);
  for (const point of info.history) {
    const measured = point === last && stats ? { tokensPerS: stats.tokensPerS, lr: stats.lr, etaS: stats.etaS, memoryPeakBytes: stats.memoryPeakBytes } : {};
    onProgress({ stage: info.stage, step: point.step, steps: saved.steps ?? point.step, loss: point.loss, valLoss: point.val_loss, lr: null, tokensPerS: null, etaS: null, ...measured });
  }
  if (saved.steps) $(info.stage === 'sft' ? 'sft-steps' : 'steps').value = String(saved.steps);
  app.restored = info;
  restoreOnline(info.online);
  app.stage = info.stage;
  showStage(info.stage);
  // the stages done before this one, as the page had them (older autosaves: this one only)
  app.done = { ...context?.done, [info.stage === 'sft' || info.stage === 'pretrain' ? info.stage : 'align']: info.step };
  modelTrainedOn(context?.text ?? null, body);
  // section 1 as the run left it (a pretraining run carries its text: the core has it back);
  // a failure is shown, and the run stays resumed
  await viewsRead(restoreText(context?.text, body, info.stage === 'pretrain'));
  if (info.stage === 'sft') app.sftSource = sftSource();
  await showTokens().catch(() => {});
  await viewsRead(views.refresh('model'));
  // said last: once it shows, the page is as the run left it
  const button = { sft: 'sft.start', pretrain: 'train.start' }[info.stage];
  say('autosave-status', () => tParts(saved.steps ? 'autosave.resumedOf' : 'autosave.resumed', {
    stage: stageName(info.stage), step: info.step, steps: saved.steps ?? '', date: content(dateTime(saved.savedAt)),
    next: button ? t('autosave.continueWith', { button: t(button) }) : t('autosave.continueStage'),
    // the core's note, as it came
    note: info.note ? tParts('autosave.note', { note: content(info.note) }) : '',
  }));
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
  // where the eye lands: the offer at the top, its Resume button focused
  $('autosave-resume').focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

/** Nothing to click until the list is shown: only the language switch to follow. */
export function wireAutosave() {
  // the list says each autosave's stage and date in words
  onLanguageChange(() => showAutosaves().catch(() => {}));
}
