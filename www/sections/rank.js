// The ranking section: the fine-tuned model answers a prompt several times and the person
// orders the answers (drag, keys 1–6, or Enter to keep the order), skips the prompt or
// calls every answer bad.
import { t, tParts, content, hasMessage, onLanguageChange } from '../i18n.js';
import { $, app, views, say, sayForNow, guard, pageError, skippedLines, numberField } from '../page.js';
import { rankSource, nextPrompt, promptUsed, wireRankSource } from './rank_source.js';
import { cardsOf, cardRanks, answerRanks, shownOrder, moveCard, parseOrder, allTied } from './rank_order.js';
import { learnFrom } from './online.js';
import { thumbButtons, thumbKey } from './thumbs.js';

// The person's rankings: kept in this browser (localStorage) across reloads, editable,
// exported and imported as JSONL ({prompt, answers, ranks, verdict}, rank 1 best).
const RANKINGS_KEY = 'kiln.rankings';
/** The question being ranked (its answers and the order so far), so a reload loses no work. */
const IN_PROGRESS_KEY = 'kiln.ranking-in-progress';
export { BEFORE_AFTER } from './rank_source.js';
const rank = { current: null, editing: null, dragged: null, dropped: false, note: null, sampling: false, ticket: 0 };

export function loadRankings() {
  try {
    const stored = JSON.parse(localStorage.getItem(RANKINGS_KEY) ?? '[]');
    return Array.isArray(stored) ? stored : [];
  } catch {
    return [];
  }
}

