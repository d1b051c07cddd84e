#!/usr/bin/env bash
# The device tool carries at most 64 MiB per call, less than the built-in model (94 MiB) plus the
# data. This splits the model and the evaluation/training text into three ignored folders,
# .xfer1..3, to carry in three consecutive calls on a warm machine; each call's command copies its
# folder to /tmp/seer there, and the third reassembles the model (see bench/gpu/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
corpus=${SEER_CORPUS:-../shared/corpus}
rm -rf .xfer1 .xfer2 .xfer3
mkdir -p .xfer1/train .xfer2/dev .xfer3
for d in .xfer1 .xfer2 .xfer3; do grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude; done
split -b 41000000 -d "$model" .xfer3/model.part
mv .xfer3/model.part00 .xfer1/ && mv .xfer3/model.part01 .xfer2/
# Twelve training books (about 3.4M tokens), and the dev books.
for b in adam-bede barchester-towers david-copperfield east-lynne jude-the-obscure mansfield-park north-and-south \
         persuasion return-of-the-native the-egoist vanity-fair the-mill-on-the-floss; do
  cp "$corpus/train/$b.txt" .xfer1/train/
done
cp "$corpus"/dev/*.txt .xfer2/dev/
du -sh .xfer1 .xfer2 .xfer3
