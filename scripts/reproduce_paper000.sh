#!/usr/bin/env bash
# Builds the paper 000 reproductions and runs all six for the MLP and TinyCNN, writing
# results/paper000-<experiment>-<arch>/ (CSV, JSON, PNG). Extra arguments go to every binary,
# e.g. --paper for the paper's protocol (hours on 2 cores) or --epochs 5 for a quicker pass.
# docs/reproductions.md shows the tables this printed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/deps.sh --optional dataset-fashion-mnist python3-matplotlib || true
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
targets=(batch-size learning-rate dynamics optimizers alignment rescaling)
cmake --build build -j "$(nproc)" --target "${targets[@]/#/paper000-}"
for arch in mlp cnn; do
  for t in "${targets[@]}"; do
    echo "=== paper000-$t --arch $arch $*"
    ./build/examples/paper000-"$t" --arch "$arch" --quiet "$@"
  done
done
