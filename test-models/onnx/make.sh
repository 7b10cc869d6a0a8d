#!/usr/bin/env bash
# Re-export all-MiniLM-L6-v2 (test-models/real/minilm) through onnxruntime's int8 dynamic
# quantization and dequantize it back (minilm_onnx.py says how), for the fingerprint tests.
# Needs test-models/fetch.sh to have run. Idempotent: a private virtualenv with pinned onnx and
# onnxruntime is created once; outputs whose SHA-256 match manifest.json are kept.
# Result:
#   test-models/cache/onnx/minilm-onnx-int8{,-per-channel}.{safetensors,onnx}, manifest.json
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
models=$(cd "$here/.." && pwd)
venv="$models/cache/onnx-venv"
out="$models/cache/onnx"
PY=${PYTHON:-python3}

for f in model.safetensors tokenizer.json config.json; do
  if [ ! -f "$models/real/minilm/$f" ]; then
    echo "onnx: $models/real/minilm/$f is missing: run test-models/fetch.sh first" >&2
    exit 1
  fi
done

# One run at a time: a second concurrent run (two checkouts sharing one cache) waits here
# instead of deleting the virtualenv the first is installing into.
mkdir -p "$models/cache"
exec 9>"$models/cache/.onnx.lock"
flock 9

# Pinned: the manifest and docs/fingerprint_onnx.md record results for these versions.
pins="onnx==1.23.2 onnxruntime==1.32.0 numpy==2.4.6 safetensors==0.8.0 tokenizers==0.23.3"
stamp="$venv/.hallmark-pins"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$pins" ]; then
  echo "onnx: installing $pins into $venv" >&2
  rm -rf "$venv"
  "$PY" -m venv "$venv" >&2
  # shellcheck disable=SC2086 # word splitting of the pin list is intended
  "$venv/bin/pip" install --quiet $pins >&2
  echo "$pins" >"$stamp"
fi
mkdir -p "$out"
"$venv/bin/python" "$here/minilm_onnx.py" "$models/real/minilm" "$out"
