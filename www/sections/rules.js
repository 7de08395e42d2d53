// A rule as the reward, stated without code: checks an answer can pass (ends with, contains,
// a pattern, a word limit, the data's own answer), each with a weight, and the reward
// model trained on the rankings (its score times the weight). RLOO and GRPO learn
// from it with no ranking; the core checks the rule (and bounds its patterns) when a run
// begins, so this section only builds the JSON the core reads.
import { t, onLanguageChange } from '../i18n.js';
import { $, pageError } from '../page.js';

/** The checks, in the core's names, and the field each takes ('' for none). */
const CHECKS = { endsWith: 'text', contains: 'text', notContains: 'text', matches: 'pattern', maxWords: 'words', equalsReference: '', rewardModel: '' };

/** The rule the page starts with: the built-in task's (exclaimed, and correct). */
const START = [{ check: 'endsWith', text: '!' }, { check: 'equalsReference' }];

function checkRow(given) {
  const li = document.createElement('li');
  const kind = document.createElement('select');
  kind.className = 'rule-check';
  for (const name of Object.keys(CHECKS)) kind.add(new Option(t(`rules.check.${name}`), name));
  kind.value = given.check;
  const value = document.createElement('input');
  value.className = 'rule-value';
  value.value = given.text ?? given.pattern ?? given.words ?? '';
  const weight = Object.assign(document.createElement('input'), { type: 'number', step: 'any', value: String(given.weight ?? 1), className: 'rule-weight' });
  weight.setAttribute('aria-label', t('rules.weight'));
  const remove = Object.assign(document.createElement('button'), { type: 'button', textContent: '×', className: 'rule-remove' });
  remove.setAttribute('aria-label', t('rules.remove'));
  remove.addEventListener('click', () => li.remove());
  const fit = () => {
    const field = CHECKS[kind.value];
    value.hidden = field === '';
    value.type = field === 'words' ? 'number' : 'text';
    value.placeholder = field ? t(`rules.field.${field}`) : '';
    value.setAttribute('aria-label', value.placeholder);
  };
  kind.addEventListener('change', fit);
  fit();
  li.append(kind, value, weight, remove);
  return li;
}

/** The checks as the rows hold them. */
function readChecks() {
  return [...$('rule-checks').children].map((li) => {
    const check = li.querySelector('.rule-check').value;
    const field = CHECKS[check];
    const raw = li.querySelector('.rule-value').value;
    // an empty number field is missing, not 0
    const typed = li.querySelector('.rule-weight').value.trim();
    const weight = typed === '' ? NaN : Number(typed);
    const out = { check };
    if (field === 'words') out.words = raw.trim() === '' ? NaN : Number(raw);
    else if (field) out[field] = raw;
    if (weight !== 1) out.weight = weight;
    return out;
  });
}

/** The rule as the core reads it (JSON), refused here when a row is plainly incomplete. */
export function ruleJson() {
  const checks = readChecks();
  if (!checks.length) throw pageError('rules.none', 'config');
  const empty = checks.findIndex((c) => c.text === '' || c.pattern === '' || (c.words != null && !(Number.isInteger(c.words) && c.words >= 0)));
  if (empty >= 0) throw pageError('rules.incomplete', 'config', { n: empty + 1 });
  if (checks.some((c) => !Number.isFinite(c.weight ?? 1))) throw pageError('rules.weightNumber', 'config');
  return JSON.stringify(checks);
}

export function wireRules() {
  $('rule-checks').replaceChildren(...START.map(checkRow));
  $('rule-add').addEventListener('click', () => $('rule-checks').append(checkRow({ check: 'contains', text: '' })));
  // the rows' words follow the language, their values stay
  onLanguageChange(() => $('rule-checks').replaceChildren(...readChecks().map(checkRow)));
}
