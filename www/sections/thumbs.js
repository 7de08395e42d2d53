// Thumbs up and down: a verdict on one answer, in the chat or on a ranking card (buttons,
// or + and − on a focused card), kept in this browser and exported in TRL's unpaired
// format ({prompt, completion, label}), which KTO learns from beside the rankings. A
// second thumb on the same answer replaces the first; the same thumb again takes it back.
import { t, tParts } from '../i18n.js';
import { $, app, say } from '../page.js';

const THUMBS_KEY = 'kiln.thumbs';

export function loadThumbs() {
  try {
    app.thumbs = JSON.parse(localStorage.getItem(THUMBS_KEY) ?? '[]');
  } catch {
    app.thumbs = [];
  }
  showThumbCount();
}

const same = (a, prompt, completion) => JSON.stringify(a.prompt) === JSON.stringify(prompt) && a.completion[0].content === completion;

/** The thumb given to `completion` after `prompt` (messages ending with the user's turn): true, false, or null. */
export function thumbOf(prompt, completion) {
  return app.thumbs.find((a) => same(a, prompt, completion))?.label ?? null;
}

/** Gives `completion` a thumb up (`label` true) or down; the same thumb again takes it back. */
export function setThumb(prompt, completion, label) {
  const rest = app.thumbs.filter((a) => !same(a, prompt, completion));
  const taken = rest.length !== app.thumbs.length && thumbOf(prompt, completion) === label;
  app.thumbs = taken ? rest : [...rest, { prompt, completion: [{ role: 'assistant', content: completion }], label }];
  localStorage.setItem(THUMBS_KEY, JSON.stringify(app.thumbs));
  showThumbCount();
  return taken ? null : label;
}

/** The thumbs as JSONL lines (TRL's unpaired preference format). */
export const thumbsJsonl = () => app.thumbs.map((a) => JSON.stringify(a)).join('\n') + (app.thumbs.length ? '\n' : '');

function showThumbCount() {
  const up = app.thumbs.filter((a) => a.label).length;
  say('thumbs-count', () => tParts('thumbs.count', { up, down: app.thumbs.length - up }));
  $('thumbs-export').disabled = !app.thumbs.length;
}

/** Two buttons, up and down, for `completion` after `prompt`, showing its thumb. On a
 * ranking card (`inCard`) they are no tab stops: + and − on the focused card press them,
 * and Tab goes from card to card as before. */
export function thumbButtons(prompt, completion, inCard = false) {
  const span = Object.assign(document.createElement('span'), { className: 'thumbs' });
  const draw = (given) => span.querySelectorAll('button').forEach((b) => b.setAttribute('aria-pressed', String(given === (b.dataset.label === 'up'))));
  for (const [label, sign, name] of [['up', '+', 'thumbs.up'], ['down', '−', 'thumbs.down']]) {
    const b = Object.assign(document.createElement('button'), { type: 'button', textContent: sign, className: `thumb-${label}` });
    b.dataset.label = label;
    if (inCard) b.tabIndex = -1;
    b.setAttribute('aria-label', t(name));
    b.addEventListener('click', (event) => {
      event.stopPropagation();
      draw(setThumb(prompt, completion, label === 'up'));
    });
    span.append(b);
  }
  draw(thumbOf(prompt, completion));
  return span;
}

/** + or − on an element holding thumb buttons presses one; whether it was such a key. */
export function thumbKey(event, holder) {
  const label = { '+': 'up', '-': 'down' }[event.key];
  if (!label) return false;
  holder.querySelector(`.thumb-${label}`)?.click();
  return true;
}

export function wireThumbs() {
  loadThumbs();
  $('thumbs-export').addEventListener('click', () => {
    const url = URL.createObjectURL(new Blob([thumbsJsonl()], { type: 'application/jsonl' }));
    Object.assign(document.createElement('a'), { href: url, download: 'kiln-thumbs.jsonl' }).click();
    URL.revokeObjectURL(url);
  });
}
