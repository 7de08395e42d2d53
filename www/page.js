// The page's common ground: its state (window.kilnApp, what tests read), the lines that
// show state in words (redrawn after a language switch), its errors and the run's buttons.
// Every section (sections/*.js) builds on these; nothing here knows a section, so a
// section can import it without a circle.
import { t, tParts, content, hasMessage, numberLocale, onLanguageChange } from './i18n.js';

export const $ = (id) => document.getElementById(id);
export const fmt = (x, digits = 4) => (x == null || Number.isNaN(x) ? '–' : Number(x).toFixed(digits));
export const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
export const dateTime = (at) => new Date(at).toLocaleString(numberLocale());

// What tests (and curious people) can read: window.kilnApp.
export const app = { kiln: null, backend: null, defaults: null, tokenizer: null, model: null, training: false, progress: [], error: null, chat: [], done: {} };
/** The views of the inside (views.js): refresh(reason) after anything that changes the model. */
export let views = { refresh: async () => {}, stageMap: () => {}, readCompare: async () => {} };
/** A view's reading: its failure is shown, but it neither clears an error already shown
 * (a training run's) nor stops what asked for it (Start, Create model, Import). */
export const viewsRead = (promise) => promise.catch(showError);
window.kilnApp = app;
// A model coming into being (created, imported, resumed) answers every "create a model
// first" still shown beside a section's button.
let model = null;
Object.defineProperty(app, 'model', {
  enumerable: true,
  get: () => model,
  set(value) {
    model = value;
    if (value) clearLines((key) => /^error\.modelBefore/.test(key));
  },
});

/** Puts the views (views.js) in place once the page has a Kiln to read with. */
export function useViews(made) {
  views = made;
}

// ---------------------------------------------------------------- words

/** The lines that show state, by element id: how to draw each, so a language switch
 * redraws them from the values they were last drawn with. */
const lines = new Map();

/** Shows `draw()` (a string, or a list of strings and nodes) in element `id`, now and
 * again after each language switch. */
export function say(id, draw) {
  lines.set(id, draw);
  const parts = draw();
  $(id).replaceChildren(...(Array.isArray(parts) ? parts : [parts]));
}

/** Shows `draw` in element `id` while something is under way; the function returned puts
 * back what the line said before (a refused action leaves the page as it was). */
export function sayForNow(id, draw) {
  const before = lines.get(id) ?? (() => '');
  say(id, draw);
  return () => say(id, before);
}

// First of the language listeners: every section's redraw after this one finds its lines
// already in the new language.
onLanguageChange(() => {
  for (const id of lines.keys()) say(id, lines.get(id));
});

/** An error of the page's own, worded by message `key` (shown in the chosen language). */
export function pageError(key, code, vars = {}) {
  return Object.assign(new Error(t(key, vars)), { code, i18n: { key, vars } });
}

/** The kind of an error in words ('[data] …'): the core's codes have names, others show as they are. */
const codeLabel = (code) => (hasMessage(`error.code.${code}`) ? t(`error.code.${code}`) : code);

// ---------------------------------------------------------------- errors where they happen

/** The control the person last acted on (clicked, changed, typed in): what it starts
 * shows its error beside it. Forgotten once every listener of that event has run. */
let actedOn = null;
for (const type of ['click', 'change', 'input', 'keydown', 'toggle']) {
  document.addEventListener(type, (event) => {
    actedOn = event.target;
    setTimeout(() => { if (actedOn === event.target) actedOn = null; });
  }, true);
}

/** The section's message line, placed right after the part of the section that holds
 * `origin` (its row of controls), made on first use. */
function lineBeside(origin) {
  const section = origin?.closest?.('section[id]');
  if (!section) return null;
  const id = `${section.id}-error`;
  const line = $(id) ?? Object.assign(document.createElement('p'), { id, className: 'error section-error' });
  line.setAttribute('role', 'alert');
  let row = origin;
  while (row.parentElement !== section) row = row.parentElement;
  if (line.previousElementSibling !== row) row.after(line);
  return line;
}

/** Brings `el` into view unless all of it is already on screen. */
function reveal(el) {
  const box = el.getBoundingClientRect();
  if (box.top < 0 || box.bottom > window.innerHeight) el.scrollIntoView({ block: 'center' });
}

/** Shows `error` in the page-wide line (the log) and, when an action of a section caused
 * it, on that section's line beside the control, brought into view. */
function showError(error, origin = null) {
  app.error = error ? String(error.message ?? error) : null;
  if (!error) {
    say('error', () => '');
    return;
  }
  // the page's own errors in the chosen language; the core's message as it came
  const message = () => (error.i18n ? t(error.i18n.key, error.i18n.vars) : content(app.error));
  const draw = () => (error.code ? tParts('error.withCode', { code: codeLabel(error.code), message: message() }) : message());
  say('error', draw);
  const line = lineBeside(origin);
  if (line) {
    say(line.id, draw);
    line.dataset.key = error.i18n?.key ?? '';
    reveal(line);
  }
}

/** Clears the sections' message lines whose page message key `which` picks. */
function clearLines(which) {
  for (const line of document.querySelectorAll('.section-error')) {
    if (line.dataset.key && which(line.dataset.key)) {
      say(line.id, () => '');
      line.dataset.key = '';
    }
  }
}

/** Clears the message line of the section `origin` is in. */
function clearBeside(origin) {
  const id = origin?.closest?.('section[id]')?.id;
  if (id && $(`${id}-error`)) say(`${id}-error`, () => '');
}

/** Runs `fn`, an action the person started: its error is shown beside what they acted on
 * (and in the page-wide line); its success clears that section's line. */
export async function guard(fn) {
  const origin = actedOn;
  try {
    showError(null);
    const result = await fn();
    clearBeside(origin);
    return result;
  } catch (error) {
    showError(error, origin);
    return undefined;
  }
}

/** A number field's value: undefined when empty (the option's default), else the number
 * as typed, for the core to check against the option's bounds. */
export function numberField(id) {
  const text = $(id).value.trim();
  return text === '' ? undefined : Number(text);
}

/** A stage's name in words ('pretrain' stays 'pretrain' in English, the names the tests read). */
export const stageName = (stage) => (hasMessage(`stage.${stage}`) ? t(`stage.${stage}`) : stage);

/** ' Skipped 2 lines: …' after a line of stats, the core's reasons as data; nothing when none were. */
export const skippedLines = (skipped) => (skipped?.length
  ? tParts('common.skipped', { count: skipped.length, lines: content(skipped.slice(0, 5).join('; ')) }) : '');

/** Enables what the run's state allows; the stages' buttons are in several sections. */
export function setButtons(state) {
  // While a run is going, the text, tokenizer and model stay as they are.
  for (const id of ['train-tokenizer', 'create-model', 'import', 'use-text', 'file', 'sft-start', 'sft-file',
    'reward-start', 'ppo-start', 'dpo-start', 'kto-start', 'rloo-start', 'grpo-start', 'rank-sample', 'compare']) $(id).disabled = state !== 'idle';
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
