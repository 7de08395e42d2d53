// The page's views of the inside of the model: the next token's probabilities (click a
// bar to append it), one head's attention as a heat map, a training row with the loss at
// each position, the same text under two tokenizers, and the map of the four stages.
// Each view is a <details> element; its reading (one forward pass in the worker, on the
// backend that trains) is asked for only while it is open, so a closed view costs nothing.
// Model output and tokens are data: written with textContent and marked data-content.
import { t, tParts, content, onLanguageChange, numberLocale } from './i18n.js';
// say(): a line redrawn in the new language after a switch, whatever the row was
import { say } from './page.js';

const $ = (id) => document.getElementById(id);
/** The most tokens the attention map draws (the prompt's last ones): T² cells. */
const MAP_TOKENS = 64;
/** A number from the core, where NaN and infinities arrive as null. */
const finite = (x) => (Number.isFinite(x) ? x : 0);
const percent = (p) => `${(100 * p).toLocaleString(numberLocale(), { maximumFractionDigits: p < 0.001 ? 3 : 1 })}%`;
/** A token as it is shown: whitespace made visible, so a space token is not blank. */
const shown = (text) => text.replace(/ /g, '␣').replace(/\n/g, '↵').replace(/\t/g, '⇥') || '∅';

function tokenSpan(piece, title) {
  const span = document.createElement('span');
  span.textContent = piece.special ? piece.text : shown(piece.text);
  span.dataset.content = '';
  if (piece.special) span.className = 'special';
  span.title = title ?? t('inside.tokenId', { id: piece.id });
  return span;
}

/** Readings running or waiting on a timer: a test waits for none, not for a time. */
let pending = 0;

/** Runs `fn` at most once at a time; a call while one runs makes it run once more after. */
function serial(fn) {
  let running = null;
  let again = false;
  const run = async () => {
    if (running) { again = true; return running; }
    pending += 1;
    running = (async () => {
      do { again = false; await fn(); } while (again);
    })().finally(() => { running = null; pending -= 1; });
    return running;
  };
  return run;
}

/**
 * Wires the views to the page. `app` is the page's state (window.kilnApp): `app.kiln`
 * the Kiln API, `app.model` set once a model exists, `app.tokenizer` once a tokenizer
 * does. `guard(fn)` runs fn and shows its error. Returns {refresh(reason), stageMap()}.
 */
