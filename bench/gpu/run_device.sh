#!/usr/bin/env bash
# One device job, steps chosen by name (bench/gpu/README.md):
#   tests     GPU correctness tests of every kernel (seer_cuda_tests), and of the C interface from
#             Python (tests/cuda/test_seer_attention.py)
#   bench     seer bench, d = 128 (32/8 heads) and d = 64 (9/3 heads); kv_stream (the K/V loads alone)
#   multi     on a machine of several GPUs (the device tool's nvidia-h200-x2 or larger): the GPU
#             links, the tensor- and data-parallel tests, and seer bench-model on 1 GPU and on all
#             of them (Llama-3-8B shape up to 128k), then the 70B shape at 32k on all of them
#   multi-model  on several GPUs and the staged built-in model: perplexity (dense, SeerAttention)
#             and greedy generation on 1 GPU and split over 2 (its 3 KV heads as 1 + 2), and
#             train-gates data-parallel on 2 GPUs against 1 GPU on the same sequences, and resumed
#   peer      PyTorch SDPA on the same shapes
#   energy    dense and block-sparse sustained at 32k (bench/gpu/energy.py): time, power, SM clock
#             and energy per call, the block-sparse masks random, exact-k and paired
#   sanitize  compute-sanitizer memcheck and racecheck over every kernel
#   model     reassemble the staged built-in model in /tmp/seer (stage_model.sh) and run the GPU
#             model tests against it
#   train     seer train-gates on the staged training books -> $OUT (SEER_TRAIN_ARGS overrides
#             the schedule: the shipped gates' is the default)
#   calibrate seer calibrate: per-layer top-p budgets of the gates (the train step's, else the
#             shipped ones) on the staged training books -> $OUT/gates.safetensors (gates + budgets)
#   eval      seer eval-sparsity with those gates on the staged dev books -> $OUT/ACCURACY.md
#             (its (p*) rows and pass keys need budgets: after train, run calibrate too;
#             SEER_EVAL_ARGS overrides the methods and their settings: the full table's are the
#             default, and a gate experiment's "--methods a,a+,p+,p* --passkey-trials 400
#             --passkey-methods a,a+,p+,p* --recall" takes about half its time)
#   sweep     gate variants from the file SEER_SWEEP, a line each: NAME and its train-gates gate
#             flags (e.g. "bias0 --block-bias --skip-fraction 0"; # comments); all train in one
#             train-gates run (the first as its main gates, the rest as --variant), on
#             SEER_TRAIN_ARGS's shared settings (steps, batch, target pooling; its gate flags, such
#             as the default's --skip-fraction 0, reach the first line only: a --variant starts
#             from train-gates' defaults), then each is calibrated -> $OUT/NAME.csv, and
#             /tmp/seer/NAME.cal.safetensors stays for sweep-eval
#   sweep-eval  eval-sparsity (SEER_EVAL_ARGS, else a gate experiment's methods) of each calibrated
#             variant of SEER_SWEEP, or of those SEER_SWEEP_EVAL names -> $OUT/NAME.md; a later call
#             on the warm machine, as a sweep's training and evaluations together outlast one call
set -uo pipefail
steps=${*:-tests bench peer}
out=${OUT:-/tmp/seer-out}
mkdir -p "$out"
has() { [[ " $steps " == *" $1 "* ]]; }
# Each program runs under a time limit, so that a hung kernel costs minutes, not the session's
# whole device budget (a deadlocked pipeline otherwise runs until the device tool's own limit). The
# notice goes to the job's own stdout (fd 3), past any grep the program's output is piped into.
exec 3>&1
run_for() {
  local seconds=$1
  shift
  timeout --signal=KILL "$seconds" "$@"
  local rc=$?
  [ $rc -eq 137 ] && echo "run_device.sh: killed after $seconds s (hung?): $*" >&3
  return $rc
}
# (.devbin: libseer_attention.so, for seer_cuda_tests and sdpa_peer.py)
mkdir -p /tmp/seer && tar xJf .devbin/libs.tar.xz -C /tmp/seer && export LD_LIBRARY_PATH=/tmp/seer/lib:$PWD/.devbin
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
if has tests; then
  run_for 300 ./.devbin/seer_cuda_tests --gtest_filter=-CudaLlama.* 2>&1 | tee "$out/cuda_tests.log" |
    grep -E '^\[measured\]|FAILED|PASSED|Failure|rror' | head -60
  SEER_ATTENTION_LIB=.devbin/libseer_attention.so run_for 120 python3 tests/cuda/test_seer_attention.py
fi
if has bench; then
  run_for 120 ./.devbin/seer bench --json > "$out/bench_gqa128.json"
  run_for 120 ./.devbin/seer bench
  run_for 60 ./.devbin/seer bench --q-heads 9 --kv-heads 3 --head-dim 64 --lengths 8192,32768
  # The block-sparse kernel's K/V loads alone at 32k: the time a tile of d = 128 cannot beat.
  run_for 60 ./.devbin/kv_stream 32768
