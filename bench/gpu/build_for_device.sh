#!/usr/bin/env bash
# Builds the GPU binaries here (sm_90a, static cudart, no -march=native) into .devbin/ for the
# device tool to carry, with the shared libraries the device image lacks (OpenBLAS and its Fortran
# runtime) packed as .devbin/libs.tar.xz. Usage: bash bench/gpu/build_for_device.sh [repo-root]
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=${1:-.}
cmake -S . -B build-device -G Ninja -DCMAKE_BUILD_TYPE=Release -DSEER_NATIVE=OFF -DSEER_BUILD_BENCH=ON >/dev/null
# kv_stream: the block-sparse kernel's K/V loads without its math (bench/gpu/kv_stream.cu).
cmake --build build-device --target seer seer_cuda_tests seer_attention kv_stream
mkdir -p "$dest/.devbin"
cp build-device/src/seer build-device/tests/cuda/seer_cuda_tests build-device/src/libseer_attention.so \
  build-device/bench/kv_stream "$dest/.devbin/"
strip "$dest/.devbin/seer" "$dest/.devbin/seer_cuda_tests" "$dest/.devbin/libseer_attention.so" "$dest/.devbin/kv_stream"
libs=$(mktemp -d)
mkdir "$libs/lib"
ldd build-device/src/seer | awk '/libopenblas|libgfortran|libquadmath/ {print $3}' | xargs -I{} cp -L {} "$libs/lib/"
tar cJf "$dest/.devbin/libs.tar.xz" -C "$libs" lib
rm -rf "$libs"
