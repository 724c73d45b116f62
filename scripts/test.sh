#!/usr/bin/env bash
# Builds everything and runs the whole test suite, then checks that an installed curvature works
# through find_package from a separate consumer project.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCURVATURE_WERROR="${CURVATURE_WERROR:-OFF}"
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"
rm -rf build/_install build/_consumer
cmake --install build --prefix build/_install > /dev/null
cmake -S tests/consumer -B build/_consumer -DCMAKE_PREFIX_PATH="$PWD/build/_install" > /dev/null
cmake --build build/_consumer -j "$jobs" > /dev/null
./build/_consumer/consumer
echo "consumer project: OK"
