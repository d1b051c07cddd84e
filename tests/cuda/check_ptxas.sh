#!/usr/bin/env bash
# Compiles every CUDA source with ptxas's report and fails on what a kernel must never ship with:
# local-memory spills, and wgmmas that ptxas serializes (any "wgmma.mma_async instructions are
# serialized" report: C7520, a wgmma sequence in what it takes for a divergent path, cost a
# block-sparse variant 7-15%, bench/RESULTS.md v10; C7515 and the others, registers a wgmma uses
# defined by other instructions). The flags mirror src/cuda/CMakeLists.txt. Needs no GPU.
# Usage: check_ptxas.sh NVCC SOURCE_DIR ARCHS (SEER_CUDA_ARCHS: e.g. 90a, or a list 90a;100a).
set -uo pipefail
nvcc=$1 src=$2 archs=$3
cubin=$(mktemp)
trap 'rm -f "$cubin"' EXIT
bad_pattern='[1-9][0-9]* bytes spill (stores|loads)|wgmma\.mma_async instructions are serialized'
failed=0
for arch in ${archs//;/ }; do
  arch=${arch%-real}
  arch=${arch%-virtual}
  for file in "$src"/cuda/*.cu; do
    if ! report=$("$nvcc" -I"$src" -O3 -DNDEBUG --use_fast_math --expt-relaxed-constexpr -std=c++20 \
        --generate-code=arch=compute_$arch,code=sm_$arch -Xptxas=-v -cubin -o "$cubin" "$file" 2>&1); then
      echo "FAIL $file (sm_$arch): nvcc failed"
      echo "$report" | tail -20
      failed=1
    elif grep -qE "$bad_pattern" <<<"$report"; then
      echo "FAIL $file (sm_$arch):"
      grep -E "Compiling entry|$bad_pattern" <<<"$report" | grep -B1 -E "$bad_pattern" | cut -c1-240
      failed=1
    else
      echo "ok   $file (sm_$arch, $(grep -c 'Compiling entry' <<<"$report") kernels)"
    fi
  done
done
exit $failed
