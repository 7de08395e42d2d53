// kiln-llm: train tiny GPT-style language models in the browser, on WebGPU.
//
//   const kiln = await Kiln.create({ backend: 'auto' });
//   await kiln.trainTokenizer(text, { vocabSize: 512 });
//   await kiln.createModel({ preset: 'tiny' });
//   await kiln.pretrain({ steps: 500, onProgress: (p) => console.log(p.step, p.loss) });
//   for await (const piece of kiln.generate('Once upon a time', { maxTokens: 50 })) out += piece;
//   const files = await kiln.exportModel();
//
// Everything runs in a dedicated module Web Worker (worker.js beside this file), so the
// page stays responsive; nothing is sent anywhere.

/** An error from Kiln: `code` says what kind (data, tokenizer, config, gpu, checkpoint,
 * diverged, busy, cancelled …), `message` what happened and what to do. */
export class KilnError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'KilnError';
    this.code = code;
  }
}

async function bytesOf(input) {
  if (input instanceof Uint8Array) return input;
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  if (typeof Blob !== 'undefined' && input instanceof Blob) return new Uint8Array(await input.arrayBuffer());
  if (typeof input === 'string') return new TextEncoder().encode(input);
  throw new KilnError('data', 'expected text, bytes, a Blob or a File');
}

export class Kiln {
  #worker;
  #pending = new Map();
  #nextId = 1;
  #training = false;
  /** {kind: 'gpu' | 'cpu', adapter, reason, maxBufferBytes} */
  backend = null;

  /** Starts Kiln's worker and picks a backend: 'auto' (WebGPU when available, else the
   * CPU in WebAssembly — `backend.reason` says why), 'gpu' or 'cpu'. */
  static async create({ backend = 'auto', workerUrl } = {}) {
    const worker = new Worker(workerUrl ?? new URL('./worker.js', import.meta.url), { type: 'module' });
    const kiln = new Kiln(worker);
    kiln.backend = await kiln.#call('init', [backend]);
    return kiln;
  }

  constructor(worker) {
    this.#worker = worker;
    worker.onmessage = ({ data }) => {
      const call = this.#pending.get(data.id);
      if (!call) return;
      if ('progress' in data) call.onProgress?.(data.progress);
      else if ('token' in data) call.onToken?.(data.token);
      else {
        this.#pending.delete(data.id);
        if (data.error) call.reject(new KilnError(data.error.code, data.error.message));
        else call.resolve(data.result);
      }
    };
    worker.onerror = (event) => {
      const error = new KilnError('worker', event.message || 'Kiln\'s worker failed to start');
      for (const call of this.#pending.values()) call.reject(error);
      this.#pending.clear();
    };
  }

  #call(method, args = [], handlers = {}, transfer = []) {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, ...handlers });
      this.#worker.postMessage({ id, method, args }, transfer);
    });
  }

  /** Uses the built-in stories ('en' or 'zh') as the corpus. Returns {bytes, characters, documents, preview}. */
  useDefaultCorpus(language = 'en') {
    return this.#call('useDefaultCorpus', [language]);
  }

  /** Uses text, bytes or a File as the corpus (documents separated by blank lines). Empty,
   * binary or non-UTF-8 input is refused with a KilnError('data'). */
  async useCorpus(input) {
    const bytes = await bytesOf(input);
    return this.#call('useCorpus', [bytes], {}, [bytes.buffer]);
  }

  /** Trains the tokenizer on `text` (or on the current corpus when `text` is null):
   * kind 'bpe' (byte-level, vocabSize 264–8192) or 'char'. Returns {vocabSize, kind}. */
  async trainTokenizer(text, { kind = 'bpe', vocabSize = kind === 'bpe' ? 512 : undefined } = {}) {
    if (text != null) await this.useCorpus(text);
    return this.#call('trainTokenizer', [{ kind, vocabSize }]);
  }

  /** `text` split into tokens: [{id, text}]. */
  tokenize(text) {
    return this.#call('tokenize', [String(text)]);
  }

  /** Parameter count and memory of a model before making it; `fits` is false, with
   * `problem` saying why, when this device's limits refuse it. */
  estimateModel(model = { preset: 'tiny' }, { batchSize = 8 } = {}) {
    return this.#call('estimateModel', [model, batchSize]);
  }

  /** Makes a model — {preset: 'tiny' | 'small' | 'base'} and/or {nLayer, nHead, nEmbd,
   * blockSize} — and its training run ({steps, batchSize, lr, seed, evalEvery, sampleEvery …}). */
  createModel(model = { preset: 'tiny' }, training = {}) {
    return this.#call('createModel', [model, training]);
  }

  /** Trains until the run's steps are done (`steps` changes the total). `onProgress`
   * receives {step, steps, loss, valLoss, lr, tokensPerS, etaS, elapsedS, sample} as
   * steps finish. Stops early on `signal` abort or stop(), resolving with {stopped: true}. */
  async pretrain({ steps, onProgress, signal } = {}) {
    if (this.#training) throw new KilnError('busy', 'a training run is already going; pause or stop it first');
    const onAbort = () => this.stop();
    signal?.addEventListener('abort', onAbort);
    this.#training = true;
    try {
      return await this.#call('pretrain', [{ steps }], { onProgress });
    } finally {
      this.#training = false;
      signal?.removeEventListener('abort', onAbort);
    }
  }

  pause() { return this.#call('pause'); }
  resume() { return this.#call('resume'); }
  stop() { return this.#call('stop'); }

  /** Streams text continuing `prompt`: {maxTokens, temperature (0 = greedy), topK, topP,
   * seed}. Pieces arrive as the model picks tokens; breaking out of the loop stops it.
   * While a generation runs, training waits. */
  async *generate(prompt, options = {}) {
    const queue = [];
    let wakeUp = null;
    let finished = false;
    let failure = null;
    const done = this.#call('generate', [prompt, options], {
      onToken: (piece) => { queue.push(piece); wakeUp?.(); },
    }).then(() => { finished = true; wakeUp?.(); }, (error) => { failure = error; finished = true; wakeUp?.(); });
    try {
      for (;;) {
        if (queue.length) yield queue.shift();
        else if (finished) break;
        else await new Promise((resolve) => { wakeUp = resolve; });
      }
      if (failure) throw failure;
    } finally {
      if (!finished) await this.#call('stopGeneration');
      await done;
    }
  }

  /** The model as a Hugging Face GPT-2 folder: {'model.safetensors': Uint8Array,
   * 'config.json': …, 'tokenizer.json': …, 'tokenizer_config.json': …}. */
  exportModel() { return this.#call('exportModel'); }

  /** The same folder as one .zip (Uint8Array). */
  exportZip() { return this.#call('exportZip'); }

  /** Loads a model from a .zip of a model folder (as exportZip makes); training can go
   * on from it on the current corpus. Corrupt files are refused with KilnError('checkpoint'). */
  async importModel(zip, training = {}) {
    const bytes = await bytesOf(zip);
    return this.#call('importZip', [bytes, training], {}, [bytes.buffer]);
  }

  /** Ends the worker and frees the GPU device. */
  terminate() {
    this.#worker.terminate();
    for (const call of this.#pending.values()) call.reject(new KilnError('cancelled', 'Kiln was terminated'));
    this.#pending.clear();
  }
}
