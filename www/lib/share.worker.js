// A helper of Kiln's worker: its own WebAssembly instance, on its own core, computing the
// gradient of its share of a CPU training step (crate/train/parallel.rs). Messages in:
// {id, simd, config, params, shares}; out: {id, result: {grads, lossSum}} | {id, error}.
// `simd` names the WebAssembly build the worker runs (wasm.js): the helper loads the same
// one, so a shared step sums the same products whichever worker computes a share.
import { loadWasm } from './wasm.js';

let ready = null;

onmessage = async ({ data: { id, simd, config, params, shares } }) => {
  try {
    ready ??= loadWasm(simd);
    const { wasm } = await ready;
    const result = await wasm.shareGradients(config, params, shares);
    postMessage({ id, result }, [result.grads.buffer]);
  } catch (error) {
    postMessage({ id, error: String(error?.message ?? error) });
  }
};
