// kiln-llm: train tiny GPT-style language models in the browser, on WebGPU.
//
//   const kiln = await Kiln.create({ backend: 'auto' });
//   await kiln.trainTokenizer(text, { vocabSize: 512 });
//   await kiln.createModel({ preset: 'tiny' });
//   await kiln.train({ stage: 'pretrain', steps: 500, onProgress: (p) => console.log(p.step, p.loss) });
//   await kiln.train({ stage: 'sft', lang: 'en' });            // or data: a JSONL File
//   for await (const piece of kiln.chat([{ role: 'user', content: 'Hi!' }])) out += piece;
//   const answers = await kiln.sampleCandidates([{ role: 'user', content: 'Hi!' }], { k: 4 });
//   await kiln.train({ stage: 'reward', data: rankingsJsonl });  // then 'ppo', or 'dpo' alone
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

/** The size of an input before reading it (a File's from its metadata). */
function sizeOf(input) {
  if (typeof Blob !== 'undefined' && input instanceof Blob) return input.size;
  if (typeof input === 'string') return input.length;
  return input?.byteLength ?? 0;
}

/** Whether `input` is a folder's files rather than one .zip. */
function isFolder(input) {
  return Array.isArray(input) || isFileList(input) || (input !== null && typeof input === 'object'
    && !(input instanceof Blob) && !(input instanceof ArrayBuffer) && !ArrayBuffer.isView(input));
}

function isFileList(input) {
  return typeof FileList !== 'undefined' && input instanceof FileList;
}

/** The buffers of {name: Uint8Array}, moved to the worker rather than copied. */
function transfers(files) {
  return Object.values(files).map((b) => b.buffer);
}

async function bytesOf(input) {
  if (input instanceof Uint8Array) return input;
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  if (typeof Blob !== 'undefined' && input instanceof Blob) return new Uint8Array(await input.arrayBuffer());
  if (typeof input === 'string') return new TextEncoder().encode(input);
  throw new KilnError('data', 'expected text, bytes, a Blob or a File');
}

/** Training options as given, those left undefined dropped (they take their defaults). A
 * number that is not one is refused here, by name: on its way to the core NaN would become
 * null, which means "the default". The core checks every other bound. */
function trainingOptions(options) {
  const given = Object.fromEntries(Object.entries(options ?? {}).filter(([, v]) => v !== undefined));
  const notANumber = Object.entries(given).find(([, v]) => typeof v === 'number' && !Number.isFinite(v));
  if (notANumber) throw new KilnError('config', `${notANumber[0]} must be a number, not ${notANumber[1]}`);
  return given;
}

/** Times a training run restarts its worker after faults before giving up. */
const MAX_RECOVERIES = 2;

/** The codes of errors that end the worker's usefulness: its GPU device lost or out of
 * memory, its WebAssembly instance trapped (a panic, memory exhausted: the engine's
 * RuntimeError), or the worker itself gone. Every other code is an answer, not a fault
 * (a CPU buffer too large is the core's refusal, code 'config'). */
const WORKER_GONE = new Set(['device-lost', 'gpu-out-of-memory', 'RuntimeError', 'worker']);

function workerIsGone(error) {
  return WORKER_GONE.has(error.code);
}

export class Kiln {
  #worker;
  #pending = new Map();
  #nextId = 1;
  #training = false;
  /** {kind: 'gpu' | 'cpu', adapter, reason, maxBufferBytes} */
  backend = null;

  /** Starts Kiln's worker and picks a backend: 'auto' (each model is timed on WebGPU, when
   * there is an adapter, and on the CPU in WebAssembly, and trains on the faster —
   * `backend.reason` says why, with both figures, once `createModel` has run), 'gpu' or
   * 'cpu'. On the CPU, `threads` workers (by default one per core, at most 4) share each
   * pretraining and fine-tuning step; `backend.threads` says how many. The CPU runs the
   * relaxed-SIMD WebAssembly build where the browser has relaxed SIMD, else the SIMD128
   * one (`backend.simd` says which); `simd` 'relaxed' or 'simd128' forces one. */
  static async create({ backend = 'auto', threads, simd, workerUrl } = {}) {
    const url = workerUrl ?? new URL('./worker.js', import.meta.url);
    const kiln = new Kiln(new Worker(url, { type: 'module' }));
    kiln.#restart = { url, init: [backend, { threads, simd }] };
    kiln.backend = await kiln.#call('init', kiln.#restart.init);
    return kiln;
  }

