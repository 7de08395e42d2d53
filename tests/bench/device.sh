#!/usr/bin/env bash
# The benchmarks for a machine with a real GPU, natively on Vulkan: matmul GFLOP/s with
# the share of the GPU's fp32 peak (2048³ and 4096³ included), training tokens/s of the
# presets on the GPU and on the CPU backend (all cores), and where a GPU step's time goes.
# Prints one JSON document on stdout; progress goes to stderr.
#   bash tests/bench/device.sh                         build with cargo here, then run
#   KILN_BIN=path/to/kiln bash tests/bench/device.sh   run a kiln built elsewhere (for a
#                                                      machine that cannot reach crates.io)
#   KILN_FP32_PEAK_GFLOPS=N                            the peak, where the adapter's name is
#                                                      not in crate/bench.rs's short table
set -euo pipefail
cd "$(dirname "$0")/../.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
kiln="${KILN_BIN:-}"
if [[ -z "$kiln" ]]; then
  cargo build --release --bin kiln >&2
  kiln="${CARGO_TARGET_DIR:-target}/release/kiln"
fi
out="${KILN_BENCH_OUT:-target/bench/device}"
mkdir -p "$out"
"$kiln" info > "$out/info.txt" 2>&1 || { cat "$out/info.txt" >&2; echo "device.sh: no Vulkan adapter" >&2; exit 1; }
cat "$out/info.txt" >&2
"$kiln" bench matmul --large > "$out/matmul.json"
"$kiln" bench train > "$out/train.json"
"$kiln" bench profile --preset base > "$out/profile-base.json"
"$kiln" bench profile --preset tiny > "$out/profile-tiny.json"
printf '{"benchmark": "device", "matmul": %s, "train": %s, "profile_base": %s, "profile_tiny": %s}\n' \
  "$(cat "$out/matmul.json")" "$(cat "$out/train.json")" "$(cat "$out/profile-base.json")" "$(cat "$out/profile-tiny.json")"
