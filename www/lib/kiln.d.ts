// Types of kiln-llm's JavaScript API (www/lib/kiln.js).

export type BackendChoice = 'auto' | 'gpu' | 'cpu';

export interface BackendInfo {
  /** Where models train now; with 'auto', the faster for the last model made. */
  kind: 'gpu' | 'cpu';
  /** e.g. "nvidia ampere", "google swiftshader" (see `software`), "WebAssembly (relaxed SIMD)" or "WebAssembly (SIMD128)" */
  adapter: string;
  /** Why this backend: asked for, no WebGPU, or (auto) both timed on the model, with figures. */
  reason: string | null;
  maxBufferBytes: number | null;
  /** Each new model is timed on both backends and trains on the faster. */
  auto: boolean;
  /** The WebGPU adapter renders in software on the CPU (isFallbackAdapter, SwiftShader, WARP). */
  software: boolean;
  /** auto: training tokens/s of the last model made on each backend. */
  gpuTokensPerS: number | null;
  cpuTokensPerS: number | null;
  /** Workers (WebAssembly instances, one per core) sharing each CPU training step. */
  threads: number;
  /** The WebAssembly build running: 'relaxed' (relaxed SIMD: fused multiply-adds in the
   * CPU's matrix products) where the browser has it, else 'simd128'. */
  simd: SimdBuild;
  /** The CPU's matrix-product kernels, e.g. "wasm32 relaxed SIMD (f32x4.relaxed_madd, 4 f32 lanes)". */
  cpuKernel: string;
}

export type SimdBuild = 'relaxed' | 'simd128';

export interface CorpusInfo { bytes: number; characters: number; documents: number; preview: string; }

export interface TokenizerOptions { kind?: 'bpe' | 'char'; vocabSize?: number; }

export interface ModelOptions {
  preset?: 'tiny' | 'small' | 'base';
  nLayer?: number;
  nHead?: number;
  nEmbd?: number;
  blockSize?: number;
}

/** Training options; each stage has its own defaults, written once in the core
 * (`kiln.defaults().training[stage]`). tests/js_api.rs holds these keys to them. */
export interface TrainingOptions {
  steps?: number;
  minLr?: number;
  beta1?: number;
  beta2?: number;
  weightDecay?: number;
  gradClip?: number;
  evalBatches?: number;
  valFraction?: number;
  batchSize?: number;
  gradAccum?: number;
  lr?: number;
  warmupSteps?: number;
  evalEvery?: number;
  sampleEvery?: number;
  sampleTokens?: number;
  logEvery?: number;
  seed?: number;
  /** DPO's β and the NLL weight on chosen answers (TRL's rpo_alpha). */
  dpoBeta?: number;
  rpoAlpha?: number;
  /** The reward model's centring coefficient (zero turns it off). */
  rewardCenter?: number;
  /** PPO, with TRL's defaults: KL penalty, ratio and value clip ranges, γ and GAE's λ,
   * value-loss weight, optimizer steps per round of rollouts. */
  klCoef?: number;
  clipRange?: number;
  valueClip?: number;
  gamma?: number;
  lam?: number;
  vfCoef?: number;
  ppoEpochs?: number;
  rolloutPrompts?: number;
  answersPerPrompt?: number;
  missingEndPenalty?: number;
  /** Sampling of rollouts and candidates. */
  temperature?: number;
  topK?: number;
  topP?: number;
  answerTokens?: number;
  /** RLOO and GRPO: the rule that scores answers (JSON, a list of checks such as
   * `[{"check": "endsWith", "text": "!"}, {"check": "equalsReference"}]`; checks:
   * contains, notContains, endsWith, matches, maxWords, equalsReference, and rewardModel,
   * the trained reward model's score, each with an optional weight), answers
   * sampled per prompt (the group), and optimizer steps per round of rollouts. Their KL
   * weight is klCoef, GRPO's ratio clip clipRange. */
  rule?: string;
  generations?: number;
  iterations?: number;
  /** KTO on thumbs (or rankings read as thumbs: the best answers up, the worst down):
   * β, and the weights on thumbs up and down (zero balances them by their counts). */
  ktoBeta?: number;
  desirableWeight?: number;
  undesirableWeight?: number;
  /** LoRA: the rank of low-rank adapters that train in place of the frozen weights
   * (PEFT's LoRA; zero trains every weight), α (the adapters' scale is α / rank) and the
   * layers adapted: 'attention' (q_proj and v_proj, or the c_attn of GPT models), 'all-linear', or
   * module names separated by commas. */
  loraRank?: number;
  loraAlpha?: number;
  loraTargets?: string;
}

export interface GptConfig { vocab_size: number; block_size: number; n_layer: number; n_head: number; n_embd: number; }

