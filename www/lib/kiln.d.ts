// Types of kiln-llm's JavaScript API (www/lib/kiln.js).

export type BackendChoice = 'auto' | 'gpu' | 'cpu';

export interface BackendInfo {
  kind: 'gpu' | 'cpu';
  /** e.g. "google swiftshader (BrowserWebGpu)" or "WebAssembly (SIMD128)" */
  adapter: string;
  /** Why the CPU backend is in use, when it is. */
  reason: string | null;
  maxBufferBytes: number | null;
}

export interface CorpusInfo { bytes: number; characters: number; documents: number; preview: string; }

export interface TokenizerOptions { kind?: 'bpe' | 'char'; vocabSize?: number; }

export interface ModelOptions {
  preset?: 'tiny' | 'small' | 'base';
  nLayer?: number;
  nHead?: number;
  nEmbd?: number;
  blockSize?: number;
}

export interface TrainingOptions {
  steps?: number;
  batchSize?: number;
  gradAccum?: number;
  lr?: number;
  warmupSteps?: number;
  evalEvery?: number;
  sampleEvery?: number;
  sampleTokens?: number;
  logEvery?: number;
  seed?: number;
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

export interface ModelInfo {
  config: GptConfig;
  params: number;
  memoryBytes: number;
  memory: string;
  trainRows: number;
  valRows: number;
}

export interface Progress {
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
  stopped?: boolean;
}

export interface GenerateOptions { maxTokens?: number; temperature?: number; topK?: number; topP?: number; seed?: number; }

export class KilnError extends Error {
  code: 'data' | 'tokenizer' | 'config' | 'gpu' | 'checkpoint' | 'diverged' | 'busy' | 'cancelled' | 'worker' | 'io' | 'error';
}

export class Kiln {
  static create(options?: { backend?: BackendChoice; workerUrl?: string | URL }): Promise<Kiln>;
  backend: BackendInfo;
  useDefaultCorpus(language?: 'en' | 'zh'): Promise<CorpusInfo>;
  useCorpus(input: string | Uint8Array | ArrayBuffer | Blob): Promise<CorpusInfo>;
  trainTokenizer(text: string | Uint8Array | Blob | null, options?: TokenizerOptions): Promise<{ vocabSize: number; kind: 'bpe' | 'char' }>;
  tokenize(text: string): Promise<{ id: number; text: string }[]>;
  estimateModel(model?: ModelOptions, options?: { batchSize?: number }): Promise<ModelEstimate>;
  createModel(model?: ModelOptions, training?: TrainingOptions): Promise<ModelInfo>;
  pretrain(options?: { steps?: number; onProgress?: (p: Progress) => void; signal?: AbortSignal }): Promise<Progress | null>;
  pause(): Promise<boolean>;
  resume(): Promise<boolean>;
  stop(): Promise<boolean>;
  generate(prompt: string, options?: GenerateOptions): AsyncGenerator<string, void, undefined>;
  exportModel(): Promise<Record<string, Uint8Array>>;
  exportZip(): Promise<Uint8Array>;
  importModel(zip: Uint8Array | ArrayBuffer | Blob, training?: TrainingOptions): Promise<ModelInfo>;
  terminate(): void;
}
