// Runs the kernel check in a module Web Worker and shows the results as they come.
// Everything is written with textContent: nothing from the worker is parsed as HTML.
// The page's words come from i18n.js, in the language chosen on index.html.
import { t, tParts, content, onLanguageChange, startI18n } from './i18n.js';

const status = document.getElementById('status');
const adapter = document.getElementById('adapter');
const tbody = document.querySelector('#results tbody');
const results = { adapter: null, inWorker: null, families: [], checks: [], error: null, done: false };
window.kilnKernelCheck = results;

/** The status line's state and how to word it, kept so a language switch rewords it. */
let shown = { state: 'starting', draw: () => t('kernels.starting') };

function setStatus(state, draw) {
  shown = { state, draw };
  status.dataset.state = state;
  const parts = draw();
  status.replaceChildren(...(Array.isArray(parts) ? parts : [parts]));
}

function cell(row, text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

/** Words a check's verdict (the rows keep `passed`, so a language switch rewords them). */
const verdict = (passed) => t(passed ? 'kernels.ok' : 'kernels.fail');

function showAdapter() {
  if (results.adapter != null) adapter.replaceChildren(...tParts('kernels.adapter', { name: content(results.adapter) }));
}

startI18n(document.getElementById('language'));
setStatus(shown.state, shown.draw);
onLanguageChange(() => {
  setStatus(shown.state, shown.draw);
  showAdapter();
  for (const td of tbody.querySelectorAll('td[data-passed]')) td.textContent = verdict(td.dataset.passed === 'true');
});

const worker = new Worker(new URL('./kernels.worker.js', import.meta.url), { type: 'module' });
worker.onmessage = ({ data }) => {
  if (data.type === 'adapter') {
    results.adapter = data.name;
    results.inWorker = data.inWorker;
    showAdapter();
    setStatus('running', () => t('kernels.checking'));
  } else if (data.type === 'families') {
    results.families = data.families;
  } else if (data.type === 'family') {
    for (const check of data.checks) {
      results.checks.push({ ...check, family: data.family });
      const row = document.createElement('tr');
      if (!check.passed) row.className = 'fail';
      // the kernels' and shapes' names are the suite's, not words
      cell(row, check.kernel).dataset.content = '';
      cell(row, check.case).dataset.content = '';
      cell(row, check.max_rel_err.toExponential(2), 'num');
      cell(row, check.tolerance.toExponential(0), 'num');
      cell(row, verdict(check.passed)).dataset.passed = String(check.passed);
      tbody.appendChild(row);
    }
    const count = results.checks.length;
    setStatus('running', () => t('kernels.checkingSoFar', { count }));
  } else if (data.type === 'done') {
    results.done = true;
    const failed = results.checks.filter((c) => !c.passed).length;
    const total = results.checks.length;
    setStatus(failed ? 'failed' : 'done',
      () => (failed ? t('kernels.failed', { failed, total }) : t('kernels.passed', { total })));
  } else if (data.type === 'error') {
    results.error = data.message;
    results.done = true;
    // the suite's own message, as it came
    setStatus('error', () => tParts('kernels.couldNotRun', { message: content(data.message) }));
  }
};
worker.onerror = (event) => {
  // the browser's message when there is one, else the page's own words
  const message = event.message || null;
  results.error = message ?? t('kernels.workerFailed');
  results.done = true;
  setStatus('error', () => tParts('kernels.couldNotRun', { message: message ? content(message) : t('kernels.workerFailed') }));
};