function saveRankings(list) {
  // stored first: a full storage refuses the ranking and leaves the page's list as stored
  try {
    localStorage.setItem(RANKINGS_KEY, JSON.stringify(list));
  } catch {
    throw pageError('error.rankingsNotSaved', 'storage');
  }
  app.rankings = list;
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
    const count = other
      ? t(ranked === 1 ? 'rank.countWithOtherOne' : 'rank.countWithOther', { ranked, other })
      : t(ranked === 1 ? 'rank.countOne' : 'rank.count', { ranked });
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

/** The sampling fields, as the preference stages' options. */
const samplingOptions = () => ({
  answersPerPrompt: numberField('rank-k'), temperature: numberField('rank-temperature'), topK: numberField('rank-top-k'), topP: numberField('rank-top-p'),
});

/** Says what the ranking section should know now (identical answers, a cold temperature). */
function note(key, vars) {
  say('rank-note', () => (key ? t(key, vars) : ''));
}

/** Says `key` to screen readers (and nothing on screen): what a key press did. */
function announce(key, vars) {
  say('rank-live', () => t(key, vars));
}

/** Warns before sampling that at temperature (near) 0 every answer comes out the same. */
function checkTemperature() {
  const temperature = numberField('rank-temperature');
  note(temperature != null && temperature < 0.1 ? 'rank.coldTemperature' : null);
}

async function sampleAnswers() {
  if (!app.model) throw pageError('error.modelBeforeRank', 'config');
  if (rank.sampling) return;
  rank.sampling = true;
  // an Edit clicked while sampling wins: its ranking is not replaced by these answers
  const ticket = ++rank.ticket;
  const restore = sayForNow('rank-question', () => t('rank.sampling'));
  try {
    // the preference stages' own options (2 to 6 answers …), checked before a prompt is taken
    const s = await app.kiln.checkTraining('ppo', samplingOptions());
    const sampling = { k: s.answersPerPrompt, temperature: s.temperature, topK: s.topK, topP: s.topP };
    const prompt = await nextPrompt(sampling);
    const options = { ...sampling, seed: Date.now() % 1e9 };
    const candidates = await app.kiln.sampleCandidates(prompt, options);
    if (ticket !== rank.ticket) return;
    promptUsed();
    const answers = candidates.map((c) => c.text);
    const cards = cardsOf(answers);
    showCandidates({ prompt, answers, ranks: answerRanks(cards, cards.map((_, k) => k + 1), answers.length) }, null, { focus: true });
    app.rankShown = (app.rankShown ?? 0) + 1;
    if (cards.length === 1) note(s.temperature < 0.1 ? 'rank.allSameCold' : 'rank.allSame', { count: answers.length });
    else if (cards.length < answers.length) note('rank.merged', { answers: answers.length, cards: cards.length });
    else checkTemperature();
  } catch (error) {
    restore();
    throw error;
  } finally {
    rank.sampling = false;
  }
}

/** Shows a prompt's answers as cards in rank order (identical answers as one card);
 * `editing` is the stored index; `focus` puts the keyboard on the order field (unless the
 * person has gone on to another field meanwhile); `changed`: whether the order is theirs. */
function showCandidates(ranking, editing, { focus = false, changed = editing != null } = {}) {
  const cards = cardsOf(ranking.answers);
  rank.current = { ...ranking, cards, cardRanks: cardRanks(cards, ranking.ranks.map(Number)), changed };
  rank.editing = editing;
  say('rank-question', () => content(ranking.prompt.at(-1)?.content ?? ''));
  $('rank-order').value = '';
  renderCards();
  for (const id of ['rank-submit', 'rank-skip', 'rank-bad', 'rank-order']) $(id).disabled = false;
  announce('rank.shown', { count: cards.length });
  const at = document.activeElement;
  const elsewhere = at?.closest?.('input, textarea, select') && at.id !== 'rank-order';
  if (focus && !elsewhere) $('rank-order').focus({ preventScroll: true });
}

function renderCards(focusCard) {
  const c = rank.current;
  c.ranks = answerRanks(c.cards, c.cardRanks, c.answers.length);
  try {
    localStorage.setItem(IN_PROGRESS_KEY, JSON.stringify({ prompt: c.prompt, answers: c.answers, ranks: c.ranks, changed: c.changed, editing: rank.editing }));
  } catch {
    // a full storage: the question being ranked is not kept for a reload (the rankings are)
  }
  const items = shownOrder(c.cardRanks).map((k) => {
    const card = c.cards[k];
    const li = document.createElement('li');
    li.tabIndex = 0;
    li.draggable = true;
    li.dataset.card = String(k);
    const badge = Object.assign(document.createElement('span'), { className: 'rank', textContent: String(c.cardRanks[k]) });
    const number = Object.assign(document.createElement('span'), { className: 'number', textContent: `#${k + 1}` });
    const text = Object.assign(document.createElement('span'), { className: 'text' });
    text.append(card.text ? content(card.text) : t('rank.empty'));
    li.append(badge, number, text, thumbButtons(c.prompt, card.text, true));
    if (card.members.length > 1) li.append(Object.assign(document.createElement('span'), { className: 'times', textContent: `×${card.members.length}` }));
    const label = card.members.length > 1 ? 'rank.cardLabelTimes' : 'rank.cardLabel';
    li.setAttribute('aria-label', t(label, { rank: c.cardRanks[k], number: k + 1, times: card.members.length, answer: card.text }));
    return li;
  });
  $('rank-cards').replaceChildren(...items);
  if (focusCard != null) $('rank-cards').querySelector(`[data-card="${focusCard}"]`)?.focus();
}

/** Ranks from the cards' order after a drag: 1, 2, 3 … by position. */
function ranksFromOrder() {
  const c = rank.current;
  [...$('rank-cards').children].forEach((li, position) => { c.cardRanks[Number(li.dataset.card)] = position + 1; });
  c.changed = true;
  renderCards();
}

/** A digit on a focused card moves it to that place; the focus stays on it. */
function onCardKey(event) {
  const li = event.target.closest('li');
  if (!li || !rank.current) return;
  const cards = [...$('rank-cards').children];
  const at = cards.indexOf(li);
  const card = Number(li.dataset.card);
  if (/^[1-6]$/.test(event.key) && Number(event.key) <= cards.length) {
    rank.current.cardRanks = moveCard(rank.current.cardRanks, card, Number(event.key));
    rank.current.changed = true;
    renderCards(card);
    announce('rank.moved', { number: card + 1, place: Number(event.key) });
  } else if (event.key === 'ArrowRight' || event.key === 'ArrowDown') {
    cards[Math.min(at + 1, cards.length - 1)].focus();
  } else if (event.key === 'ArrowLeft' || event.key === 'ArrowUp') {
    cards[Math.max(at - 1, 0)].focus();
  } else if (event.key === 'Enter') {
    guard(() => submitRanking('ranked'));
  } else if (!thumbKey(event, li)) {
    return;
  }
  event.preventDefault();
}

/** Enter in the order field: the typed order (cards' numbers, best first) is the ranking;
 * an empty field submits the order shown. */
function onOrderKey(event) {
  if (event.key !== 'Enter' || !rank.current) return;
  event.preventDefault();
  guard(() => {
    const typed = $('rank-order').value.trim();
    if (typed) {
      const read = parseOrder(typed, rank.current.cards.length);
      if (read.error) throw pageError(read.error[0], 'data', read.error[1]);
      rank.current.cardRanks = read.ranks;
      rank.current.changed = true;
      renderCards();
    }
    return submitRanking('ranked');
  });
}

/** S skips, B marks every answer bad, ? shows the keys: anywhere in the section but a text field. */
function onSectionKey(event) {
  const field = event.target.closest?.('input, textarea, select');
  if (field && field.id !== 'rank-order') return;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key.toLowerCase();
  if (key === '?') {
    $('rank-keys').hidden = !$('rank-keys').hidden;
  } else if ((key === 's' || key === 'b') && rank.current) {
    guard(() => submitRanking(key === 's' ? 'skipped' : 'all_bad'));
  } else {
    return;
  }
  event.preventDefault();
}

function submitRanking(verdict) {
  const c = rank.current;
  if (!c) return;
  if (verdict === 'ranked' && allTied(c.cardRanks)) {
    throw pageError(c.cards.length === 1 ? 'rank.nothingToRank' : 'rank.allTied', 'data');
  }
  if (verdict === 'ranked' && !c.changed
      && !window.confirm(t('rank.confirmUnchanged'))) return;
  // ranks as given (ties stay ties; copies of one answer share its card's rank)
  const entry = { prompt: c.prompt, answers: c.answers, ranks: c.ranks, verdict };
  const list = [...app.rankings];
  const edited = rank.editing != null;
  if (edited) list[rank.editing] = entry;
  else list.push(entry);
  saveRankings(list);
  if (!edited) learnFrom(entry);
  localStorage.removeItem(IN_PROGRESS_KEY);
  rank.current = null;
  rank.editing = null;
  $('rank-cards').replaceChildren();
  say('rank-question', () => '');
  note(null);
  for (const id of ['rank-submit', 'rank-skip', 'rank-bad', 'rank-order']) $(id).disabled = true;
  announce(`rank.submitted.${verdict}`, { count: app.rankings.filter((r) => r.verdict === 'ranked').length });
  // the next prompt comes by itself from a list of prompts (its error shown as this
  // action's); a typed one waits for the person
  if (!edited && rankSource() !== 'typed' && app.model) {
    $('rank-sample').focus({ preventScroll: true });
    return sampleAnswers();
  } else {
    $(rankSource() === 'typed' ? 'rank-typed' : 'rank-sample').focus({ preventScroll: true });
  }
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
  showCandidates({ prompt: saved.prompt, answers: saved.answers, ranks: saved.ranks.map(Number) }, editing, { changed: Boolean(saved.changed) });
}

function editRanking(i) {
  const r = app.rankings[i];
  rank.ticket += 1;
  showCandidates({ prompt: r.prompt, answers: r.answers, ranks: r.ranks.length ? r.ranks : r.answers.map((_, j) => j + 1) }, i, { focus: true });
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
  addRankings(await app.kiln.checkRankings(file));
}

/** Rankings read by the core (`checkRankings`) added after the page's own, and said. */
export function addRankings(read) {
  saveRankings([...app.rankings, ...read.rankings]);
  showRankCount(() => [...tParts('rank.imported', { count: read.rankings.length, pairs: read.pairs }), ...[skippedLines(read.skipped)].flat()]);
}

/** The section's inputs: the prompt's source, the cards (keys and drag), the verdicts, the files. */
export function wireRanking() {
  wireRankSource();
  $('rank-sample').addEventListener('click', () => guard(sampleAnswers));
  for (const id of ['rank-k', 'rank-temperature', 'rank-top-k', 'rank-top-p']) {
    $(id).addEventListener('change', () => guard(async () => {
      await app.kiln?.checkTraining('ppo', samplingOptions());
      checkTemperature();
    }));
  }
  $('rank-submit').addEventListener('click', () => guard(() => submitRanking('ranked')));
  $('rank-skip').addEventListener('click', () => guard(() => submitRanking('skipped')));
  $('rank-bad').addEventListener('click', () => guard(() => submitRanking('all_bad')));
  $('rank-cards').addEventListener('keydown', onCardKey);
  $('rank-order').addEventListener('keydown', onOrderKey);
  $('rank-section').addEventListener('keydown', onSectionKey);
  $('rank-cards').addEventListener('dragstart', (event) => {
    rank.dragged = event.target.closest('li');
    rank.dropped = false;
    rank.dragged?.classList.add('dragging');
  });
  $('rank-cards').addEventListener('dragend', () => {
    rank.dragged?.classList.remove('dragging');
    rank.dragged = null;
    // a drag cancelled (Esc, or dropped outside) puts the cards back in their ranks' order
    if (!rank.dropped && rank.current) renderCards();
  });
  $('rank-cards').addEventListener('dragover', (event) => {
    event.preventDefault();
    const over = event.target.closest('li');
    if (!rank.dragged || !over || over === rank.dragged) return;
    const after = event.clientX > over.getBoundingClientRect().left + over.offsetWidth / 2;
    over.parentNode.insertBefore(rank.dragged, after ? over.nextSibling : over);
  });
  $('rank-cards').addEventListener('drop', (event) => {
    event.preventDefault();
    if (!rank.dragged || !rank.current) return;
    rank.dropped = true;
    ranksFromOrder();
  });
  $('rank-export').addEventListener('click', () => download('kiln-rankings.jsonl', rankingsJsonl()));
  $('pairs-export').addEventListener('click', () => guard(async () => download('kiln-pairs.jsonl', await app.kiln.rankingPairs(rankingsJsonl()))));
  $('rank-import').addEventListener('change', () => guard(() => importRankings($('rank-import').files[0])));
  onLanguageChange(() => {
    if (app.rankings) showRankList();
    if (rank.current) renderCards();
  });
}
