#!/usr/bin/env bash
# LoRA on a model of SmolLM2-135M's shape (context 512), Kiln beside PyTorch + PEFT, in
# one run on this machine: memory estimated and measured (Kiln's GPU backend) for LoRA
# and full fine-tuning, and LoRA SFT tokens/s on the CPU (2 threads each). Prints one
# JSON document. By hand: bash tests/bench/lora.sh [--batch 4] [--steps 3]
#   KILN_BENCH_PYTHON=/path/to/python   a Python with torch, transformers and peft
set -euo pipefail
cd "$(dirname "$0")/../.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
batch=4 steps=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --batch) batch="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    *) echo "lora.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p target/bench
cargo build --release --bin kiln >&2
kiln="${CARGO_TARGET_DIR:-target}/release/kiln"
RAYON_NUM_THREADS=2 "$kiln" bench lora --batch "$batch" --steps "$steps" > target/bench/lora.json
python="${KILN_BENCH_PYTHON:-$HOME/.cache/kiln/torch/bin/python}"
if ! "$python" -c "import torch, transformers, peft" 2>/dev/null; then
  echo "bench: installing PyTorch, transformers and PEFT into ~/.cache/kiln/torch (once)" >&2
  python3 -m venv "$HOME/.cache/kiln/torch"
  "$HOME/.cache/kiln/torch/bin/pip" install -q torch transformers peft
  python="$HOME/.cache/kiln/torch/bin/python"
fi
"$python" tests/bench/torch_lora.py --batch "$batch" --steps "$steps" --threads 2 > target/bench/torch_lora.json
node -e '
const fs = require("fs");
const kiln = JSON.parse(fs.readFileSync("target/bench/lora.json", "utf8"));
const torch = JSON.parse(fs.readFileSync("target/bench/torch_lora.json", "utf8"));
const cpu = fs.readFileSync("/proc/cpuinfo", "utf8");
const model = (cpu.match(/model name\s*:\s*(.*)/) || [])[1];
const flags = ((cpu.match(/flags\s*:\s*(.*)/) || [])[1] || "").split(" ").filter((f) => /^(avx|fma|f16c)/.test(f));
console.log(JSON.stringify({ cpu: model, instruction_sets: flags, kiln, torch,
  cpu_lora_ratio: kiln.cpu_lora_tokens_per_s / torch.tokens_per_s }, null, 2));
'
