#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) and fuzzes each for a while, starting from
# small valid files (fuzz/make_seeds.py) plus whatever corpus earlier runs kept in build-fuzz/.
# Exits non-zero when a target crashes, leaks, trips a sanitizer, allocates more than 2 GB or spends
# over 10 s on one input; the input that did it is left in build-fuzz/ (crash-*, leak-*, oom-*,
# timeout-*).
#
# Usage: bash fuzz/run.sh [seconds per target, default 300] [target...]   (targets: gguf safetensors gates)
# CI runs `bash fuzz/run.sh 60`. Not part of the CMake build: it needs clang and its libFuzzer.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-300}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(gguf safetensors gates)

install() {
  echo "fuzz: installing $*"
  local sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "$@"
}
command -v clang++ >/dev/null || install clang
# libFuzzer ships in a package named after clang's major version (Debian 12: libclang-rt-14-dev).
if ! clang++ -fsanitize=fuzzer -x c++ - -o /dev/null <<<'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' 2>/dev/null; then
  install "libclang-rt-$(clang++ -dumpversion | cut -d. -f1)-dev"
fi

out=build-fuzz
mkdir -p "$out"
flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -ffp-contract=off -Isrc)
declare -A sources=(
  [gguf]="fuzz/fuzz_gguf.cpp src/formats/gguf.cpp src/formats/ggml_types.cpp src/formats/mapped_file.cpp"
  [safetensors]="fuzz/fuzz_safetensors.cpp src/formats/safetensors.cpp src/formats/hf_config.cpp src/formats/mapped_file.cpp src/gate/rope.cpp"
  [gates]="fuzz/fuzz_gates.cpp src/model/gates.cpp src/gate/attn_gate.cpp src/core/sequences.cpp src/core/atomic_file.cpp src/formats/safetensors.cpp src/formats/hf_config.cpp src/formats/mapped_file.cpp src/gate/rope.cpp"
)

python3 fuzz/make_seeds.py "$out/seeds"
for target in "${targets[@]}"; do
  [ -n "${sources[$target]:-}" ] || { echo "fuzz: unknown target '$target'" >&2; exit 2; }
  binary="$out/fuzz_$target"
  # Rebuild only when a source or header changed since the last build.
  if [ ! -x "$binary" ] || [ -n "$(find fuzz src/formats src/core src/gate src/model -newer "$binary" -print -quit)" ]; then
    echo "fuzz: building $binary"
    # shellcheck disable=SC2086  # the source list is meant to split into words
    clang++ "${flags[@]}" ${sources[$target]} -o "$binary"
  fi
  corpus="$out/corpus/$target"
  mkdir -p "$corpus"
  echo "fuzz: $target for ${seconds}s"
  "$binary" -max_total_time="$seconds" -max_len=8192 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -dict="fuzz/$target.dict" -artifact_prefix="$out/" "$corpus" "$out/seeds/$target" 2>"$out/$target.log" || {
    tail -n 60 "$out/$target.log" >&2
    echo "fuzz: $target FAILED (log: $out/$target.log)" >&2
    exit 1
  }
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$out/$target.log" | sed "s/^/fuzz: $target /"
  echo "fuzz: $target ok, corpus $(find "$corpus" -type f | wc -l) inputs"
done