  /** How to start the worker again after a fault (create's arguments), and the current
   * run's newest autosave, which a recovery continues from. */
  #restart = null;
  #lastAutosave = null;

  constructor(worker) {
    this.#attach(worker);
  }

  #attach(worker) {
    this.#worker = worker;
    worker.onmessage = ({ data }) => {
      const call = this.#pending.get(data.id);
      if (!call) return;
      if ('progress' in data) call.onProgress?.(data.progress);
      else if ('autosave' in data) call.onAutosave?.(data.autosave);
      else if ('autosaveError' in data) call.onAutosave?.({ ...data.autosaveError, error: data.autosaveError.message });
      else if ('token' in data) call.onToken?.(data.token);
      else if ('stage' in data) call.onStage?.(data.stage);
      else {
        this.#pending.delete(data.id);
        if (data.error) call.reject(new KilnError(data.error.code, data.error.message));
        else call.resolve(data.result);
      }
    };
    worker.onerror = (event) => {
      event.preventDefault?.();
      const error = new KilnError('worker', event.message || 'Kiln\'s worker failed');
      for (const call of this.#pending.values()) call.reject(error);
      this.#pending.clear();
    };
  }

  /** After a fault that ends the worker (a lost GPU device, a wasm trap or out-of-memory):
   * a new worker on the same backend choice, the run's newest autosave restored. Returns
   * the restored run's info; an error saying why not when there is nothing to restore. */
  async #recover(error) {
    this.#worker.terminate();
    for (const call of this.#pending.values()) call.reject(error);
    this.#pending.clear();
    this.#attach(new Worker(this.#restart.url, { type: 'module' }));
    this.backend = await this.#call('init', this.#restart.init);
    if (!this.#lastAutosave) {
      throw new KilnError(error.code, `${error.message.replace(/\.$/, '')}. Kiln started a new worker, but this run had not been autosaved yet, so there is nothing to continue from: create the model and train again`);
    }
    return this.#call('restoreAutosave', [this.#lastAutosave]);
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
    const bytes = await this.#bytes(input, 'text');
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

  /** `text` under a second tokenizer trained on the same corpus with {kind, vocabSize}
   * (the model's own tokenizer stays): {kind, vocabSize, pieces: [{id, text}]}. */
  tokenizeWith(text, { kind = 'bpe', vocabSize } = {}) {
    return this.#call('tokenizeWith', [String(text), { kind, vocabSize }]);
  }

  /** What the model predicts after `prompt`, read from the backend that trains it (one
   * forward pass; nothing is kept): {tokens: [{id, text}], probs (every token's, at
   * temperature 1), temperature, top: [{id, text, p, pAtTemperature}] (the topK most
   * likely), attention: {layer, head, weights (T×T, row t: what token t attends to)} when
   * `attention` = {layer, head} is given, else null}. `append`: token ids after the
   * prompt's (picked by hand, kept exactly rather than re-tokenized with the text). */
  inspectNext(prompt, { topK, temperature, attention, append = [] } = {}) {
    return this.#call('inspectNext', [String(prompt), { topK, temperature, attention, append }]);
  }

  /** The current stage's first training row under the model now: {stage, inputs,
   * targets: [{id, text}] (targets are the inputs shifted by one), losses: [nll, or null
   * where the stage masks the position]}; null in the preference stages. */
  inspectRow() {
    return this.#call('inspectRow', []);
  }

  /** Parameter count and memory of a model before making it; `fits` is false, with
   * `problem` saying why, when this device's limits refuse it. */
  estimateModel(model = { preset: 'tiny' }, { batchSize = 8 } = {}) {
    return this.#call('estimateModel', [model, batchSize]);
  }

  /** Makes a model — {preset: 'tiny' | 'small' | 'base'} and/or {nLayer, nHead, nEmbd,
   * blockSize} — and its training run ({steps, batchSize, lr, seed, evalEvery, sampleEvery …}). */
  /** The training options `options` give for `stage` over its defaults, as a run would
   * take them; a KilnError ('config', naming the option and its bound) when one is out of
   * bounds. Nothing runs. */
  checkTraining(stage, options = {}) {
    return this.#call('checkTraining', [stage, trainingOptions(options)]);
  }

  /** The first `n` conversations the last fine-tuning held out from training (the
   * person's own, or the built-in questions with their stories): [[messages]], the last
   * message of each the expected answer; [] before any fine-tuning. */
  heldOut(n = 20) {
    return this.#call('heldOut', [n]);
  }

  /** Whether `answer` is `expected` by the held-out checks' rule (case, spaces and a final
   * . 。 ! or ！ aside). */
  answerMatches(expected, answer) {
    return this.#call('answerMatches', [expected, answer]);
  }

  async createModel(model = { preset: 'tiny' }, training = {}) {
    const info = await this.#call('createModel', [model, trainingOptions(training)]);
    if (info.backend) this.backend = info.backend;
    this.#lastAutosave = null; // a new run: autosaved under a new name
    return info;
  }

  /** Kiln's defaults: {presets, training: {pretrain, sft, reward, dpo, ppo}, sampling,
   * chat, inspect} — the values the core uses when an option is left out. */
  defaults() { return this.#call('defaults'); }

  /** Trains a stage until its steps are done: 'pretrain' (on the corpus) or 'sft'
   * (supervised fine-tuning on `data` — JSONL text, bytes or a File in TRL's
   * prompt/completion or messages format — or, without data, the built-in questions
   * about stories in `lang` 'en' | 'zh'). The preference stages start from the
   * fine-tuned model: 'reward' and 'dpo' on `data` = rankings JSONL ({prompt, answers,
   * ranks} or TRL's {prompt, chosen, rejected}), 'ppo' against the last reward model on
   * the rankings' prompts (or the built-in questions); their progress carries `metrics`
   * (pairAccuracy, valPairAccuracy, rewardMargin, meanReward, kl, clipFraction, entropy,
   * valueLoss …). Asking for another stage than the current one,
   * giving `data`, or `restart: true` begins it afresh on the model as it is; otherwise
   * the run continues (`steps` changes its length). Other options (batchSize, lr, …) take
   * the stage's defaults. `onStage` receives the new stage's info (rows, JSONL lines
   * skipped); `onProgress` receives {stage, step, steps, loss, valLoss, lr, tokensPerS,
   * etaS, elapsedS, sample, memoryPeakBytes}. Stops early on `signal` abort or stop(), resolving with
   * {stopped: true}. */
  async train({ stage = 'pretrain', data, onProgress, onStage, onAutosave, signal, ...options } = {}) {
    if (this.#training) throw new KilnError('busy', 'a training run is already going; pause or stop it first');
    const given = trainingOptions(options);
    let bytes = data == null ? undefined : await this.#bytes(data, 'jsonl');
    const onAbort = () => this.stop();
    signal?.addEventListener('abort', onAbort);
    this.#training = true;
    const saved = (info) => {
      if (!info.error) this.#lastAutosave = info.id;
      onAutosave?.(info);
    };
    try {
      for (let recoveries = 0; ; recoveries++) {
        try {
          return await this.#call('train', [{ stage, data: bytes, ...given }], { onProgress, onStage, onAutosave: saved });
        } catch (error) {
          if (!(error instanceof KilnError) || !workerIsGone(error) || recoveries >= MAX_RECOVERIES) throw error;
          const info = await this.#recover(error);
          onProgress?.({ stage: info.stage, step: info.step, event: `${error.message.replace(/\.$/, '')}: Kiln restarted its worker, restored the autosave of step ${info.step} and continues` });
          // the restored stage continues where its autosave stood
          bytes = undefined;
          given.restart = false;
        }
      }
    } finally {
      this.#training = false;
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Pretraining: `train({ stage: 'pretrain', ... })`. */
  pretrain(options = {}) { return this.train({ ...options, stage: 'pretrain' }); }

  pause() { return this.#call('pause'); }
  resume() { return this.#call('resume'); }
  stop() { return this.#call('stop'); }

  /** Streams text continuing `prompt`: {maxTokens, temperature (0 = greedy), topK, topP,
   * seed}. Pieces arrive as the model picks tokens; breaking out of the loop stops it.
   * While a generation runs, training waits. */
  generate(prompt, options = {}) { return this.#stream('generate', [prompt, options]); }

  /** Streams the assistant's answer to `messages` ([{role: 'system' | 'user' |
   * 'assistant', content}], ending with the user's turn) through the chat template; the
   * answer ends at `<|end|>`. Options as for generate. */
  chat(messages, options = {}) { return this.#stream('chat', [messages, options]); }

  async *#stream(method, args) {
    const queue = [];
    let wakeUp = null;
    let finished = false;
    let failure = null;
    const done = this.#call(method, args, {
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

  /** `k` answers (2–6) to `messages` (ending with the user's turn), sampled together in
   * one batch: [{text, ended, logprobs}]. Options: temperature, topK, topP, maxTokens,
   * seed (the preference stages' defaults otherwise). */
  sampleCandidates(messages, { k = 4, ...options } = {}) {
    return this.#call('sampleCandidates', [messages, k, options]);
  }

  /** Learning as the person ranks: adds `ranking` ({prompt, answers, ranks, verdict}) and,
   * every `every` rankings, runs `steps` DPO steps on all of them so far from the current
   * model, held near the fine-tuned one (every fifth usable ranking held back to measure
   * agreement). Options: every, steps, and DPO's training options. Resolves to the update
   * that landed ({rankings, trainedOn, heldBack, loss, valPairAccuracy}) or null, once the
   * update is autosaved. */
  learnFromRanking(ranking, options = {}) { return this.#call('rankOnline', [ranking, trainingOptions(options)]); }

  /** Several people's rankings, a file (File, or {name, text}) each; lines naming their
   * `annotator` are that person's: {agreement: {annotators, between, krippendorffAlpha …},
   * skipped, combined} — `combined`, when `combine` is 'union', 'majority' or a person's
   * name, is the rankings JSONL to train on. */
  async agreement(files, combine) {
    // each person is named by the file's name without its extension, as the CLI names them
    const read = await Promise.all([...files].map(async (f) => ({ name: f.name.replace(/\.[^.]*$/, '') || f.name, text: typeof f.text === 'function' ? await f.text() : f.text })));
    return this.#call('agreement', [read, combine ?? undefined]);
  }

  /** How sure the current model is of the order of its answers to each prompt (lists of
   * messages; `k` answers sampled with the sampling options): [spread of their mean
   * log-probability per token]; the smallest is the prompt whose ranking teaches the most. */
  orderSpreads(prompts, { k = 4, ...options } = {}) { return this.#call('orderSpreads', [prompts, k, options]); }

  /** Puts back the model as it was before the last update (bit for bit): whether there was
   * one. Resolves once the undone model is autosaved. */
  undoUpdate() { return this.#call('undoOnline', []); }

  /** Greedy answers to each prompt (a list of messages) by the 'current' model or the
   * 'reference' (the fine-tuned model the preference stages began from): [text]. */
  answers(prompts, which = 'current') { return this.#call('answers', [prompts, which]); }

  /** Rankings JSONL → TRL's preference pairs ({prompt, chosen, rejected}) as JSONL. */
  async rankingPairs(rankings) {
    const bytes = await this.#bytes(rankings, 'jsonl');
    return this.#call('rankingPairs', [bytes], {}, [bytes.buffer]);
  }

  /** Reads rankings JSONL (or TRL pairs): {rankings, pairs, skipped: ["line N: why"]}. */
  async checkRankings(rankings) {
    const bytes = await this.#bytes(rankings, 'jsonl');
    return this.#call('checkRankings', [bytes], {}, [bytes.buffer]);
  }

  /** A conversation through the chat template, token by token: [{id, text, supervised}]
   * (supervised tokens are the ones SFT's loss counts). */
  renderChat(messages) { return this.#call('renderChat', [messages]); }

  /** `n` conversations of the built-in instruction set: split 'train' or 'heldout'. */
  instructionExamples(lang = 'en', split = 'heldout', n = 10) { return this.#call('instructionExamples', [lang, split, n]); }

  /** The model as a Hugging Face GPT-2 folder: {'model.safetensors': Uint8Array,
   * 'config.json': …, 'generation_config.json': …, 'tokenizer.json': …, 'tokenizer_config.json': …}. */
  exportModel() { return this.#call('exportModel'); }

  /** The same folder as one .zip (Uint8Array). */
  exportZip() { return this.#call('exportZip'); }

  /** The model (LoRA adapters merged in) as one GGUF file (Uint8Array) for llama.cpp,
   * Ollama and LM Studio: its tokenizer and chat template inside, the matrices in
   * `type` 'f16' (the default), 'f32' or 'q8_0' (8-bit blocks, a quarter of f32's size). */
  exportGguf(type = 'f16') { return this.#call('exportGguf', [type]); }

  /** Loads a model from a .zip of a model folder (as exportZip makes), or from a
   * folder's files (a folder input's FileList, File[], or {name: bytes}): a Hugging Face
   * folder of GPT-2 (Kiln's special tokens are added if missing, said in `notes`), Llama,
   * Qwen2 or Mistral (kept as they are: tokenizer, chat template, special tokens). Only
   * the files Kiln reads are read. Any stage can then train it; with a corpus set,
   * pretraining continues on it. Corrupt files are refused with KilnError('checkpoint')
   * and change nothing. */
  async importModel(input, training = {}) {
    let info;
    if (isFolder(input)) {
      const files = await this.#folder(input);
      info = await this.#call('importFiles', [files, trainingOptions(training)], {}, transfers(files));
    } else {
      const bytes = await this.#bytes(input, 'model');
      info = await this.#call('importZip', [bytes, trainingOptions(training)], {}, [bytes.buffer]);
    }
    this.#lastAutosave = null;
    return info;
  }

  /** Puts a PEFT adapter folder (adapter_config.json, adapter_model.safetensors: a
   * FileList, File[] or {name: bytes}) onto the current model, its base. A LoRA stage of
   * the same loraRank, loraAlpha and loraTargets trains it on. */
  async importAdapter(files) {
    const record = await this.#folder(files);
    return this.#call('importAdapter', [record], {}, transfers(record));
  }

  /** The LoRA adapters trained (loraRank above 0) as a PEFT adapter folder:
   * {'adapter_config.json', 'adapter_model.safetensors'}; `baseModel` (a Hub id or folder
   * name) goes into its base_model_name_or_path. */
  exportAdapter(baseModel = '') { return this.#call('exportAdapter', [baseModel]); }

  /** {name: Uint8Array} of the files of a folder Kiln reads (each name without its
   * folders), each refused by size before it is read. */
  async #folder(input) {
    const entries = Array.isArray(input) || isFileList(input)
      ? Array.from(input).map((f) => [f.webkitRelativePath || f.name, f])
      : Object.entries(input);
    const out = {};
    for (const [path, data] of entries) {
      const name = path.split(/[\\/]/).pop();
      if (!(await this.#call('isModelFile', [name]))) continue;
      out[name] = await this.#bytes(data, 'model');
    }
    return out;
  }

  /** The bytes of `input`, refused first by its size alone (`kind`: text, jsonl or model;
   * the caps are the core's), so an oversized file is never read into memory. */
  async #bytes(input, kind) {
    await this.#call('checkFileSize', [sizeOf(input), kind]);
    return bytesOf(input);
  }

  /** Faults on purpose, to test what survives them: 'nan' (a NaN weight: the divergence
   * guard rolls the run back), 'lose-device' (WebGPU's device.destroy(): the worker is
   * recreated and the run continues from its autosave) or 'trap' (a wasm trap). */
  injectFault(kind) { return this.#call('injectFault', [kind]); }

  /** The autosaves in this browser, newest first: [{id, savedAt, stage, step, steps,
   * loss, bytes}]. A run is saved at every validation, at every stage change and when
   * training stops (`onAutosave` in train hears of each); the newest three runs are kept. */
  listAutosaves() { return this.#call('listAutosaves'); }

  /** Continues autosave `id`: model, optimizer, stage and data position, tokenizer and
   * corpus; training then goes on as the uninterrupted run would have. Returns the run's
   * info with `step`, `history` ([{step, loss, val_loss}]) and `note`. */
  async restoreAutosave(id) {
    const info = await this.#call('restoreAutosave', [id]);
    this.#lastAutosave = id;
    return info;
  }

  deleteAutosave(id) { return this.#call('deleteAutosave', [id]); }

  /** Ends the worker and frees the GPU device. */
  terminate() {
    this.#worker.terminate();
    for (const call of this.#pending.values()) call.reject(new KilnError('cancelled', 'Kiln was terminated'));
    this.#pending.clear();
  }
}
