#!/usr/bin/env bash
# Builds and runs the demo (examples/demo.cpp -> build/examples/demo); arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
if [ -f examples/demo.cpp ]; then
  cmake --build build -j "$(nproc)" --target demo
else
  cmake --build build -j "$(nproc)"  # no demo target yet: build what exists
fi
if [ ! -x build/examples/demo ]; then
  echo "demo.sh: build/examples/demo was not built (is examples/demo.cpp there?)" >&2
  exit 1
fi
exec ./build/examples/demo "$@"
