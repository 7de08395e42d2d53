#!/usr/bin/env bash
# `npm test`: sets up what is missing, then lint, native tests on lavapipe, the wasm
# build, and the browser tests in headless Chromium on its WebGPU adapter (SwiftShader).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh all
# lavapipe warns when XDG_RUNTIME_DIR is unset or unusable.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy (native and wasm32)"
cargo clippy --all-targets -- -D warnings
cargo clippy --lib --target wasm32-unknown-unknown -- -D warnings
# the relaxed-SIMD build too (www/build.sh), in its own target folder as there
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd" \
  cargo clippy --lib --target wasm32-unknown-unknown --target-dir "${CARGO_TARGET_DIR:-target}/relaxed" -- -D warnings
echo "== native tests (GPU kernels on $(ls /usr/share/vulkan/icd.d/ 2>/dev/null | grep -o lvp | head -1 || echo vulkan))"
cargo test -- --nocapture --test-threads=1
echo "== wasm build (release: the browser tests train for minutes, and npm pack needs it anyway)"
bash www/build.sh --release
echo "== browser tests (headless Chromium, WebGPU on SwiftShader)"
log="$(mktemp)"
if ! node --test tests/browser/ 2>&1 | tee "$log"; then
  # a CI log keeps its head and its tail: the failures again, last, with their errors
  echo "== failed browser tests"
  awk '/^not ok/ { on = 1 } on { print } on && /^  \.\.\.$/ { on = 0 }' "$log"
  exit 1
fi