export interface ModelEstimate {
  config: GptConfig;
  params: number;
  memoryBytes: number;
  memory: string;
  fits: boolean;
  problem: string | null;
}

export type StageName = 'pretrain' | 'sft' | 'reward' | 'dpo' | 'ppo' | 'kto' | 'rloo' | 'grpo';

export interface ModelInfo {
  /** The stage begun on the model, or null (an imported model before any stage). */
  stage: StageName | null;
  config: GptConfig;
  params: number;
  memoryBytes: number;
  memory: string;
  trainRows: number;
  valRows: number;
  /** How the weights are held: single precision, or, for a frozen model that came in half
   * precision, its matrices in that format on the GPU (half the memory, the same results). */
  weights: 'f32' | 'bf16' | 'f16';
  /** The backend the model trains on (auto: just timed, see BackendInfo.reason). */
  backend?: BackendInfo;
  /** importModel: what Kiln changed to use the folder (e.g. special tokens added). */
  notes?: string[];
  /** train({data}): the JSONL lines skipped, as "line N: reason". */
  skipped?: string[];
}

export interface TrainOptions extends TrainingOptions {
  stage?: StageName;
  /** SFT data: JSONL ({"prompt","completion"} or {"messages": [...]}) as text, bytes or a File. */
  data?: string | Uint8Array | ArrayBuffer | Blob;
  /** The built-in instruction set's language, when no data is given. */
  lang?: 'en' | 'zh';
  /** Begin the stage afresh even if it is the current one. */
  restart?: boolean;
  onProgress?: (p: Progress) => void;
  onStage?: (info: ModelInfo) => void;
  /** Each autosave stored in this browser (at every validation, stage change and stop), or
   * why it could not be: `error` says it for the person (its size and what to do), `full` is
   * true where the browser's quota is known to be the cause. Training goes on either way. */
  onAutosave?: (saved: AutosaveInfo | AutosaveFailure) => void;
  signal?: AbortSignal;
}

/** A failed autosave: nothing of it is left behind. */
export interface AutosaveFailure { error: string; message: string; code: 'storage'; full: boolean; }

/** An autosave in this browser (OPFS, or IndexedDB where OPFS is missing). */
export interface AutosaveInfo {
  id: string;
  savedAt?: string;
  stage: StageName | null;
  step: number;
  steps: number | null;
  /** The validation loss at the save (else the training loss), when known. */
  loss: number | null;
  bytes: number;
}

/** restoreAutosave's answer: the run's info and where it stands. */
export interface RestoredRun extends ModelInfo {
  step: number;
  history: { step: number; loss: number | null; val_loss: number | null }[];
  /** Set when the run continues on another backend than it was saved on. */
  note: string | null;
}

/** A token as shown: its text (special tokens by name, `<|eos|>`; bytes of part of a character as `<0xE9>`). */
export interface Token { id: number; text: string; special: boolean; }

/** What the model predicts after a prompt (inspectNext). */
export interface NextToken {
  tokens: Token[];
  /** every token's probability at temperature 1 (sums to 1) */
  probs: number[];
  temperature: number;
  /** the most likely next tokens, most likely first, with their probability at `temperature` too */
  top: (Token & { p: number; pAtTemperature: number })[];
  /** weights (T×T, row-major): row t is what token t attends to, 0 above the diagonal */
  attention: { layer: number; head: number; weights: number[] } | null;
}

/** One training row as the loss sees it (inspectRow). */
export interface TrainingRow { stage: StageName; inputs: Token[]; targets: Token[]; losses: (number | null)[]; }

export interface Message { role: 'system' | 'user' | 'assistant'; content: string; }

export interface Defaults {
  presets: Record<'tiny' | 'small' | 'base', { nLayer: number; nHead: number; nEmbd: number; blockSize: number }>;
  training: Record<StageName, Required<TrainingOptions>>;
  sampling: Required<GenerateOptions>;
  /** chat()'s defaults (greedy). */
  chat: Required<GenerateOptions>;
  /** inspectNext()'s default: how many of the most likely next tokens it lists. */
  inspect: { topK: number };
}

export interface Progress {
  stage: StageName;
  step: number;
  steps: number;
  /** Mean loss per token, when it was read back this step. */
  loss: number | null;
  valLoss: number | null;
  lr: number;
  tokensPerS: number;
  elapsedS: number;
  etaS: number;
  sample: string | null;
  /** The most bytes of device buffers alive at once so far (WebGPU; null on the CPU). */
  memoryPeakBytes: number | null;
  /** The preference stages' measures since the last report; absent when none. */
  metrics?: Metrics;
  /** The run resumes bit for bit from here (a validation, or the end of a PPO round): autosaved. */
  savePoint?: boolean;
  /** What kept the run alive this step: a divergence rolled back (the loss became NaN, or
   * spiked) with the learning rate halved, or the worker restarted after a lost GPU device
   * and the run continued from its autosave. Only `stage`, `step` and `event` are certain then. */
  event?: string;
  stopped?: boolean;
}

