#!/usr/bin/env bash
# Print the CMAKE_ARGS that build llama.cpp (inside llama-cpp-python) so it runs on this CPU and on
# every x86-64 CPU with the same feature set, never with AMX.
#
# Why not pip's default: llama.cpp builds with GGML_NATIVE=ON (-march=native), which compiles its
# AMX matrix kernels in on Sapphire Rapids and later Xeons; in a VM whose kernel does not grant the
# AMX tile state, the first matrix product dies with SIGSEGV at `ldtilecfg`. Turning the
# GGML_AMX_* options off is not enough while GGML_NATIVE is on, so the ISA is named explicitly:
# AVX2 + FMA + F16C + BMI2 always (x86-64-v3), AVX-512 (F/BW/VL/DQ/CD) only where this CPU has it.
# Other architectures keep llama.cpp's defaults.
#
# Usage: CMAKE_ARGS="$(test-models/llama-cmake-args.sh)" pip install --no-cache-dir \
#          --no-binary llama-cpp-python llama-cpp-python==VERSION
set -euo pipefail
if [ "$(uname -m)" != x86_64 ]; then
  echo ""
  exit 0
fi
# HALLMARK_CPUINFO names another cpuinfo file (the tests check the flags chosen for other CPUs).
cpuinfo=${HALLMARK_CPUINFO:-/proc/cpuinfo}
line=$(grep -m1 '^flags' "$cpuinfo" 2>/dev/null || true)
if [ -z "$line" ]; then
  echo "llama-cmake-args: cannot read the CPU's flags from $cpuinfo; set CMAKE_ARGS by hand" \
    "(HALLMARK_FETCH_PYTHON=0 test-models/fetch.sh skips the Python test environment)" >&2
  exit 2
fi
flags=" ${line#*:} "
has() { case "$flags" in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
for f in avx2 fma f16c bmi2; do
  has "$f" || {
    echo "llama-cmake-args: this CPU lacks $f; llama-cpp-python's x86-64-v3 build needs it" \
      "(HALLMARK_FETCH_PYTHON=0 test-models/fetch.sh skips the Python test environment)" >&2
    exit 2
  }
done
args="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
avx512=OFF
if has avx512f && has avx512bw && has avx512vl && has avx512dq && has avx512cd; then avx512=ON; fi
args="$args -DGGML_AVX512=$avx512 -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF"
args="$args -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
echo "$args"
