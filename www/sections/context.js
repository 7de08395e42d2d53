// What a run was trained on and where it stood, kept beside its autosave in this browser
// (localStorage, by the autosave's id), so that a reload resumes the context and not just
// the weights: the text (its source, its name and a hash of it; the text itself when it is
// small), the stages done (the stage map) and the last line of training stats.
import { app } from '../page.js';

const CONTEXTS_KEY = 'kiln.run-contexts';
const TEXT_PREFIX = 'kiln.run-text.';
/** The largest text kept beside its run (UTF-8 bytes); a larger one is kept by name and hash. */
export const KEEP_TEXT_BYTES = 2 * 2 ** 20;

/** The text the core holds now and the text the page's model was pretrained on, each
 * {text: {source, name, hash, bytes}, body: the text when small, else null}. */
let inUse = null;
let trained = null;
/** Hashes of the texts written to storage by this page (not written again). */
const written = new Set();

/** SHA-256 in hex where the page is a secure context, else a 53-bit hash (cyrb53) of the bytes. */
async function digest(bytes) {
  if (globalThis.crypto?.subtle) {
    const sum = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
    return [...sum].map((b) => b.toString(16).padStart(2, '0')).join('');
  }
  let [h1, h2] = [0xdeadbeef, 0x41c6ce57];
  for (const b of bytes) {
    h1 = Math.imul(h1 ^ b, 2654435761);
    h2 = Math.imul(h2 ^ b, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return `cyrb53-${(4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(16)}`;
}

/** Says which text the core holds now: the built-in stories of `source` ('en', 'zh'), or
 * the person's (`source` 'paste' or 'file') with its `name` and `bytes`. Returns its description. */
export async function textInUse(source, { name = null, bytes = null } = {}) {
  if (bytes == null) {
    inUse = { text: { source, name: null, hash: `builtin-${source}`, bytes: null }, body: null };
  } else {
    const body = bytes.byteLength <= KEEP_TEXT_BYTES ? new TextDecoder().decode(bytes) : null;
    inUse = { text: { source, name, hash: await digest(bytes), bytes: bytes.byteLength }, body };
  }
  app.text = inUse.text;
  return inUse.text;
}

/** The core holds `text` (a saved description) again, its words `body` when they were kept. */
export function textBack(text, body) {
  inUse = { text, body };
  app.text = text;
}

/** The model just made learns from the text in use; an imported model's text is unknown. */
export function modelOnTextInUse(known = true) {
  trained = known ? inUse : null;
  app.modelText = trained?.text ?? null;
}

/** A resumed model was pretrained on `text` (null when its autosave did not say). */
export function modelTrainedOn(text, body) {
  trained = text ? { text, body } : null;
  app.modelText = trained?.text ?? null;
}

function contexts() {
  try {
    const stored = JSON.parse(localStorage.getItem(CONTEXTS_KEY) ?? '{}');
    return stored && typeof stored === 'object' && !Array.isArray(stored) ? stored : {};
  } catch {
    return {};
  }
}

/** Keeps the model's text beside its run when it is small and the browser has room. */
function keepText() {
  const { text, body } = trained ?? {};
  if (body == null) return false;
  if (written.has(text.hash)) return true;
  try {
    localStorage.setItem(TEXT_PREFIX + text.hash, body);
    written.add(text.hash);
    return true;
  } catch {
    return false; // no room: kept by its name and hash only
  }
}

/** Writes the context of autosave `id` (made at `step`): the model's text, the stages
 * done and the last stats of the step, as the page has them now. */
export function saveContext(id, step) {
  const last = app.progress.findLast((p) => !p.event && p.step <= step && p.tokensPerS != null);
  const stats = last && {
    stage: last.stage, step: last.step, steps: last.steps, loss: last.loss, valLoss: last.valLoss,
    tokensPerS: last.tokensPerS, etaS: last.etaS, lr: last.lr, memoryPeakBytes: last.memoryPeakBytes ?? null,
  };
  const all = contexts();
  all[id] = { text: trained?.text ?? null, kept: keepText(), done: { ...app.done }, stageMap: { ...app.stageMap }, stats };
  try {
    localStorage.setItem(CONTEXTS_KEY, JSON.stringify(all));
  } catch {
    // no room: the run resumes as before, without its context
  }
}

/** The context of autosave `id` and its text's words when they were kept: {context, body}
 * (context null for an autosave made elsewhere, by the API alone or before contexts). */
export function loadContext(id) {
  const context = contexts()[id] ?? null;
  const body = context?.kept && context.text ? localStorage.getItem(TEXT_PREFIX + context.text.hash) : null;
  return { context, body };
}

/** Forgets the contexts (and texts) of autosaves that are gone; `ids` are the ones left. */
export function pruneContexts(ids) {
  const all = contexts();
  const left = Object.fromEntries(Object.entries(all).filter(([id]) => ids.includes(id)));
  const hashes = new Set(Object.values(left).map((c) => c?.kept && c.text?.hash));
  try {
    if (Object.keys(left).length !== Object.keys(all).length) localStorage.setItem(CONTEXTS_KEY, JSON.stringify(left));
    for (let i = localStorage.length - 1; i >= 0; i -= 1) {
      const key = localStorage.key(i);
      if (key?.startsWith(TEXT_PREFIX) && !hashes.has(key.slice(TEXT_PREFIX.length))) {
        localStorage.removeItem(key);
        written.delete(key.slice(TEXT_PREFIX.length));
      }
    }
  } catch {
    // storage refused: nothing to tidy
  }
}
