#!/usr/bin/env bash
# SHA-256 over one 2 GiB file in the page cache, side by side:
#   coreutils sha256sum                         (one SHA-256 stream, one core)
#   hallmark sign --hash sha256                 (files method: one SHA-256 stream)
#   hallmark sign --shard-size 1000000000       (shards method, model_signing's default size;
#   hallmark verify                              shards hashed in parallel with rayon)
#   model_signing 1.1.1 API sign / verify       (shards method, same size, its thread pool)
# All signing uses one P-256 key. Prints the best of RUNS interleaved rounds, and the ratios.
# The two shard bundles are cross-verified (hallmark's by model_signing and the other way
# round) so both tools are known to have done the same work.
#
# Usage: benches/compare_shards.sh [RUNS]      (env: BENCH_DIR, default target/bench-shards)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
DIR=${BENCH_DIR:-target/bench-shards}
PY=test-models/cache/venv/bin/python
SHARD=1000000000
mkdir -p "$DIR"
[ -x "$PY" ] || { echo "model_signing's venv not found at $PY (run test-models/fetch.sh)" >&2; exit 2; }

cargo build --release --bins -q
H=target/release/hallmark

BLOB=$DIR/blob-2g.bin
if [ ! -f "$BLOB" ] || [ "$(stat -c %s "$BLOB")" != 2147483648 ]; then
  echo "writing $BLOB (2 GiB of random bytes; once)..." >&2
  head -c 2147483648 /dev/urandom > "$BLOB.tmp" && mv "$BLOB.tmp" "$BLOB"
fi
SIZE=$(stat -c %s "$BLOB")
[ -f "$DIR/p256.key" ] || "$H" keygen --out "$DIR/p256" --alg p256 >/dev/null

MS_SIGN="import sys, model_signing
from model_signing import hashing
model_signing.signing.Config().use_elliptic_key_signer(private_key=sys.argv[1]).set_hashing_config(
    hashing.Config().use_shard_serialization(hashing_algorithm='sha256', shard_size=$SHARD)).sign(sys.argv[2], sys.argv[3])"
MS_VERIFY="import sys, model_signing
from model_signing import hashing
model_signing.verifying.Config().use_elliptic_key_verifier(public_key=sys.argv[1]).set_hashing_config(
    hashing.Config().use_shard_serialization(hashing_algorithm='sha256', shard_size=$SHARD)).verify(sys.argv[2], sys.argv[3])"

cat "$BLOB" > /dev/null   # warm the page cache

wall() {
  local s e
  s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
  echo "$e - $s" | bc -l
}
min() { if [ -z "$1" ] || (( $(echo "$2 < $1" | bc -l) )); then echo "$2"; else echo "$1"; fi; }

HF=$DIR/blob.files.sig; HS=$DIR/blob.shards.sig; MS=$DIR/blob.model_signing.sig
t_sum=""; t_hf=""; t_hs=""; t_hv=""; t_ms=""; t_mv=""
for _ in $(seq "$RUNS"); do
  t_sum=$(min "$t_sum" "$(wall sha256sum "$BLOB")")
  t_hf=$(min "$t_hf" "$(wall "$H" sign "$BLOB" --key "$DIR/p256.key" --sig "$HF" --hash sha256)")
  t_hs=$(min "$t_hs" "$(wall "$H" sign "$BLOB" --key "$DIR/p256.key" --sig "$HS" --shard-size $SHARD)")
  t_hv=$(min "$t_hv" "$(wall "$H" verify "$BLOB" --pub "$DIR/p256.pub" --sig "$HS")")
  t_ms=$(min "$t_ms" "$(wall "$PY" -c "$MS_SIGN" "$DIR/p256.key" "$BLOB" "$MS")")
  t_mv=$(min "$t_mv" "$(wall "$PY" -c "$MS_VERIFY" "$DIR/p256.pub" "$BLOB" "$MS")")
done
# Same work: each tool verifies the other's shard bundle.
"$PY" -c "$MS_VERIFY" "$DIR/p256.pub" "$BLOB" "$HS" || { echo "model_signing refused hallmark's bundle" >&2; exit 1; }
"$H" verify "$BLOB" --pub "$DIR/p256.pub" --sig "$MS" >/dev/null || { echo "hallmark refused model_signing's bundle" >&2; exit 1; }
for v in t_sum t_hf t_hs t_hv t_ms t_mv; do printf -v "$v" '%.3f' "${!v}"; done

gbs() { printf '%.2f' "$(echo "$SIZE / $1 / 1000000000" | bc -l)"; }
ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }
echo "file: $BLOB ($SIZE bytes, page cache warm), best of $RUNS interleaved rounds, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-44s %8s s %6s GB/s\n' "sha256sum" "$t_sum" "$(gbs "$t_sum")"
printf '%-44s %8s s %6s GB/s  %5sx sha256sum\n' "hallmark sign --hash sha256 (files)" "$t_hf" "$(gbs "$t_hf")" "$(ratio "$t_sum" "$t_hf")"
printf '%-44s %8s s %6s GB/s  %5sx sha256sum  %5sx model_signing\n' "hallmark sign --shard-size $SHARD" "$t_hs" "$(gbs "$t_hs")" "$(ratio "$t_sum" "$t_hs")" "$(ratio "$t_ms" "$t_hs")"
printf '%-44s %8s s %6s GB/s  %5sx sha256sum  %5sx model_signing\n' "hallmark verify (shards)" "$t_hv" "$(gbs "$t_hv")" "$(ratio "$t_sum" "$t_hv")" "$(ratio "$t_mv" "$t_hv")"
printf '%-44s %8s s %6s GB/s  %5sx sha256sum\n' "model_signing 1.1.1 API sign (shards)" "$t_ms" "$(gbs "$t_ms")" "$(ratio "$t_sum" "$t_ms")"
printf '%-44s %8s s %6s GB/s  %5sx sha256sum\n' "model_signing 1.1.1 API verify (shards)" "$t_mv" "$(gbs "$t_mv")" "$(ratio "$t_sum" "$t_mv")"
