// The page's words in English and in Chinese (Simplified): one flat table per language
// (i18n/en.js, i18n/zh.js), the same keys and {placeholders} in both. Static text in the
// HTML names its message with data-i18n (textContent), data-i18n-placeholder,
// data-i18n-title or data-i18n-aria-label; scripts call t(). Text that is data (corpus,
// tokens, model output, what the person typed, the core's own messages) is never
// translated and goes in as text, in elements marked data-content.
import en from './i18n/en.js';
import zh from './i18n/zh.js';

/** Each language's name in its own language (for the switch, not translated). */
export const LANGUAGES = { en: 'English', zh: '中文' };
const TABLES = { en, zh };
const STORAGE_KEY = 'kiln.language';
/** <html lang> and the locale numbers and dates are written in. */
const LOCALES = { en: 'en-US', zh: 'zh-CN' };
const HTML_LANG = { en: 'en', zh: 'zh-CN' };
const ATTRIBUTES = ['placeholder', 'title', 'aria-label'];

const listeners = new Set();
let current = initialLanguage();

/** ?lang=, else the stored choice, else the browser's language (Chinese or English). */
function initialLanguage() {
  const asked = new URLSearchParams(globalThis.location?.search ?? '').get('lang');
  if (Object.hasOwn(TABLES, asked ?? '')) return asked;
  let stored = null;
  try {
    stored = globalThis.localStorage?.getItem(STORAGE_KEY);
  } catch {
    // storage refused (a sandboxed frame): the browser's language decides
  }
  if (Object.hasOwn(TABLES, stored ?? '')) return stored;
  return /^zh\b/i.test(globalThis.navigator?.language ?? '') ? 'zh' : 'en';
}

/** The message table of a language ('en' or 'zh'). */
export const messages = (lang) => TABLES[lang];

export const language = () => current;

/** The locale for toLocaleString and friends, so numbers and dates match the words. */
export const numberLocale = () => LOCALES[current];

/** A number written the current language's way (1,234). */
export const num = (x) => Number(x).toLocaleString(numberLocale());

export const hasMessage = (key) => Object.hasOwn(TABLES[current], key);

/** The message `key` in the current language with its {placeholders} filled from `vars`.
 * A missing key or variable is shown as ⟦key⟧ and logged, so tests and eyes catch it. */
export function t(key, vars = {}) {
  return tParts(key, vars).map((part) => (typeof part === 'string' ? part : part.textContent)).join('');
}

/** Like t(), as a list of strings and nodes: a variable may be a Node (such as content()
 * makes) or a list of them, which is put in as it is rather than turned into text. */
export function tParts(key, vars = {}) {
  const template = TABLES[current][key];
  if (typeof template !== 'string') {
    console.error(`i18n: no message '${key}' in '${current}'`);
    return [`⟦${key}⟧`];
  }
  const parts = [];
  for (const [i, piece] of template.split(/\{(\w+)\}/).entries()) {
    if (i % 2 === 0) {
      if (piece) parts.push(piece);
    } else if (!Object.hasOwn(vars, piece)) {
      console.error(`i18n: message '${key}' needs {${piece}}`);
      parts.push(`⟦${piece}⟧`);
    } else {
      const value = vars[piece];
      if (Array.isArray(value)) parts.push(...value);
      else parts.push(typeof value === 'object' && value !== null ? value : String(value));
    }
  }
  return parts;
}

/** A span holding data (never translated, never parsed as HTML), marked data-content. */
export function content(text) {
  const span = document.createElement('span');
  span.dataset.content = '';
  span.textContent = text;
  return span;
}

/** Sets the static translations under `root`: data-i18n (text) and data-i18n-<attribute>. */
export function applyTranslations(root = document) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const attribute of ATTRIBUTES) {
    for (const el of root.querySelectorAll(`[data-i18n-${attribute}]`)) {
      el.setAttribute(attribute, t(el.getAttribute(`data-i18n-${attribute}`)));
    }
  }
}

/** Switches the page to `lang`, remembers it in this browser and tells the listeners. */
export function setLanguage(lang) {
  if (!Object.hasOwn(TABLES, lang)) throw new Error(`unknown language ${lang}`);
  current = lang;
  try {
    localStorage.setItem(STORAGE_KEY, lang);
  } catch {
    // not remembered, but the page still switches
  }
  document.documentElement.lang = HTML_LANG[lang];
  applyTranslations();
  for (const fn of listeners) fn(lang);
}

/** Calls `fn(lang)` after every switch, once the static texts are in the new language. */
export function onLanguageChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** Puts the current language on the page and wires a <select> of LANGUAGES to it. */
export function startI18n(select) {
  document.documentElement.lang = HTML_LANG[current];
  applyTranslations();
  if (!select) return;
  select.value = current;
  select.addEventListener('change', () => setLanguage(select.value));
  onLanguageChange((lang) => { select.value = lang; });
}
