// Where the prompts to rank come from: the built-in held-out questions, the person's file
// of prompts (kept with its place across a reload), or a prompt they type.
import { t } from '../i18n.js';
import { $, app, say, guard, pageError } from '../page.js';

/** Held-out questions the before/after view answers (the first ones of the split). */
export const BEFORE_AFTER = 4;
/** Where the prompts come from ({ source, name, prompts, next }), so a reload keeps the
 * person's file of prompts and the place in it. */
const SOURCE_KEY = 'kiln.rank-source';
/** A prompt file kept for a reload only up to this size (localStorage holds a few MB). */
const KEEP_PROMPTS_CHARS = 2_000_000;
/** The file's prompts and the built-in ones, each with its place (the next to ask). */
const file = { name: null, prompts: [], next: 0 };
const builtin = { prompts: [], next: 0 };
/** With "least sure first": how many of the next prompts are weighed against each other. */
const DOUBT_WINDOW = 4;

export const rankSource = () => document.querySelector('input[name=rank-source]:checked').value;

/** With "least sure first" ticked, brings forward the one of the next DOUBT_WINDOW prompts
 * whose answers the model can least tell apart (the smallest spread of their likelihoods,
 * sampled as `sampling` says), once per place in the list. */
async function leastSureFirst(from, sampling) {
  if (!$('rank-doubt').checked || from.weighed === from.next) return;
  const n = Math.min(DOUBT_WINDOW, from.prompts.length);
  const at = (i) => (from.next + i) % from.prompts.length;
  const window = Array.from({ length: n }, (_, i) => from.prompts[at(i)]);
  const spreads = await app.kiln.orderSpreads(window, sampling);
  const pick = spreads.indexOf(Math.min(...spreads));
  [from.prompts[at(0)], from.prompts[at(pick)]] = [from.prompts[at(pick)], from.prompts[at(0)]];
  from.weighed = from.next;
  app.doubt = { window, spreads, pick };
}

/** The next prompt to rank, as messages ending with the user's turn (the same one until
 * promptUsed); `sampling` ({k, temperature, topK, topP}) for "least sure first". */
export async function nextPrompt(sampling) {
  const source = rankSource();
  if (source === 'typed') {
    const text = $('rank-typed').value.trim();
    if (!text) throw pageError('error.typePrompt', 'data');
    return [{ role: 'user', content: text }];
  }
  if (source === 'file' && !file.prompts.length) throw pageError('error.openPrompts', 'data');
  if (source === 'builtin' && !builtin.prompts.length) {
    // held-out questions the fine-tuning never showed, past the first few that the
    // before/after view answers
    const convs = await app.kiln.instructionExamples('en', 'heldout', 300);
    builtin.prompts = convs.slice(BEFORE_AFTER).map((c) => c.slice(0, c.findLastIndex((m) => m.role === 'user') + 1));
  }
  const from = source === 'file' ? file : builtin;
  await leastSureFirst(from, sampling);
  return from.prompts[from.next % from.prompts.length];
}

/** The prompt nextPrompt gave has been answered: the next call gives the one after it. */
export function promptUsed() {
  const source = rankSource();
  if (source === 'typed') return;
  (source === 'file' ? file : builtin).next += 1;
  keepSource();
}

/** Keeps the prompts' source, the places, and the file's prompts when not too large, for a reload. */
function keepSource() {
  const places = { source: rankSource(), next: builtin.next, name: file.name, fileNext: file.next };
  let kept = JSON.stringify({ ...places, prompts: file.prompts });
  if (kept.length > KEEP_PROMPTS_CHARS) kept = JSON.stringify(places);
  try {
    localStorage.setItem(SOURCE_KEY, kept);
  } catch {
    // no room: the source is chosen again after a reload
  }
}

/** Puts back the prompts' source as it was before the reload (a file's prompts, the places). */
export function restoreRankSource() {
  let kept = null;
  try {
    kept = JSON.parse(localStorage.getItem(SOURCE_KEY) ?? 'null');
  } catch {
    return;
  }
  const radio = document.querySelector(`input[name=rank-source][value="${kept?.source}"]`);
  if (!radio) return;
  radio.checked = true;
  showSourceControls();
  if (Number.isInteger(kept.next)) builtin.next = kept.next;
  if (typeof kept.name !== 'string') return;
  file.name = kept.name;
  file.prompts = Array.isArray(kept.prompts) ? kept.prompts.filter((p) => Array.isArray(p) && p.length) : [];
  file.next = Number.isInteger(kept.fileNext) ? kept.fileNext : 0;
  showFileName();
}

/** The prompt file's name and count beside its button, or what to do when there is none. */
function showFileName() {
  const { name } = file;
  const count = file.prompts.length;
  say('rank-file-name', () => (count ? t('rank.promptsRead', { name, count }) : t(name ? 'rank.fileAgain' : 'rank.noFile', { name })));
}

/** Shows the typed prompt's box or the file's button for the chosen source. */
function showSourceControls() {
  $('rank-typed-box').hidden = rankSource() !== 'typed';
  $('rank-file-box').hidden = rankSource() !== 'file';
}

/** Reads a file of prompts to rank: rankings ({prompt, answers, …}) or JSONL of
 * {prompt} or {messages} lines, each becoming the messages up to its last user turn. */
async function readPromptFile() {
  const chosen = $('rank-file').files[0];
  if (!chosen) {
    showFileName();
    return;
  }
  const read = await app.kiln.checkRankings(chosen).catch(() => null);
  let prompts;
  if (read) prompts = read.rankings.map((r) => r.prompt);
  else {
    const text = await chosen.text();
    prompts = text.split('\n').filter((l) => l.trim()).map((l, i) => {
      let v;
      try { v = JSON.parse(l); } catch { throw pageError('error.lineNotJson', 'data', { line: i + 1 }); }
      if (typeof v.prompt === 'string') return [{ role: 'user', content: v.prompt }];
      if (Array.isArray(v.messages)) return v.messages.slice(0, v.messages.findLastIndex((m) => m.role === 'user') + 1);
      throw pageError('error.lineNoPrompt', 'data', { line: i + 1 });
    });
  }
  if (!prompts.length) throw pageError('error.noPrompts', 'data', { name: chosen.name });
  Object.assign(file, { name: chosen.name, prompts, next: 0 });
  keepSource();
  showFileName();
}

/** The source's radios, the file's button (a cancelled chooser leaves it to open again). */
export function wireRankSource() {
  for (const radio of document.querySelectorAll('input[name=rank-source]')) {
    radio.addEventListener('change', () => {
      showSourceControls();
      keepSource();
      if (rankSource() === 'file' && !file.prompts.length) $('rank-file').click();
    });
  }
  $('rank-file-choose').addEventListener('click', () => $('rank-file').click());
  $('rank-file').addEventListener('change', () => guard(readPromptFile));
  $('rank-file').addEventListener('cancel', showFileName);
}
