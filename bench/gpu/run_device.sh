#!/usr/bin/env bash
# One device job: GPU correctness tests, then seer bench beside PyTorch SDPA on the same shapes.
# Binaries are built on the CPU machine (bench/gpu/build_for_device.sh) and carried in .devbin/.
# Usage (device tool): bash bench/gpu/run_device.sh [tests] [bench] [peer] [sanitize]
set -uo pipefail
steps=${*:-tests bench peer}
out=${OUT:-/tmp/seer-out}
mkdir -p "$out"
has() { [[ " $steps " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
if has tests; then
  ./.devbin/seer_cuda_tests 2>&1 | tee "$out/cuda_tests.log" | grep -E '^\[measured\]|FAILED|PASSED|Failure|rror' | head -60
fi
if has bench; then
  ./.devbin/seer bench --json > "$out/bench_gqa128.json"
  ./.devbin/seer bench
  ./.devbin/seer bench --q-heads 9 --kv-heads 3 --head-dim 64 --lengths 8192,32768
fi
if has peer; then
  python3 bench/gpu/sdpa_peer.py --json-out "$out/peer_gqa128.json"
  python3 bench/gpu/sdpa_peer.py --q-heads 9 --kv-heads 3 --head-dim 64 --lengths 8192,32768
fi
if has sanitize; then
  for tool in memcheck racecheck; do
    compute-sanitizer --tool $tool --print-limit 5 ./.devbin/seer bench --lengths 300,1000 --q-heads 4 \
      --kv-heads 2 --head-dim 128 --seconds 0.001 --densities 0.3 2>&1 | tail -1
  done
fi
