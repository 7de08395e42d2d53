#!/usr/bin/env bash
# Kiln's CPU backend and PyTorch, op by op, on the same preset, batch (8) and threads (2),
# in one run: `kiln bench profile --backend cpu` and tests/bench/torch_profile.py, joined
# into one JSON table per preset (seconds over 3 steps each side, and PyTorch ÷ Kiln:
# above 1, Kiln is faster at that op). Kiln's sum_rows (bias gradients) counts as matmul,
# where PyTorch's addmm backward does that work.
#   bash tests/bench/profile.sh [tiny,small,base]   (KILN_BENCH_PYTHON as in run.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
presets="${1:-tiny,small,base}"
python="${KILN_BENCH_PYTHON:-$HOME/.cache/kiln/torch/bin/python}"
cargo build --release --bin kiln >&2
kiln="${CARGO_TARGET_DIR:-target}/release/kiln"
mkdir -p target/bench
for p in ${presets//,/ }; do
  "$kiln" bench profile --preset "$p" --backend cpu > "target/bench/profile-kiln-$p.json"
  (cd tests/bench && "$python" torch_profile.py --preset "$p" 2>/dev/null) > "target/bench/profile-torch-$p.json"
done
"$python" - "$presets" <<'PY'
import json, sys
out = {"cpu": open("/proc/cpuinfo").read().split("model name")[1].split(":")[1].split("\n")[0].strip(), "presets": {}}
for p in sys.argv[1].split(","):
    kiln = {}
    for r in json.load(open(f"target/bench/profile-kiln-{p}.json")):
        op = "matmul" if r["kernel"] == "sum_rows" else "residual" if r["kernel"] == "residual_forward" else r["kernel"]
        kiln[op] = kiln.get(op, 0.0) + r["seconds"]
    torch = {r["op"]: r["seconds"] for r in json.load(open(f"target/bench/profile-torch-{p}.json"))["ops"]}
    rows = []
    for op in sorted(set(kiln) | set(torch), key=lambda o: -(kiln.get(o, 0) + torch.get(o, 0))):
        k, t = kiln.get(op), torch.get(op)
        rows.append({"op": op, "kiln_s": k, "torch_s": t, "torch_over_kiln": (t / k) if k and t else None})
    total_k, total_t = sum(kiln.values()), sum(torch.values())
    out["presets"][p] = {"ops": rows, "kiln_s": total_k, "torch_s": total_t, "torch_over_kiln": total_t / total_k}
print(json.dumps(out, indent=1))
PY
