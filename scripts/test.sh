#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite (CPU; CUDA sources are compiled when nvcc exists).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh build
ctest --test-dir build --output-on-failure -j"$(nproc)"
