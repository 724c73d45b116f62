#!/usr/bin/env bash
# The README's first command: installs what it needs, builds, and runs the scaled batch-size
# ablation of paper 000 (build/examples/paper000-batch-size) on Fashion-MNIST when it can get it
# (Debian package dataset-fashion-mnist), else on the built-in synthetic task. It prints S_R, S_E
# and test accuracy per batch size and the path of the figure. Arguments go to the binary
# (e.g. --epochs 20 --seeds 0,1,2, or --paper for the paper's protocol; --help lists them all).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
# Data and plotting: wanted, not required (the demo falls back to synthetic data / prints how to plot).
bash scripts/deps.sh --optional dataset-fashion-mnist python3-matplotlib || true
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j "$(nproc)" --target paper000-batch-size
exec ./build/examples/paper000-batch-size "$@"
