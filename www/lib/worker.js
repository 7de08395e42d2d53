// Kiln's Web Worker: owns the wasm core (and through it the GPU device), so training
// never blocks the page. Messages in: {id, method, args}; out: {id, result} | {id, error}
// | {id, progress} | {id, token}. Calls into wasm run one at a time; a training run is a
// loop of single steps, so pause, resume, stop and other calls are handled between steps.
import { loadWasm } from './wasm.js';
import { describeAdapter } from './adapter.js';
import * as autosave from './autosave.js';

/** Kiln's core: the WebAssembly build this browser takes (wasm.js), loaded by the first
 * call (init, whose `simd` option may force one); `simd` names it for the helpers. */
let wasm = null;
let simd = null;
let loading = null;
const load = (choice) => (loading ??= loadWasm(choice).then((loaded) => ({ wasm, simd } = loaded)));
const CALLS = new Set(['useDefaultCorpus', 'useCorpus', 'trainTokenizer', 'tokenize', 'estimateModel',
  'tokenizeWith', 'inspectNext', 'inspectRow',
  'createModel', 'exportModel', 'exportZip', 'importZip', 'importFiles', 'isModelFile', 'importAdapter',
  'exportAdapter', 'exportGguf', 'defaults', 'currentStage', 'renderChat',
  'instructionExamples', 'sampleCandidates', 'answers', 'rankingPairs', 'checkRankings', 'checkFileSize', 'injectFault',
  'checkTraining', 'heldOut', 'answerMatches', 'rankOnline', 'undoOnline', 'agreement', 'orderSpreads']);

let chain = Promise.resolve();
/** Runs `fn` after every earlier wasm call has finished. */
function exclusive(fn) {
  const result = chain.then(fn);
  chain = result.catch(() => {});
  return result;
}

const control = { paused: false, stopped: false, generating: false, stopGeneration: false, wake: [] };
const wake = () => control.wake.splice(0).forEach((resolve) => resolve());
const waitForWake = () => new Promise((resolve) => control.wake.push(resolve));
// Lets queued messages (pause, stop, other calls) in: wasm promises on the CPU backend
// resolve as microtasks and would otherwise keep the worker's event loop busy.
const yieldToEvents = () => new Promise((resolve) => setTimeout(resolve, 0));

/** Workers sharing each CPU training step (set by init), and the helpers beyond this one,
 * started at the first shared step (share.worker.js). */
let threads = 1;
const helpers = [];
let nextAsk = 1;

function startHelper() {
  const worker = new Worker(new URL('./share.worker.js', import.meta.url), { type: 'module' });
  const pending = new Map();
  const failAll = (message) => { pending.forEach(({ reject }) => reject(new Error(message))); pending.clear(); };
  worker.onmessage = ({ data }) => {
    const call = pending.get(data.id);
    pending.delete(data.id);
    if (data.error != null) call?.reject(new Error(data.error));
    else call?.resolve(data.result);
  };
  worker.onerror = (e) => { e.preventDefault(); failAll(`a helper worker failed: ${e.message ?? 'it did not start'}`); };
  const ask = (message) => new Promise((resolve, reject) => {
    const id = nextAsk++;
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, simd, ...message });
  });
  return { worker, ask };
}

/** One training step, shared with the helpers when the core can (CPU backend, a
 * pretraining or fine-tuning stage): they compute their rows' gradients while this worker
 * computes its own, and the core adds them in helper order. Should a helper fail, the
 * step is taken here alone and later steps stay on this worker. */
async function step() {
  const work = threads > 1 ? await wasm.shareStep(threads) : null;
  if (work === null) return wasm.trainStep();
  while (helpers.length < work.shares.length) helpers.push(startHelper());
  const asked = work.shares.map((shares, i) => helpers[i].ask({ config: work.config, params: work.params, shares }));
  await wasm.localShare();
  let results;
  try {
    results = await Promise.all(asked);
  } catch (error) {
    console.warn(`Kiln: training on one thread from now on: ${error.message}`);
    threads = 1;
    helpers.splice(0).forEach(({ worker }) => worker.terminate());
    return wasm.trainStep();  // the core drops the half-shared step and takes a whole one
  }
  return wasm.trainStep(results);
}

/** The autosave this session writes: a new one for each model made or imported, the
 * restored one's after a restore. Saves run one after another, beside the training. */
let runId = null;
let saving = Promise.resolve();
const newRun = () => { runId = `run-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`; };

/** Snapshots the session (between steps) and stores it in the background; the page hears
 * of it as {id, autosave: meta} or {id, autosaveError: {message, code, full}}. */
