#!/usr/bin/env bash
# The device tool carries at most 64 MiB per call, less than the built-in model (94 MiB) plus the
# data. This splits the model and the evaluation/training text into three folders (.gitignore),
# .xfer1..3, to carry in three consecutive calls on a warm machine; each call's command copies its
# folder to /tmp/seer there, and the third reassembles the model and unpacks the training books
# (see bench/gpu/README.md). Each folder plus the tracked tree stays under the 64 MiB a call carries.
set -euo pipefail
cd "$(dirname "$0")/../.."
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
corpus=${SEER_CORPUS:-../shared/corpus}
rm -rf .xfer1 .xfer2 .xfer3
mkdir -p .xfer1 .xfer2/dev .xfer3
split -b 33000000 -d "$model" .xfer3/model.part
mv .xfer3/model.part00 .xfer1/ && mv .xfer3/model.part01 .xfer2/
# Every training book (47 MB of text, about 11M tokens; 14 MB compressed), and the dev books.
tar cf - -C "$corpus" train | xz -T0 -6 > .xfer1/train.tar.xz
cp "$corpus"/dev/*.txt .xfer2/dev/
du -sh .xfer1 .xfer2 .xfer3
