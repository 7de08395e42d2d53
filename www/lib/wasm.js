// Kiln's two WebAssembly builds, and which one this browser runs. Wasm has no run-time
// feature test inside a module, so the core is built twice (www/build.sh): with relaxed
// SIMD (pkg/relaxed/: the CPU backend's matrix products on f32x4.relaxed_madd, one fused
// multiply-add where the other build multiplies, then adds) and with SIMD128 alone (pkg/).
// The engine is asked whether it validates a tiny module using relaxed_madd; the checks
// in tests/browser/cpu_kernels.test.mjs hold both builds to the same twins.

/** A module with one function, (v128, v128, v128) → v128 = f32x4.relaxed_madd of its
 * arguments: valid only where the engine has relaxed SIMD. */
const RELAXED_PROBE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // \0asm, version 1
  0x01, 0x08, 0x01, 0x60, 0x03, 0x7b, 0x7b, 0x7b, 0x01, 0x7b, // type: (v128 ×3) → v128
  0x03, 0x02, 0x01, 0x00, // function 0 of that type
  0x0a, 0x0d, 0x01, 0x0b, 0x00, // code: one body of 11 bytes, no locals
  0x20, 0x00, 0x20, 0x01, 0x20, 0x02, // local.get 0, 1, 2
  0xfd, 0x85, 0x02, // f32x4.relaxed_madd (0xfd 0x105)
  0x0b, // end
]);

/** Whether this engine runs relaxed SIMD. */
export function hasRelaxedSimd() {
  try {
    return WebAssembly.validate(RELAXED_PROBE);
  } catch {
    return false;
  }
}

/** The builds, by the name `simd` options and the badge use. */
export const SIMD_BUILDS = ['relaxed', 'simd128'];

/** Loads and starts a build: `simd` 'relaxed' or 'simd128' forces one (tests, benchmarks),
 * anything else takes relaxed SIMD where the engine has it. Returns {wasm, simd}: the
 * build's module (its exports) and its name. */
export async function loadWasm(simd) {
  if (simd != null && !SIMD_BUILDS.includes(simd)) {
    throw Object.assign(new Error(`simd ${JSON.stringify(simd)}: choose ${SIMD_BUILDS.join(' or ')}`), { name: 'config' });
  }
  const relaxed = simd == null ? hasRelaxedSimd() : simd === 'relaxed';
  if (relaxed && !hasRelaxedSimd()) {
    throw Object.assign(new Error('this browser has no relaxed SIMD: choose simd128'), { name: 'config' });
  }
  // literal paths, so that bundlers see both builds
  const wasm = relaxed ? await import('../pkg/relaxed/kiln.js') : await import('../pkg/kiln.js');
  await wasm.default();
  return { wasm, simd: relaxed ? 'relaxed' : 'simd128' };
}
