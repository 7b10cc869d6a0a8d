#!/usr/bin/env bash
# Fingerprint extraction vs b3sum on the same page-cached files: median of N runs each, ratio.
# Usage: benches/fingerprint_vs_b3sum.sh [N [MORE_FILES...]]  (needs `b3sum` on PATH or in $B3SUM, and
# `cargo build --release` done; real models from test-models/fetch.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-7}; shift || true
B3SUM=${B3SUM:-b3sum}
HM=target/release/hallmark
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
printf '%-48s %10s %10s %10s %8s\n' file MB b3sum_s fingerprint_s ratio
for f in test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf test-models/real/minilm/model.safetensors "$@"; do
  [ -f "$f" ] || continue
  cat "$f" >/dev/null  # page cache
  b=$(for i in $(seq "$N"); do secs "$B3SUM" "$f"; done | median)
  p=$(for i in $(seq "$N"); do secs "$HM" fingerprint "$f" --out "$out/x.fp"; done | median)
  mb=$(( $(stat -c %s "$f") / 1000000 ))
  printf '%-48s %10s %10.3f %10.3f %8.2f\n' "$(basename "$f")" "$mb" "$b" "$p" "$(echo "$p / $b" | bc -l)"
done
