#!/usr/bin/env bash
# Installs what Kiln needs, and only what is missing, so running it again is cheap.
#   bash tests/setup.sh web      Rust's wasm32 target, wasm-bindgen-cli at Cargo.lock's
#                                version, npm packages (what `npm start` needs)
#   bash tests/setup.sh native   lavapipe (Mesa's CPU Vulkan) for the native GPU tests
#   bash tests/setup.sh all      both, plus Chromium, clippy and rustfmt (what `npm test` needs)
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-all}"
case "$mode" in web | native | all) ;; *) echo "usage: $0 web|native|all" >&2; exit 2 ;; esac
sudo=""
if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi

# Debian packages: lavapipe for native WebGPU-on-Vulkan, Chromium for the browser tests.
packages=()
if [[ "$mode" != web ]] && ! dpkg -s mesa-vulkan-drivers >/dev/null 2>&1; then
  packages+=(mesa-vulkan-drivers)
fi
if [[ "$mode" == all ]] && [[ ! -x /usr/bin/chromium ]]; then
  packages+=(chromium)
fi
# A CJK font, so the page's Chinese text shows in the tests' screenshots.
if [[ "$mode" == all ]] && ! dpkg -s fonts-wqy-zenhei >/dev/null 2>&1; then
  packages+=(fonts-wqy-zenhei)
fi
if ((${#packages[@]})); then
  echo "setup: installing ${packages[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
fi

# Rust components and the wasm toolchain.
if [[ "$mode" == all ]]; then
  for component in clippy rustfmt; do
    rustup component list --installed | grep -q "^$component" || rustup component add "$component"
  done
fi
if [[ "$mode" != native ]]; then
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
  fi
  # wasm-bindgen-cli must be exactly the wasm-bindgen in Cargo.lock. (--locked fails:
  # one of its locked dependencies is gone from the registry.)
  want="$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')"
  have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
  if [[ "$have" != "$want" ]]; then
    echo "setup: installing wasm-bindgen-cli $want (found '${have:-none}')"
    cargo install wasm-bindgen-cli --version "$want"
  fi
  # npm packages, from package-lock.json.
  if [[ ! -f node_modules/.package-lock.json ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
    npm ci --no-audit --no-fund
  fi
fi
