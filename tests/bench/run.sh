#!/usr/bin/env bash
# `npm run bench`: matmul and training benchmarks in one run on this machine, side by
# side with PyTorch (CPU, 2 threads) training the same presets (whole steps, and op by op),
# the preference stages' rollouts and updates, and the browser (both WebAssembly builds). Prints one JSON document
# and keeps the parts in target/bench/. Options: --quick (tiny and small only).
#   KILN_BENCH_PYTHON=/path/to/python   a Python with torch and transformers to use; else a
#                                      virtual environment in ~/.cache/kiln/torch is made once.
#   KILN_BENCH_TORCH=skip              leave PyTorch out.
set -euo pipefail
cd "$(dirname "$0")/../.."
quick=()
if [[ "${1:-}" == "--quick" ]]; then quick=(--quick); fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
mkdir -p target/bench
cargo build --release --bin kiln
kiln="${CARGO_TARGET_DIR:-target}/release/kiln"
"$kiln" bench matmul "${quick[@]}" > target/bench/matmul.json
"$kiln" bench train "${quick[@]}" > target/bench/train.json
"$kiln" bench align > target/bench/align.json
rm -f target/bench/torch.json
if [[ "${KILN_BENCH_TORCH:-}" != skip ]]; then
  python="${KILN_BENCH_PYTHON:-$HOME/.cache/kiln/torch/bin/python}"
  if ! "$python" -c "import torch, transformers" 2>/dev/null; then
    echo "bench: installing PyTorch and transformers into ~/.cache/kiln/torch (once)" >&2
    python3 -m venv "$HOME/.cache/kiln/torch"
    "$HOME/.cache/kiln/torch/bin/pip" install -q torch transformers
    python="$HOME/.cache/kiln/torch/bin/python"
  fi
  "$python" tests/bench/torch_train.py "${quick[@]}" > target/bench/torch.json
  # op by op against torch.profiler, the same presets
  presets=tiny,small,base
  if [[ ${#quick[@]} -gt 0 ]]; then presets=tiny,small; fi
  KILN_BENCH_PYTHON="$python" bash tests/bench/profile.sh "$presets" > target/bench/profile.json
else
  rm -f target/bench/profile.json
fi
# the browser: the release wasm (wasm-opt -Oz) in headless Chromium
bash tests/setup.sh all
bash www/build.sh --release >&2
node tests/bench/browser.mjs "${quick[@]}" > target/bench/browser.json
node tests/bench/merge.mjs target/bench
