#!/usr/bin/env bash
# Builds the wasm core into www/pkg/ (wasm-bindgen --target web).
#   bash www/build.sh            dev profile (fast to build; what the browser tests use)
#   bash www/build.sh --release  release profile, then wasm-opt -O3 from npm's binaryen (-O3, not
#                                -Oz: the CPU backend trains 6–8% faster for 2% more bytes)
#                                (Debian's wasm-opt breaks wasm-bindgen 0.2.130 output)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=debug
cargo_flags=()
if [[ "${1:-}" == "--release" ]]; then
  profile=release
  cargo_flags=(--release)
fi
# cargo writes where CARGO_TARGET_DIR says (relative paths are relative to this folder).
target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --lib --target wasm32-unknown-unknown "${cargo_flags[@]}"
wasm-bindgen --target web --out-dir www/pkg --out-name kiln \
  "$target_dir/wasm32-unknown-unknown/$profile/kiln.wasm"
if [[ "$profile" == release ]]; then
  npx --no-install wasm-opt -O3 --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
    www/pkg/kiln_bg.wasm -o www/pkg/kiln_bg.wasm
fi
# The demo page's chart library, from npm (kept out of git like the wasm).
mkdir -p www/vendor
cp node_modules/uplot/dist/uPlot.esm.js node_modules/uplot/dist/uPlot.min.css www/vendor/
ls -l www/pkg/kiln_bg.wasm