/** A person's ranking of a prompt's answers: rank 1 is best, equal ranks are ties. */
export interface Ranking {
  prompt: Message[];
  answers: string[];
  ranks: number[];
  verdict: 'ranked' | 'skipped' | 'all_bad';
  /** Who ranked it (kept in exports; TRL's readers ignore it). */
  annotator?: string;
}

/** How far several people's rankings agree. */
export interface Agreement {
  annotators: { name: string; rankings: number; pairs: number; skipped: number; allBad: number }[];
  between: { annotators: [string, string]; sharedPrompts: number; answerPairs: number; pairwiseAgreement: number | null; meanTauB: number | null; tauPrompts: number; tauSkipped: number }[];
  sharedPrompts: number;
  krippendorffAlpha: number | null;
  disagreementCount: number;
  disagreements: { question: string; answers: string[]; ranks: { annotator: string; ranks: number[]; allBad: boolean }[]; agreement: number }[];
}

/** An update of the loop that learns as the person ranks: after how many rankings, how
 * many it trained on and held back, its last loss, its implicit reward's agreement with
 * the held-back rankings, and its KL to the fine-tuned model. */
export interface OnlineUpdate {
  rankings: number;
  trainedOn: number;
  heldBack: number;
  loss: number | null;
  valPairAccuracy: number | null;
  /** The KL to the fine-tuned model, nats per answer, on answers to held-back prompts. */
  kl: number | null;
}

export interface Candidate { text: string; ended: boolean; logprobs: number[]; }

/** A stage's measures since its last report, each present only when the stage reports it. */
export interface Metrics {
  /** Share of the training pairs ordered as the person did (reward model, DPO), and the mean margin. */
  pairAccuracy?: number;
  rewardMargin?: number;
  /** DPO: mean log-probability of the chosen and the rejected answers. */
  logpChosen?: number;
  logpRejected?: number;
  /** The same on the held-out rankings. */
  valPairAccuracy?: number;
  valRewardMargin?: number;
  /** PPO, per answer of the last rollouts: reward-model score (RLOO, GRPO: the rule's), KL to the fine-tuned model, share that ended. */
  meanReward?: number;
  kl?: number;
  endedShare?: number;
  /** RLOO and GRPO: share of prompts whose answers all scored alike (near one, the run has stalled). */
  zeroStdShare?: number;
  /** PPO, per answer token of the last updates. */
  clipFraction?: number;
  entropy?: number;
  valueLoss?: number;
  policyLoss?: number;
}

export interface GenerateOptions { maxTokens?: number; temperature?: number; topK?: number; topP?: number; seed?: number; }

export class KilnError extends Error {
  /** 'device-lost', 'gpu-out-of-memory', 'RuntimeError' (the WebAssembly instance trapped)
   * and 'worker': the worker cannot go on, and a training run restarts it from its autosave. */
  code: 'data' | 'tokenizer' | 'config' | 'gpu' | 'device-lost' | 'gpu-out-of-memory' | 'checkpoint' | 'template' | 'model' | 'diverged' | 'busy' | 'cancelled' | 'worker' | 'RuntimeError' | 'io' | 'error';
}