async function autosaveNow(id, progress) {
  if (!runId) newRun();
  const zip = await exclusive(() => wasm.snapshot());
  if (!zip) return;
  const meta = {
    stage: progress?.stage ?? (await exclusive(() => wasm.currentStage())),
    step: progress?.step ?? 0,
    steps: progress?.steps ?? null,
    loss: progress?.valLoss ?? progress?.loss ?? null,
  };
  const key = runId;
  saving = saving.then(() => autosave.save(key, zip, meta))
    .then(() => postMessage({ id, autosave: { ...meta, id: key, bytes: zip.byteLength } }))
    .catch((error) => postMessage({ id, autosaveError: { message: error.message, code: 'storage', full: !!error.full } }));
  return saving;
}

/** Trains a stage step by step. A stage other than the current one, new `data`, or
 * `restart` begins it afresh on the model as it is (its info goes out as {id, stage});
 * otherwise the current stage continues, `steps` changing its length. */
async function train(id, { stage = 'pretrain', data, lang, restart = false, steps, ...training } = {}) {
  const current = await exclusive(() => wasm.currentStage());
  if (restart || data != null || current !== stage) {
    const options = steps != null ? { ...training, steps } : training;
    const info = await exclusive(() => wasm.beginStage(stage, data ?? undefined, lang ?? undefined, options));
    postMessage({ id, stage: info });
    autosaveNow(id, { stage, step: 0 });
  } else if (steps != null) {
    await exclusive(() => wasm.setSteps(steps));
  }
  control.paused = false;
  control.stopped = false;
  let last = null;
  for (;;) {
    while ((control.paused || control.generating) && !control.stopped) await waitForWake();
    if (control.stopped) {
      if (last) await autosaveNow(id, last);
      return { ...last, stopped: true };
    }
    const progress = await exclusive(step);
    if (progress === null) {
      if (last) await autosaveNow(id, last);
      return last;
    }
    last = progress;
    postMessage({ id, progress });
    // at every save point (a validation; a PPO round's end): the state a resume continues
    if (progress.savePoint) autosaveNow(id, progress);
    await yieldToEvents();
  }
}

/** Streams a generation begun by `start` (text continuation or a chat answer). */
async function generate(id, start) {
  control.generating = true;
  control.stopGeneration = false;
  try {
    await exclusive(start);
    for (;;) {
      if (control.stopGeneration) return false;
      const piece = await exclusive(() => wasm.generateNext());
      if (piece === null) return true;
      if (piece) postMessage({ id, token: piece });
      await yieldToEvents();
    }
  } finally {
    control.generating = false;
    wake();
  }
}

function transferables(value) {
  if (value instanceof Uint8Array) return [value.buffer];
  if (value && typeof value === 'object') {
    return Object.values(value).filter((v) => v instanceof Uint8Array).map((v) => v.buffer);
  }
  return [];
}

onmessage = async ({ data }) => {
  const { id, method, args = [] } = data;
  const reply = (result) => postMessage({ id, result }, transferables(result));
  switch (method) {
    case 'pause': control.paused = true; return reply(true);
    case 'resume': control.paused = false; wake(); return reply(true);
    case 'stop': control.stopped = true; wake(); return reply(true);
    case 'stopGeneration': control.stopGeneration = true; return reply(true);
    default:
  }
  try {
    await load(method === 'init' ? args[1]?.simd : undefined);
    let result;
    if (method === 'train') result = await train(id, ...args);
    else if (method === 'generate') result = await generate(id, () => wasm.generateStart(String(args[0]), args[1] ?? {}));
    else if (method === 'chat') result = await generate(id, () => wasm.chatStart(args[0], args[1] ?? {}));
    else if (method === 'init') {
      const adapter = await describeAdapter();
      const [backend = 'auto', options = {}] = args;
      result = await exclusive(() => wasm.init(String(backend), adapter ?? undefined, options.threads ?? undefined, navigator.hardwareConcurrency || 1));
      threads = result.threads;
      helpers.splice(0).forEach(({ worker }) => worker.terminate());
      // compile the GPU kernels now, while the person reads the page (not awaited: the
      // next call queues behind it)
      exclusive(() => wasm.warmUp()).catch((e) => console.warn(`Kiln: warming up WebGPU failed: ${e.message}`));
    }
    else if (method === 'listAutosaves') result = await autosave.list();
    else if (method === 'deleteAutosave') result = await autosave.remove(String(args[0]));
    else if (method === 'restoreAutosave') {
      await saving;
      const zip = await autosave.load(String(args[0]));
      result = await exclusive(() => wasm.restore(zip));
      runId = String(args[0]);
    }
    else if (CALLS.has(method)) {
      result = await exclusive(() => wasm[method](...args));
      if (method === 'createModel' || method === 'importZip' || method === 'importFiles') newRun();
      // an update learnt while ranking, or one undone, is kept as a run's step is; the
      // reply waits for the save, so an update the page shows survives a reload
      if ((method === 'rankOnline' || method === 'undoOnline') && result) await autosaveNow(id, null);
    }
    else throw new Error(`unknown method ${method}`);
    reply(result);
  } catch (error) {
    const code = error?.name && error.name !== 'Error' ? error.name : 'error';
    postMessage({ id, error: { code, message: String(error?.message ?? error) } });
  }
};
