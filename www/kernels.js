// Runs the kernel check in a module Web Worker and shows the results as they come.
// Everything is written with textContent: nothing from the worker is parsed as HTML.

const status = document.getElementById('status');
const adapter = document.getElementById('adapter');
const tbody = document.querySelector('#results tbody');
const results = { adapter: null, inWorker: null, checks: [], error: null, done: false };
window.kilnKernelCheck = results;

function setStatus(state, text) {
  status.dataset.state = state;
  status.textContent = text;
}

function cell(row, text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
}

const worker = new Worker(new URL('./kernels.worker.js', import.meta.url), { type: 'module' });
worker.onmessage = ({ data }) => {
  if (data.type === 'adapter') {
    results.adapter = data.name;
    results.inWorker = data.inWorker;
    adapter.textContent = `WebGPU adapter: ${data.name}`;
    setStatus('running', 'Checking kernels…');
  } else if (data.type === 'family') {
    for (const check of data.checks) {
      results.checks.push(check);
      const row = document.createElement('tr');
      if (!check.passed) row.className = 'fail';
      cell(row, check.kernel);
      cell(row, check.case);
      cell(row, check.max_rel_err.toExponential(2), 'num');
      cell(row, check.tolerance.toExponential(0), 'num');
      cell(row, check.passed ? 'ok' : 'FAIL');
      tbody.appendChild(row);
    }
    setStatus('running', `Checking kernels… ${results.checks.length} checks so far`);
  } else if (data.type === 'done') {
    results.done = true;
    const failed = results.checks.filter((c) => !c.passed).length;
    setStatus(failed ? 'failed' : 'done',
      failed ? `${failed} of ${results.checks.length} kernel checks failed`
             : `All ${results.checks.length} kernel checks passed on this GPU.`);
  } else if (data.type === 'error') {
    results.error = data.message;
    results.done = true;
    setStatus('error', `The kernel check could not run: ${data.message}`);
  }
};
worker.onerror = (event) => {
  results.error = event.message || 'the worker failed to start';
  results.done = true;
  setStatus('error', `The kernel check could not run: ${results.error}`);
};
