#!/usr/bin/env bash
# Side-by-side wall times on one 2 GiB safetensors file in the page cache:
#   b3sum  vs  hallmark sign / verify  vs  model_signing sign key / verify key (P-256).
# Prints the best of RUNS interleaved rounds for each and the ratios the issue sets as targets:
#   hallmark sign/verify >= 0.9x b3sum throughput, and >= 3x faster than model_signing.
#
# Usage: benches/compare_sign.sh [RUNS]      (env: BENCH_DIR, default target/bench-sign)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
DIR=${BENCH_DIR:-target/bench-sign}
MS=test-models/cache/venv/bin/model_signing
mkdir -p "$DIR"

cargo build --release --bins -q
H=target/release/hallmark
GEN=target/release/hallmark-testmodels

B3SUM=$(command -v b3sum || true)
[ -z "$B3SUM" ] && [ -x "$HOME/.cargo/bin/b3sum" ] && B3SUM=$HOME/.cargo/bin/b3sum
if [ -z "$B3SUM" ]; then
  echo "installing b3sum (cargo install b3sum)..." >&2
  cargo install b3sum -q
  B3SUM=$HOME/.cargo/bin/b3sum
fi

MODEL=$DIR/model-2g.safetensors
if [ ! -f "$MODEL" ]; then
  echo "generating $MODEL (3 layers x hidden 4096, f32, ~2.0 GB; once)..." >&2
  "$GEN" safetensors "$MODEL" --layers 3 --hidden 4096 --seed 1
fi
SIZE=$(stat -c %s "$MODEL")
[ -f "$DIR/p256.key" ] || "$H" keygen --out "$DIR/p256" --alg p256 >/dev/null

# Warm the page cache.
cat "$MODEL" > /dev/null

# Time one command (output discarded); seconds on stdout.
wall() {
  local s e
  s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
  echo "$e - $s" | bc -l
}
min() { if [ -z "$1" ] || (( $(echo "$2 < $1" | bc -l) )); then echo "$2"; else echo "$1"; fi; }

SIG=$DIR/model-2g.hallmark.sig
MSIG=$DIR/model-2g.model_signing.sig
HAVE_MS=0
if [ -x "$MS" ]; then HAVE_MS=1; else
  echo "model_signing not found at $MS (run test-models/fetch.sh); skipping it" >&2
fi
# Rounds interleave the tools, so load from elsewhere on the machine hits them alike.
t_b3=""; t_hs=""; t_hv=""; t_ms=""; t_mv=""
for _ in $(seq "$RUNS"); do
  t_b3=$(min "$t_b3" "$(wall "$B3SUM" "$MODEL")")
  t_hs=$(min "$t_hs" "$(wall "$H" sign "$MODEL" --key "$DIR/p256.key" --sig "$SIG" --hash blake3)")
  t_hv=$(min "$t_hv" "$(wall "$H" verify "$MODEL" --pub "$DIR/p256.pub" --sig "$SIG")")
  if [ "$HAVE_MS" = 1 ]; then
    t_ms=$(min "$t_ms" "$(wall "$MS" sign key --private_key "$DIR/p256.key" --signature "$MSIG" "$MODEL")")
    t_mv=$(min "$t_mv" "$(wall "$MS" verify key --public_key "$DIR/p256.pub" --signature "$MSIG" "$MODEL")")
  fi
done
"$H" verify "$MODEL" --pub "$DIR/p256.pub" --sig "$SIG" >/dev/null || { echo "hallmark verify failed" >&2; exit 1; }
for v in t_b3 t_hs t_hv t_ms t_mv; do
  if [ -n "${!v}" ]; then printf -v "$v" '%.3f' "${!v}"; fi
done

gbs() { printf '%.2f' "$(echo "$SIZE / $1 / 1000000000" | bc -l)"; }
ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }
echo "file: $MODEL ($SIZE bytes, page cache warm), best of $RUNS interleaved rounds, $(nproc) cores"
printf '%-34s %8s s  %6s GB/s\n' "b3sum" "$t_b3" "$(gbs "$t_b3")"
printf '%-34s %8s s  %6s GB/s  %5sx b3sum throughput\n' "hallmark sign (blake3, P-256)" "$t_hs" "$(gbs "$t_hs")" "$(ratio "$t_b3" "$t_hs")"
printf '%-34s %8s s  %6s GB/s  %5sx b3sum throughput\n' "hallmark verify" "$t_hv" "$(gbs "$t_hv")" "$(ratio "$t_b3" "$t_hv")"
if [ -n "$t_ms" ]; then
  printf '%-34s %8s s  %6s GB/s  hallmark sign is %sx faster\n' "model_signing sign key (sha256)" "$t_ms" "$(gbs "$t_ms")" "$(ratio "$t_ms" "$t_hs")"
  printf '%-34s %8s s  %6s GB/s  hallmark verify is %sx faster\n' "model_signing verify key (sha256)" "$t_mv" "$(gbs "$t_mv")" "$(ratio "$t_mv" "$t_hv")"
fi