export function setUpViews(app, guard) {
  const inside = app.inside = { next: null, row: null, compare: null, reads: 0 };
  Object.defineProperty(inside, 'pending', { get: () => pending, enumerable: true });
  /** Tokens clicked onto the prompt: kept as ids (typing the text again would re-tokenize
   * it, and byte-level BPE may merge the new token with the one before), after `typed`,
   * the prompt as it was before the first click. They hold while the box still shows
   * `shownAfter`; any other change to the box (typing, the page setting it, an input
   * dropping a newline token) starts over from its text. */
  const hand = { picked: [], typed: '', shownAfter: null };
  const open = (id) => $(id).open;

  // ------------------------------------------------------------ next token + attention

  const readNext = serial(async () => {
    const wantNext = open('next-view');
    const wantAttention = open('attention-view');
    if (!app.model || (!wantNext && !wantAttention)) return;
    const attention = wantAttention ? { layer: Number($('att-layer').value), head: Number($('att-head').value) } : undefined;
    const shownPrompt = $('next-prompt').value;
    if (shownPrompt !== hand.shownAfter) hand.picked = [];
    const [typed, append] = hand.picked.length ? [hand.typed, hand.picked] : [shownPrompt, []];
    const whileTraining = app.training;
    const result = await app.kiln.inspectNext(typed, { temperature: Number($('next-temperature').value), attention, append });
    inside.reads += 1;
    // prompt: what the box showed; whileTraining: read from a model still changing
    inside.next = { ...result, prompt: shownPrompt, whileTraining };
    if (wantNext) drawBars(result);
    if (result.attention) drawAttention(result);
  });

  function drawBars(r) {
    const best = finite(r.top[0]?.p) || 1;
    const bestHot = Math.max(...r.top.map((x) => finite(x.pAtTemperature)), 1e-9);
    $('next-bars').replaceChildren(...r.top.map((x) => {
      const li = document.createElement('li');
      const button = document.createElement('button');
      button.className = 'bar';
      button.dataset.id = String(x.id);
      // a control token (<|eos|>) is not text: typing its name would not make it
      button.title = t(x.special ? 'inside.specialToken' : 'inside.appendToken', { id: x.id });
      button.disabled = x.special;
      const label = tokenSpan(x);
      const track = document.createElement('span');
      track.className = 'track';
      const p1 = document.createElement('span');
      p1.className = 'p1';
      p1.style.width = `${(100 * x.p) / Math.max(best, bestHot)}%`;
      const pt = document.createElement('span');
      pt.className = 'pt';
      pt.style.width = `${(100 * x.pAtTemperature) / Math.max(best, bestHot)}%`;
      track.append(p1, pt);
      const value = document.createElement('span');
      value.className = 'value';
      value.textContent = `${percent(x.p)} → ${percent(x.pAtTemperature)}`;
      button.append(label, track, value);
      button.addEventListener('click', () => guard(async () => {
        const box = $('next-prompt');
        if (box.value !== hand.shownAfter) Object.assign(hand, { picked: [], typed: box.value });
        hand.picked.push(x.id);
        box.value += x.text;
        hand.shownAfter = box.value;
        await readNext();
      }));
      li.append(button);
      return li;
    }));
    const sum = r.probs.reduce((a, b) => a + b, 0);
    const topMass = r.top.reduce((a, x) => a + x.p, 0);
    $('next-stats').textContent = t('inside.nextStats', {
      k: r.top.length, top: percent(topMass), vocab: r.probs.length.toLocaleString(numberLocale()),
      sum: sum.toFixed(4), temperature: Number(r.temperature.toFixed(2)),
    });
  }

  function drawAttention(r) {
    const { weights } = r.attention;
    const n = r.tokens.length;
    const from = Math.max(0, n - MAP_TOKENS); // the map shows the last MAP_TOKENS tokens
    const tokens = r.tokens.slice(from);
    const map = $('att-map');
    map.style.gridTemplateColumns = `auto repeat(${tokens.length}, 1.6rem)`;
    const cells = [document.createElement('span')];
    for (const key of tokens) {
      const head = tokenSpan(key);
      head.classList.add('key');
      cells.push(head);
    }
    for (let q = from; q < n; q += 1) {
      const label = tokenSpan(r.tokens[q], t('inside.attendsHover'));
      label.classList.add('query');
      label.addEventListener('mouseenter', () => focusRow(q));
      cells.push(label);
      for (let s = from; s < n; s += 1) {
        const w = finite(weights[q * n + s]);
        const cell = document.createElement('span');
        cell.className = s > q ? 'cell future' : 'cell';
        cell.style.opacity = s > q ? '' : String(0.08 + 0.92 * w);
        cell.title = t('inside.weight', { query: q, key: s, weight: w.toFixed(3) });
        cell.addEventListener('mouseenter', () => focusRow(q));
        cells.push(cell);
      }
    }
    map.replaceChildren(...cells);
    focusRow(n - 1);
  }

  /** Shades the prompt's tokens by how much token q attends to each. */
  function focusRow(q) {
    const r = inside.next;
    if (!r?.attention) return;
    const n = r.tokens.length;
    inside.focused = q;
    $('att-focus-label').replaceChildren(...tParts('inside.attendsTo', { token: content(shown(r.tokens[q].text)), position: q }));
    $('att-focus').replaceChildren(...r.tokens.map((piece, s) => {
      const w = s <= q ? finite(r.attention.weights[q * n + s]) : 0;
      const span = tokenSpan(piece, t('inside.weight', { query: q, key: s, weight: w.toFixed(3) }));
      span.style.setProperty('--w', String(w));
      if (s === q) span.classList.add('self');
      return span;
    }));
    const from = Math.max(0, n - MAP_TOKENS);
    for (const [i, label] of document.querySelectorAll('#att-map .query').entries()) label.classList.toggle('focused', from + i === q);
  }

  function fillHeads() {
    const c = app.model?.config;
    if (!c) return;
    const options = (n, key) => Array.from({ length: n }, (_, i) => {
      const o = document.createElement('option');
      o.value = String(i);
      o.textContent = t(key, { n: i + 1 });
      return o;
    });
    const [layer, head] = [$('att-layer').value, $('att-head').value];
    $('att-layer').replaceChildren(...options(c.n_layer, 'inside.layerN'));
    $('att-head').replaceChildren(...options(c.n_head, 'inside.headN'));
    if (layer !== '' && Number(layer) < c.n_layer) $('att-layer').value = layer;
    if (head !== '' && Number(head) < c.n_head) $('att-head').value = head;
  }

  // ------------------------------------------------------------ a training row

  const readRow = serial(async () => {
    if (!app.model || !open('row-view')) return;
    const row = await app.kiln.inspectRow();
    inside.reads += 1;
    inside.row = row;
    drawRow(row);
  });

  function drawRow(row) {
    if (!row) {
      say('row-stats', () => t('inside.rowNone'));
      $('row-table').replaceChildren();
      return;
    }
    const shownPositions = Math.min(row.inputs.length, 96);
    const line = (name, cells) => {
      const tr = document.createElement('tr');
      const th = document.createElement('th');
      th.textContent = name;
      tr.append(th, ...cells);
      return tr;
    };
    const pieces = (list) => list.slice(0, shownPositions).map((p) => {
      const td = document.createElement('td');
      td.append(tokenSpan(p));
      return td;
    });
    const worst = Math.max(...row.losses.filter((l) => l != null), 1e-9);
    const losses = row.losses.slice(0, shownPositions).map((l) => {
      const td = document.createElement('td');
      td.dataset.content = '';
      td.className = l == null ? 'masked' : 'loss';
      td.textContent = l == null ? '–' : l.toFixed(2);
      if (l != null) td.style.setProperty('--w', String(l / worst));
      return td;
    });
    $('row-table').replaceChildren(line(t('inside.rowInputs'), pieces(row.inputs)), line(t('inside.rowTargets'), pieces(row.targets)), line(t('inside.rowLoss'), losses));
    const counted = row.losses.filter((l) => l != null);
    const mean = counted.reduce((a, b) => a + b, 0) / Math.max(counted.length, 1);
    say('row-stats', () => t('inside.rowStats', {
      positions: row.inputs.length, counted: counted.length, mean: mean.toFixed(3),
      shown: shownPositions < row.inputs.length ? t('inside.rowFirst', { n: shownPositions }) : '',
    }));
  }

  // ------------------------------------------------------------ two tokenizers

  let failedOptions = null; // a second tokenizer the text cannot train: not tried again per keystroke
  const readCompare = serial(async () => {
    if (!app.tokenizer || !open('compare-view')) return;
    const text = $('tok-sample').value;
    const kind = $('cmp-kind').value;
    const options = { kind, vocabSize: kind === 'bpe' ? Number($('cmp-vocab').value) : undefined };
    if (JSON.stringify(options) === failedOptions) return;
    const other = await app.kiln.tokenizeWith(text, options).catch((error) => {
      failedOptions = JSON.stringify(options);
      throw error;
    });
    failedOptions = null;
    const mine = await app.kiln.tokenize(text);
    inside.compare = { mine, other, mineTokenizer: { ...app.tokenizer } };
    drawCompare(inside.compare);
  });

  function drawCompare({ mine, other, mineTokenizer }) {
    const column = (id, pieces) => $(id).replaceChildren(...pieces.map((p) => tokenSpan(p)));
    column('cmp-mine', mine);
    column('cmp-other', other.pieces);
    const count = (tokens, vocab, kind) => t('inside.compareCount', { tokens, vocab, kind: t(`inside.kind.${kind}`) });
    $('cmp-mine-stats').textContent = count(mine.length, mineTokenizer.vocabSize, mineTokenizer.kind);
    $('cmp-other-stats').textContent = count(other.pieces.length, other.vocabSize, other.kind);
  }

  /** Empties the model's views when there is no model (a new text or tokenizer): what
   * they showed was the old model's. */
  function forgetModel() {
    if (app.model || inside.next === null && inside.row === null) return;
    Object.assign(inside, { next: null, row: null });
    for (const id of ['next-bars', 'next-stats', 'att-map', 'att-focus', 'att-focus-label', 'row-table']) $(id).replaceChildren();
    say('row-stats', () => '');
  }

  // ------------------------------------------------------------ the stage map

  function stageMap() {
    forgetModel();
    const done = app.done ?? {};
    const state = {
      tokenizer: app.tokenizer ? 'done' : 'todo',
      pretrain: done.pretrain ? 'done' : app.model ? 'ready' : 'todo',
      sft: done.sft ? 'done' : 'todo',
      rank: done.align ? 'done' : (app.rankings?.length ?? 0) > 0 ? 'ready' : 'todo',
    };
    if (app.training && app.stage) state[app.stage === 'sft' ? 'sft' : app.stage === 'pretrain' ? 'pretrain' : 'rank'] = 'running';
    for (const [stage, s] of Object.entries(state)) {
      const li = $(`map-${stage}`);
      li.dataset.state = s;
      const detail = stage === 'pretrain' && done.pretrain ? t('map.steps', { n: done.pretrain })
        : stage === 'sft' && done.sft ? t('map.steps', { n: done.sft })
          : stage === 'rank' && app.rankings?.length ? t('map.ranked', { n: app.rankings.length }) : '';
      li.querySelector('.state').textContent = `${t(`map.state.${s}`)}${detail ? ` · ${detail}` : ''}`;
    }
    app.stageMap = state;
  }

  // ------------------------------------------------------------ wiring

  let lastTrainingRead = 0;
  /** Reads the open views again. During training (`reason` 'progress') the training row
   * is read at validations, the rest at logged steps at most once a second, so that an
   * open view costs a training run little. */
  async function refresh(reason, progress) {
    stageMap();
    if (reason === 'model') {
      fillHeads();
      hand.picked = [];
    }
    if (reason === 'progress') {
      if (progress?.valLoss != null) await readRow();
      if (progress?.loss == null || performance.now() - lastTrainingRead < 1000) return;
      lastTrainingRead = performance.now();
    } else {
      await readRow();
    }
    await readNext();
  }

  /** `fn` 120 ms after the last call (one timer per reader). */
  const soon = (fn) => {
    let timer = null;
    return () => {
      if (timer === null) pending += 1;
      clearTimeout(timer);
      timer = setTimeout(() => { timer = null; pending -= 1; guard(fn); }, 120);
    };
  };
  const readNextSoon = soon(readNext);
  $('next-prompt').addEventListener('input', readNextSoon);
  $('next-temperature').addEventListener('input', () => {
    $('next-temperature-value').textContent = $('next-temperature').value;
    readNextSoon();
  });
  for (const id of ['att-layer', 'att-head']) $(id).addEventListener('change', () => guard(readNext));
  for (const id of ['next-view', 'attention-view']) $(id).addEventListener('toggle', () => guard(readNext));
  $('row-view').addEventListener('toggle', () => guard(readRow));
  $('compare-view').addEventListener('toggle', () => guard(readCompare));
  $('tok-sample').addEventListener('input', soon(readCompare));
  $('cmp-vocab').addEventListener('input', () => { failedOptions = null; });
  for (const id of ['cmp-kind', 'cmp-vocab']) $(id).addEventListener('change', () => guard(readCompare));
  onLanguageChange(() => {
    stageMap();
    fillHeads();
    if (inside.next) { drawBars(inside.next); if (inside.next.attention) drawAttention(inside.next); }
    if (inside.row !== null) drawRow(inside.row);
    if (inside.compare) drawCompare(inside.compare);
  });
  stageMap();
  return { refresh, stageMap, readCompare, readNext, readRow };
}
