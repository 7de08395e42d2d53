#!/usr/bin/env bash
# Does the page train as fast with its inspection views closed as it did before they
# existed? Builds the page at BEFORE (default: the commit before the views, 50479b9) in a
# git worktree beside this one, then times both pages in one run, alternating
# (views.mjs). Prints JSON.
#   bash tests/bench/views.sh [BEFORE] [--gpu]
set -euo pipefail
cd "$(dirname "$0")/../.."
before="${1:-50479b9}"
shift || true
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
bash tests/setup.sh web >&2
tree="${KILN_BEFORE_TREE:-/tmp/kiln-before-$before}"
if [[ ! -d "$tree" ]]; then
  git worktree add --detach "$tree" "$before" >&2
fi
# the same node_modules (wasm-opt) and target folder: only the kiln crate is rebuilt
ln -sfn "$PWD/node_modules" "$tree/node_modules"
target="${CARGO_TARGET_DIR:-$PWD/target}"
if [[ ! -f "$tree/www/pkg/kiln_bg.wasm" ]]; then
  (cd "$tree" && CARGO_TARGET_DIR="$target" bash www/build.sh --release) >&2
fi
if [[ ! -f www/pkg/kiln_bg.wasm ]]; then
  bash www/build.sh --release >&2
fi
node tests/bench/views.mjs --before "$tree/www" "$@"
