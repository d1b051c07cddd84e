#!/usr/bin/env bash
# The order in which ptxas scheduled a CUDA source's wgmmas (HGMMA), wgmma waits (WARPGROUP.DEPBAR),
# exponentials (MUFU.EX2), mbarrier waits and branches, one line per run of equal instructions, per
# kernel: what to read before timing a change to a consumer's pipeline (bench/RESULTS.md, v17 and
# "The softmax's exponentials after the P V wait"). Needs no GPU: nvcc from the CUDA toolkit, and
# nvdisasm from the PyPI wheel nvidia-cuda-nvdisasm, downloaded once into build/tools.
# Usage: scripts/sass_outline.sh FILE.cu [KERNEL-NAME-SUBSTRING]
#   FILE.cu includes headers under src/ and instantiates the kernels to look at, as
#   bench/gpu/sass_flash.cu does for the FlashAttention kernels.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '7,9p' "$0"; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
src=$1 filter=${2:-}
tools=$root/build/tools
nvdisasm=$(find "$tools" -name nvdisasm -type f 2>/dev/null | head -1 || true)
if [ -z "$nvdisasm" ]; then
  mkdir -p "$tools"
  # nvdisasm reads the cubins of any older nvcc; the newest wheel is what the index offers.
  python3 -m pip download --no-deps --quiet --dest "$tools" nvidia-cuda-nvdisasm
  python3 -m zipfile -e "$(ls "$tools"/nvidia_cuda_nvdisasm-*.whl | tail -1)" "$tools/nvdisasm-wheel"
  nvdisasm=$(find "$tools" -name nvdisasm -type f | head -1)
  chmod +x "$nvdisasm"
fi
cubin=$(mktemp --suffix .cubin)
trap 'rm -f "$cubin"' EXIT
nvcc -I"$root/src" -O3 -DNDEBUG --use_fast_math --expt-relaxed-constexpr -std=c++20 \
  --generate-code=arch=compute_90a,code=sm_90a -cubin -o "$cubin" "$src"
"$nvdisasm" -c "$cubin" | awk -v filter="$filter" '
  function flush() { if (prev != "") print "  " prev " x" count; prev = "" }
  /^[ \t]*\.text\./ {
    flush(); show = (filter == "" || index($0, filter) > 0); if (show) print "== " $0; next
  }
  show && match($0, /(HGMMA\.[0-9x]+|WARPGROUP\.DEPBAR\.LE gsb0, 0x[0-9]|WARPGROUP\.ARRIVE|MUFU\.EX2)/) ||
      show && match($0, /(SYNCS\.PHASECHK|BRA)/) {
    op = substr($0, RSTART, RLENGTH)
    if (op == prev) { count++ } else { flush(); prev = op; count = 1 }
  }
  END { flush() }'
