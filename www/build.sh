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
# Two builds of the same core (www/lib/wasm.js loads the one the browser runs): SIMD128
# alone into www/pkg/, and with relaxed SIMD (the CPU's matrix products on
# f32x4.relaxed_madd) into www/pkg/relaxed/, compiled in a target folder of its own so
# that neither build's flags make cargo rebuild the other.
build() { # build NAME OUT_DIR EXTRA_FEATURES CARGO_TARGET_DIR
  local name=$1 out=$2 features=$3 dir=$4
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=+simd128${features}" \
    cargo build --lib --target wasm32-unknown-unknown --target-dir "$dir" "${cargo_flags[@]}"
  wasm-bindgen --target web --out-dir "$out" --out-name kiln "$dir/wasm32-unknown-unknown/$profile/kiln.wasm"
  if [[ "$profile" == release ]]; then
    npx --no-install wasm-opt -O3 --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int \
      --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
      $([[ "$name" == relaxed ]] && echo --enable-relaxed-simd) \
      "$out/kiln_bg.wasm" -o "$out/kiln_bg.wasm"
  fi
  echo "built $name: $(stat -c %s "$out/kiln_bg.wasm") bytes in $out" >&2
}
build simd128 www/pkg "" "$target_dir"
mkdir -p www/pkg/relaxed
build relaxed www/pkg/relaxed ",+relaxed-simd" "$target_dir/relaxed"
# The demo page's chart library, from npm (kept out of git like the wasm).
mkdir -p www/vendor
cp node_modules/uplot/dist/uPlot.esm.js node_modules/uplot/dist/uPlot.min.css www/vendor/
ls -l www/pkg/kiln_bg.wasm www/pkg/relaxed/kiln_bg.wasm