fi
if has peer; then
  # Also seer's dense alternating with cuDNN in one process, through the C interface.
  run_for 180 python3 bench/gpu/sdpa_peer.py --seer-lib .devbin/libseer_attention.so --json-out "$out/peer_gqa128.json"
  run_for 90 python3 bench/gpu/sdpa_peer.py --seer-lib .devbin/libseer_attention.so --q-heads 9 --kv-heads 3 \
    --head-dim 64 --lengths 8192,32768
fi
if has energy; then
  run_for 240 python3 bench/gpu/energy.py --seer-lib .devbin/libseer_attention.so --json-out "$out/energy.json"
fi
if has sanitize; then
  # Both head dims: their block-sparse kernels differ (one 64-key block per tile at d = 128, pairs at 64).
  for heads in "4 2 128" "8 2 64"; do
    read -r hq hkv d <<< "$heads"
    for tool in memcheck racecheck; do
      echo "compute-sanitizer $tool, d = $d:"
      run_for 120 compute-sanitizer --tool $tool --print-limit 5 ./.devbin/seer bench --lengths 300,1000 --q-heads $hq \
        --kv-heads $hkv --head-dim $d --seconds 0.001 --densities 0.3 2>&1 | tail -1
    done
  done
fi
# seer loads libnccl.so.2 at run time (several GPUs); the device image has it with PyTorch
# (nvidia-nccl-cu13).
nccl=$(find /opt /usr -name 'libnccl.so.2' 2>/dev/null | head -1)
[ -n "$nccl" ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$(dirname "$nccl")
export NCCL_NVLS_ENABLE=0  # NVLink multicast stays off on shared hosts (the device tool's KINDS.md)
gpus=$(nvidia-smi -L | wc -l)
if has multi; then
  echo "GPUs: $gpus; NCCL: ${nccl:-not found}"
  nvidia-smi topo -m
  run_for 300 ./.devbin/seer_cuda_tests --gtest_filter='TensorParallelCuda.*' 2>&1 | tee "$out/multi_tests.log" |
    grep -E '^\[measured\]|FAILED|PASSED|Failure|rror|SKIPPED'
  for g in 1 $gpus; do
    run_for 240 ./.devbin/seer bench-model --gpus $g --lengths 8192,32768,131072 --repeats 2 --decode-tokens 32 \
      --train-steps 3 2>&1 | tee "$out/bench_model_${g}gpu.txt"
  done
  [ "$gpus" -ge 2 ] && run_for 240 ./.devbin/seer bench-model --shape 70b --gpus $gpus --lengths 32768 --repeats 2 \
    --decode-tokens 16 --train-steps 0 2>&1 | tee "$out/bench_model_70b.txt"
fi
if has model || has multi-model || has train || has calibrate || has eval || has sweep || has sweep-eval; then
  [ -f /tmp/seer/model.gguf ] || { cp .xfer3/* /tmp/seer/ && cat /tmp/seer/model.part0? > /tmp/seer/model.gguf; }
  [ -d /tmp/seer/train ] || tar xJf /tmp/seer/train.tar.xz -C /tmp/seer
  sha256sum /tmp/seer/model.gguf
  export SEER_MODEL=/tmp/seer/model.gguf
fi
# seer's gate commands on the staged model and books, as every step below runs them: train-gates
# (SECONDS, then its flags), calibrate (SECONDS GATES OUT) and eval-sparsity (SECONDS GATES OUT, then
# its method flags) on the dev books, with their progress lines dropped.
train_gates() {
  local seconds=$1
  shift
  run_for "$seconds" ./.devbin/seer train-gates --model "$SEER_MODEL" --data /tmp/seer/train "$@" 2>&1 | tr '\r' '\n'
}
calibrate_gates() {
  run_for "$1" ./.devbin/seer calibrate --model "$SEER_MODEL" --gates "$2" --data /tmp/seer/train --out "$3" 2>&1 |
    tr '\r' '\n' | grep -v '^calibrate: layer'
}
evaluate_gates() {
  run_for "$1" ./.devbin/seer eval-sparsity --model "$SEER_MODEL" --gates "$2" --data /tmp/seer/dev --windows-per-book 2 \
    --masses 0.5,0.6,0.7,0.8,0.9,0.95 "${@:4}" --out "$3" 2>&1 | tr '\r' '\n' |
    grep -vE '^(eval-sparsity: window|pass key: trial)'
}
if has model; then
  run_for 300 ./.devbin/seer_cuda_tests --gtest_filter=CudaLlama.* 2>&1 | grep -E '^\[measured\]|FAILED|PASSED|Failure|rror'
fi
if has multi-model; then
  book=/tmp/seer/dev/$(ls /tmp/seer/dev | head -1)
  # The shipped gates, named (they are the default only for the model at its usual path).
  declare -A gates_of=([dense]="" [seer]="--gates gates/smollm2-135m-instruct.safetensors")
  for attn in dense seer; do
    for g in 1 2; do
      echo "perplexity, $attn, $g GPU(s):"
      run_for 120 ./.devbin/seer perplexity "$book" --model "$SEER_MODEL" --device cuda --gpus $g --attn $attn \
        ${gates_of[$attn]} --max-windows 6 --json 2>&1 |
        grep -E '^  "(ppl|mean_density|gpus|tokens_per_second)"|error'
    done
  done
  for attn in dense seer; do
    for g in 1 2; do
      run_for 60 ./.devbin/seer generate --model "$SEER_MODEL" --device cuda --gpus $g --temperature 0 --max-tokens 40 \
        --attn $attn ${gates_of[$attn]} --prompt "The old house at the end of the lane had been empty for years, until" 2>&1
    done
  done
  # Data-parallel training: 2 GPUs x 1 sequence against 1 GPU x 2 (the same sequences each step);
  # then 2 GPUs stopped at step 20 and resumed to 30.
  common=(--steps 30 --seq-len 4096 --checkpoint-every 10 --seed 3)
  train_gates 200 --gpus 2 --batch 1 "${common[@]}" --out /tmp/seer/dp2.safetensors | tail -3
  train_gates 200 --gpus 1 --batch 2 "${common[@]}" --out /tmp/seer/dp1.safetensors | tail -3
  train_gates 200 --gpus 2 --batch 1 --steps 20 --seq-len 4096 --checkpoint-every 10 --seed 3 \
    --out /tmp/seer/dpr.safetensors | tail -1
  train_gates 200 --gpus 2 --batch 1 "${common[@]}" --resume --out /tmp/seer/dpr.safetensors | tail -3
  for f in dp2 dp1 dpr; do echo "$f: $(tail -2 /tmp/seer/$f.safetensors.csv | tr '\n' ' ')"; done
  cp /tmp/seer/dp2.safetensors.csv /tmp/seer/dp1.safetensors.csv /tmp/seer/dpr.safetensors.csv "$out/"
fi
if has train; then
  train_gates 540 ${SEER_TRAIN_ARGS:---steps 3000 --batch 2 --target-pooling peak-mass --skip-fraction 0 --checkpoint-every 250} \
    --out /tmp/seer/gates.safetensors | awk 'NR <= 2 || NR % 25 == 0'
  cp /tmp/seer/gates.safetensors /tmp/seer/gates.safetensors.csv /tmp/seer/gates.safetensors.loss.png "$out/"
fi
# The gates trained (or calibrated) on this machine, else the shipped ones.
gates=gates/smollm2-135m-instruct.safetensors
[ -f /tmp/seer/gates.safetensors ] && gates=/tmp/seer/gates.safetensors
if has calibrate; then
  calibrate_gates 300 $gates /tmp/seer/gates.safetensors
  cp /tmp/seer/gates.safetensors "$out/"
  gates=/tmp/seer/gates.safetensors
fi
if has eval; then
  evaluate_gates 580 $gates "$out/ACCURACY.md" ${SEER_EVAL_ARGS:---thresholds 0.05,0.03,0.02,0.015,0.01,0.005,0.002,0.001 \
    --layer-sweep --passkey-trials 400 --passkey-methods a,a+,p+,p* --recall}
fi
# The sweep file's lines: "NAME FLAGS...", blank lines and # comments skipped.
sweep_lines() { grep -vE '^[[:space:]]*(#|$)' "${SEER_SWEEP:?sweep needs SEER_SWEEP, a file of gate variants}"; }
if has sweep; then
  gate_args=()
  names=()
  while read -r name flags; do
    names+=("$name")
    # shellcheck disable=SC2206  # the flags are words
    if [ ${#names[@]} -eq 1 ]; then gate_args+=($flags --out /tmp/seer/$name.safetensors)
    else gate_args+=(--variant "$flags --out /tmp/seer/$name.safetensors"); fi
  done < <(sweep_lines)
  train_gates 590 ${SEER_TRAIN_ARGS:---steps 3000 --batch 2 --target-pooling peak-mass --skip-fraction 0 --checkpoint-every 1000} \
    "${gate_args[@]}" | awk 'NR <= 2 || NR % 500 == 0 || /final loss/'
  for name in "${names[@]}"; do
    cp /tmp/seer/$name.safetensors.csv "$out/$name.csv"
    calibrate_gates 120 /tmp/seer/$name.safetensors /tmp/seer/$name.cal.safetensors | tail -1
  done
fi
if has sweep-eval; then
  for name in ${SEER_SWEEP_EVAL:-$(sweep_lines | awk '{print $1}')}; do
    evaluate_gates 280 /tmp/seer/$name.cal.safetensors "$out/$name.md" \
      ${SEER_EVAL_ARGS:---methods a,a+,p+,p* --passkey-trials 400 --passkey-methods a,a+,p+,p* --recall} >/dev/null
    echo "== $name"
    grep -E '^\| \((a|a\+|p\+|p\*)\)|^Pass|^\| 0\.1 ' "$out/$name.md"
  done
fi