export class Kiln {
  static create(options?: { backend?: BackendChoice; threads?: number; simd?: SimdBuild; workerUrl?: string | URL }): Promise<Kiln>;
  backend: BackendInfo;
  useDefaultCorpus(language?: 'en' | 'zh'): Promise<CorpusInfo>;
  useCorpus(input: string | Uint8Array | ArrayBuffer | Blob): Promise<CorpusInfo>;
  trainTokenizer(text: string | Uint8Array | Blob | null, options?: TokenizerOptions): Promise<{ vocabSize: number; kind: 'bpe' | 'char' }>;
  tokenize(text: string): Promise<Token[]>;
  /** `text` under a second tokenizer trained on the same corpus (the model's own stays). */
  tokenizeWith(text: string, options?: { kind?: 'bpe' | 'char'; vocabSize?: number }): Promise<{ kind: 'bpe' | 'char'; vocabSize: number; pieces: Token[] }>;
  /** The next token's probabilities after `prompt` (and one head's attention), from the backend that trains. */
  inspectNext(prompt: string, options?: { topK?: number; temperature?: number; attention?: { layer: number; head: number }; append?: number[] }): Promise<NextToken>;
  /** The current stage's first training row: inputs, targets (shifted by one) and the loss at each position. */
  inspectRow(): Promise<TrainingRow | null>;
  /** The training options for `stage` over its defaults, as a run would take them; throws a
   * KilnError ('config', naming the option and its bound) when one is out of bounds. */
  checkTraining(stage: StageName, options?: TrainingOptions): Promise<TrainingOptions>;
  /** The first `n` conversations the last fine-tuning held out (the person's own, or the
   * built-in questions with their stories), the last message of each the expected answer. */
  heldOut(n?: number): Promise<Message[][]>;
  /** Whether `answer` is `expected` by the held-out checks' rule (case, spaces and a final mark aside). */
  answerMatches(expected: string, answer: string): Promise<boolean>;
  estimateModel(model?: ModelOptions, options?: { batchSize?: number }): Promise<ModelEstimate>;
  createModel(model?: ModelOptions, training?: TrainingOptions): Promise<ModelInfo>;
  defaults(): Promise<Defaults>;
  train(options?: TrainOptions): Promise<Progress | null>;
  /** train({...options, stage: 'pretrain'}) */
  pretrain(options?: Omit<TrainOptions, 'stage'>): Promise<Progress | null>;
  pause(): Promise<boolean>;
  resume(): Promise<boolean>;
  stop(): Promise<boolean>;
  generate(prompt: string, options?: GenerateOptions): AsyncGenerator<string, void, undefined>;
  chat(messages: Message[], options?: GenerateOptions): AsyncGenerator<string, void, undefined>;
  renderChat(messages: Message[]): Promise<{ id: number; text: string; supervised: boolean }[]>;
  sampleCandidates(messages: Message[], options?: GenerateOptions & { k?: number }): Promise<Candidate[]>;
  /** Adds a ranking to the loop that learns as the person ranks; every `every` rankings,
   * `steps` DPO steps from the current model, held near the fine-tuned one. The update
   * that landed, or null, once it is autosaved. Options: every, steps, and DPO's training options. */
  learnFromRanking(ranking: Ranking, options?: TrainingOptions & { every?: number; steps?: number }): Promise<OnlineUpdate | null>;
  /** Several people's rankings, a file each (lines naming their annotator are that
   * person's): counts, pairwise agreement, Kendall's tau-b, Krippendorff's alpha (ordinal)
   * and the prompts they disagree on; with `combine` ('union', 'majority' or a person's
   * name) also the rankings JSONL to train on. */
  agreement(files: Array<File | { name: string; text: string }>, combine?: string): Promise<{ agreement: Agreement; skipped: string[]; combined: string | null }>;
  /** How sure the current model is of the order of its answers to each prompt: the spread
   * of their mean log-probability per token (the smallest: the prompt to rank first). */
  orderSpreads(prompts: Message[][], options?: GenerateOptions & { k?: number }): Promise<number[]>;
  /** Puts back the model as it was before the last update, bit for bit: whether there was
   * one. Resolves once the undone model is autosaved. */
  undoUpdate(): Promise<boolean>;
  answers(prompts: Message[][], which?: 'current' | 'reference'): Promise<string[]>;
  rankingPairs(rankings: string | Uint8Array | Blob): Promise<string>;
  checkRankings(rankings: string | Uint8Array | Blob): Promise<{ rankings: Ranking[]; pairs: number; skipped: string[] }>;
  instructionExamples(lang?: 'en' | 'zh', split?: 'train' | 'heldout', n?: number): Promise<Message[][]>;
  exportModel(): Promise<Record<string, Uint8Array>>;
  exportZip(): Promise<Uint8Array>;
  /** The model (adapters merged) as one GGUF file for llama.cpp and Ollama, its tokenizer
   * and chat template inside; matrices in f16 (the default), f32 or 8-bit blocks. */
  exportGguf(type?: 'f32' | 'f16' | 'q8_0'): Promise<Uint8Array>;
  /** A .zip of a model folder, or a folder's files (a folder input's FileList, File[], or {name: bytes}). */
  importModel(input: Uint8Array | ArrayBuffer | Blob | FileList | File[] | Record<string, Uint8Array>, training?: TrainingOptions): Promise<ModelInfo>;
  /** A PEFT adapter folder onto the current model (its base). */
  importAdapter(files: FileList | File[] | Record<string, Uint8Array>): Promise<ModelInfo>;
  /** The trained LoRA adapters as a PEFT adapter folder naming `baseModel`. */
  exportAdapter(baseModel?: string): Promise<Record<string, Uint8Array>>;
  /** The autosaves in this browser, newest first (the newest three runs are kept). */
  listAutosaves(): Promise<AutosaveInfo[]>;
  /** Continues an autosave bit for bit: model, optimizer, stage, data position, tokenizer, corpus. */
  restoreAutosave(id: string): Promise<RestoredRun>;
  deleteAutosave(id: string): Promise<void>;
  /** Faults on purpose, to test what survives them: a NaN weight, WebGPU's device.destroy(), a wasm trap. */
  injectFault(kind: 'nan' | 'lose-device' | 'trap'): Promise<void>;
  terminate(): void;
}
