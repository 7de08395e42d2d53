// The ranking section: the fine-tuned model answers a prompt several times and the person
// orders the answers (drag, keys 1–6, or Enter to keep the order), skips the prompt or
// calls every answer bad.
import { t, tParts, content, hasMessage, onLanguageChange } from '../i18n.js';
import { $, app, views, say, guard, pageError, skippedLines, numberField } from '../page.js';

// The person's rankings: kept in this browser (localStorage) across reloads, editable,
// exported and imported as JSONL ({prompt, answers, ranks, verdict}, rank 1 best).
const RANKINGS_KEY = 'kiln.rankings';
/** The question being ranked (its answers and the order so far), so a reload loses no work. */
const IN_PROGRESS_KEY = 'kiln.ranking-in-progress';
/** Held-out questions the before/after view answers (the first ones of the split). */
export const BEFORE_AFTER = 4;
const rank = { prompts: [], next: 0, current: null, editing: null, dragged: null, note: null };

export function loadRankings() {
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

export const rankingsJsonl = () => app.rankings.map((r) => JSON.stringify(r)).join('\n') + (app.rankings.length ? '\n' : '');

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

export function showRankings() {
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

/** The sampling fields, as the preference stages' options. */
const samplingOptions = () => ({
  answersPerPrompt: numberField('rank-k'), temperature: numberField('rank-temperature'), topK: numberField('rank-top-k'), topP: numberField('rank-top-p'),
});

async function sampleAnswers() {
  if (!app.model) throw pageError('error.modelBeforeRank', 'config');
  const prompt = await nextPrompt();
  // the preference stages' own options (2 to 6 answers …), checked before sampling
  const s = await app.kiln.checkTraining('ppo', samplingOptions());
  const options = { k: s.answersPerPrompt, temperature: s.temperature, topK: s.topK, topP: s.topP, seed: Date.now() % 1e9 };
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
export function restoreRankingInProgress() {
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

/** Reads a file of prompts to rank: rankings ({prompt, answers, …}) or JSONL of
 * {prompt} or {messages} lines, each becoming the messages up to its last user turn. */
async function readPromptFile() {
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
}

/** The section's inputs: the prompt's source, the cards (keys and drag), the verdicts, the files. */
export function wireRanking() {
  for (const radio of document.querySelectorAll('input[name=rank-source]')) {
    radio.addEventListener('change', () => {
      $('rank-typed-box').hidden = rankSource() !== 'typed';
      if (rankSource() === 'file') $('rank-file').click();
    });
  }
  $('rank-file').addEventListener('change', () => guard(readPromptFile));
  $('rank-sample').addEventListener('click', () => guard(sampleAnswers));
  for (const id of ['rank-k', 'rank-temperature', 'rank-top-k', 'rank-top-p']) {
    $(id).addEventListener('change', () => guard(() => app.kiln?.checkTraining('ppo', samplingOptions())));
  }
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
  onLanguageChange(() => {
    if (app.rankings) showRankList();
    if (rank.current) renderCards();
  });
}
