// A helper of Kiln's worker: its own WebAssembly instance, on its own core, computing the
// gradient of its share of a CPU training step (crate/train/parallel.rs). Messages in:
// {id, config, params, shares}; out: {id, result: {grads, lossSum}} | {id, error}.
import init, { shareGradients } from '../pkg/kiln.js';

const ready = init();

onmessage = async ({ data: { id, config, params, shares } }) => {
  try {
    await ready;
    const result = await shareGradients(config, params, shares);
    postMessage({ id, result }, [result.grads.buffer]);
  } catch (error) {
    postMessage({ id, error: String(error?.message ?? error) });
  }
};
