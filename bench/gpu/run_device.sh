#!/usr/bin/env bash
# One device job: GPU correctness tests, then seer bench beside PyTorch SDPA on the same shapes.
# Binaries are built on the CPU machine (bench/gpu/build_for_device.sh) and carried in .devbin/.
# Usage (device tool): bash bench/gpu/run_device.sh [tests|bench|all]
set -uo pipefail
what=${1:-all}
out=${OUT:-/tmp/seer-out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
if [[ $what == tests || $what == all ]]; then
  ./.devbin/seer_cuda_tests 2>&1 | tee "$out/cuda_tests.log" | grep -E '^\[measured\]|FAILED|PASSED|Failure|error' | head -60
fi
if [[ $what == bench || $what == all ]]; then
  ./.devbin/seer bench --json > "$out/bench_gqa128.json" && ./.devbin/seer bench | tail -n +1
  ./.devbin/seer bench --q-heads 9 --kv-heads 3 --head-dim 64 --lengths 8192,32768
  python3 bench/gpu/sdpa_peer.py --json-out "$out/peer_gqa128.json"
  python3 bench/gpu/sdpa_peer.py --q-heads 9 --kv-heads 3 --head-dim 64 --lengths 8192,32768
fi
