#!/usr/bin/env bash
# Compiles every CUDA source as the build does, with ptxas's report, and fails on what a kernel must
# never ship with: local-memory spills, and wgmmas that ptxas serializes (C7520: a wgmma sequence in
# what it takes for a divergent path; it cost a block-sparse variant 7-15%, bench/RESULTS.md v10).
# Usage: check_ptxas.sh NVCC SOURCE_DIR ARCH (ARCH as in SEER_CUDA_ARCHS, e.g. 90a). Needs no GPU.
set -euo pipefail
nvcc=$1 src=$2 arch=$3
cubin=$(mktemp)
trap 'rm -f "$cubin"' EXIT
failed=0
for file in "$src"/cuda/*.cu; do
  report=$("$nvcc" -I"$src" -O3 -DNDEBUG --use_fast_math --expt-relaxed-constexpr -std=c++20 \
    --generate-code=arch=compute_$arch,code=sm_$arch -Xptxas=-v -cubin -o "$cubin" "$file" 2>&1)
  bad=$(grep -E '[1-9][0-9]* bytes spill (stores|loads)|C7520' <<<"$report" || true)
  if [ -n "$bad" ]; then
    echo "FAIL $file:"
    grep -E 'Compiling entry|[1-9][0-9]* bytes spill (stores|loads)|C7520' <<<"$report" |
      grep -B1 -E '[1-9][0-9]* bytes spill|C7520' | cut -c1-240
    failed=1
  else
    echo "ok   $file ($(grep -c 'Compiling entry' <<<"$report") kernels)"
  fi
done
exit $failed
