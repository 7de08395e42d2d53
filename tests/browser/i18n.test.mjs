// The page's two languages (www/i18n/en.js, zh.js) against each other and against the
// page: the same keys and {placeholders}, Chinese that is not English left in place, every
// key the HTML and the scripts name present, and no key nobody uses. No browser: a second.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import en from '../../www/i18n/en.js';
import zh from '../../www/i18n/zh.js';
import { englishWords } from './untranslated.mjs';

const WWW = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'www');
const read = (name) => fs.readFileSync(path.join(WWW, name), 'utf8');
const PAGES = ['index.html', 'kernels.html'];
/** The page's scripts: app.js starts the sections in sections/, which share page.js. */
const SECTIONS = fs.readdirSync(path.join(WWW, 'sections')).filter((name) => name.endsWith('.js')).map((name) => `sections/${name}`);
const SCRIPTS = ['app.js', 'page.js', ...SECTIONS, 'kernels.js', 'views.js'];

/** Keys whose Chinese may be the English: symbols and formats with no words in them. */
const SAME_IN_BOTH = new Set(['sft.removeRow', 'train.event']);
/** Keys the scripts build from data (`error.code.${code}` …), by prefix. */
const DYNAMIC = ['error.code.', 'stage.', 'align.metric.', 'rules.check.', 'rules.field.', 'rank.verdict.', 'rank.submitted.', 'inside.kind.', 'map.state.'];

const placeholders = (text) => [...text.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

test('English and Chinese have the same keys, each with the same placeholders', () => {
  assert.deepEqual(Object.keys(zh).sort(), Object.keys(en).sort());
  for (const [key, text] of Object.entries(en)) {
    assert.equal(typeof text, 'string', key);
    assert.equal(typeof zh[key], 'string', key);
    assert.deepEqual(placeholders(zh[key]), placeholders(text), `${key}: the same {placeholders}`);
  }
});

test('every Chinese message is translated (a short allowlist aside)', () => {
  const same = Object.keys(en).filter((key) => zh[key] === en[key] && !SAME_IN_BOTH.has(key));
  assert.deepEqual(same, [], 'Chinese identical to English');
  // ordinary English words left in a Chinese message (technical names are allowed)
  const english = Object.entries(zh).filter(([, text]) => englishWords(text).length).map(([key, text]) => `${key}: ${text}`);
  assert.deepEqual(english, [], 'English words in Chinese messages');
});

/** The keys the HTML names in data-i18n and data-i18n-<attribute>. */
function htmlKeys(html) {
  return [...html.matchAll(/data-i18n(?:-[a-z-]+)?="([^"]+)"/g)].map((m) => m[1]);
}

/** The key-shaped string literals of a script ('section.name'), for sections the tables have. */
function scriptKeys(source) {
  const sections = new Set(Object.keys(en).map((key) => key.split('.')[0]));
  return [...source.matchAll(/'([a-z]+(?:\.[A-Za-z_]+)+)'/g)].map((m) => m[1]).filter((s) => sections.has(s.split('.')[0]));
}

test('every key the pages and scripts name is in the English table', () => {
  for (const name of PAGES) {
    const missing = htmlKeys(read(name)).filter((key) => !Object.hasOwn(en, key));
    assert.deepEqual(missing, [], `${name} names keys en.js lacks`);
  }
  for (const name of SCRIPTS) {
    const missing = scriptKeys(read(name)).filter((key) => !Object.hasOwn(en, key));
    assert.deepEqual(missing, [], `${name} names keys en.js lacks`);
  }
});

test("the HTML's English text is the English table's", () => {
  // <tag data-i18n="key">text</tag> with plain text inside: the text shown before the script runs
  for (const name of PAGES) {
    const html = read(name);
    for (const [, key, text] of html.matchAll(/data-i18n="([^"]+)"[^>]*>([^<]*)</g)) {
      assert.equal(text.replace(/&#39;/g, "'"), en[key], `${name}: ${key}`);
    }
    for (const [, attribute, value, key] of html.matchAll(/ (placeholder|title|aria-label)="([^"]*)"[^>]*?data-i18n-\1="([^"]+)"/g)) {
      assert.equal(value, en[key], `${name}: ${attribute} of ${key}`);
    }
  }
});

test('no key is dead: each is named by a page or a script, or built from a listed prefix', () => {
  const used = new Set([...PAGES.flatMap((name) => htmlKeys(read(name))), ...SCRIPTS.flatMap((name) => scriptKeys(read(name)))]);
  const dead = Object.keys(en).filter((key) => !used.has(key) && !DYNAMIC.some((prefix) => key.startsWith(prefix)));
  assert.deepEqual(dead, []);
});

test('the page never parses HTML', () => {
  for (const name of [...SCRIPTS, 'i18n.js']) assert.doesNotMatch(read(name), /innerHTML|outerHTML|insertAdjacentHTML/, name);
});
