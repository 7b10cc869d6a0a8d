#!/usr/bin/env bash
# Incremental re-signing on a 20 GB model directory: full `hallmark sign` vs `sign --reuse`
# after one file changed (a small config file, then one 5 GB weight file).
#
# The directory is sparse but real: four 5 GB files made with `truncate`, each with 64 MiB of
# random bytes written at its start and 64 MiB in its middle (the rest reads as zeros), plus
# small config files; it takes ~0.5 GB of disk. Signing uses a P-256 key (SHA-256 by default).
# Prints the best of RUNS rounds and the ratio, then checks the last bundle with `verify`.
#
# Usage: benches/compare_reuse.sh [RUNS]      (env: BENCH_DIR, default target/bench-reuse)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
DIR=${BENCH_DIR:-target/bench-reuse}
M=$DIR/model
cargo build --release --bins -q
H=target/release/hallmark
mkdir -p "$DIR"
if [ ! -f "$M/done" ]; then
  echo "making $M (4 x 5 GB sparse files with 128 MiB of random data each; once)..." >&2
  rm -rf "$M"; mkdir -p "$M"
  for i in 1 2 3 4; do
    f=$M/weights-0000$i-of-00004.bin
    truncate -s 5G "$f"
    head -c 67108864 /dev/urandom | dd of="$f" conv=notrunc status=none
    head -c 67108864 /dev/urandom | dd of="$f" bs=1M seek=2560 conv=notrunc status=none
  done
  echo '{"hidden_size": 4096}' > "$M/config.json"
  head -c 2000000 /dev/urandom > "$M/tokenizer.json"
  touch "$M/done"
fi
SIZE=$(du -b --apparent-size -s "$M" | cut -f1)
[ -f "$DIR/p256.key" ] || "$H" keygen --out "$DIR/p256" --alg p256 >/dev/null
rm -f "$M/model.sig" "$M/model.sig.reuse"
# Seed the state: one --reuse run over the plain signature hashes everything once.
"$H" sign "$M" --key "$DIR/p256.key" >/dev/null
"$H" sign "$M" --key "$DIR/p256.key" --reuse "$M/model.sig" >/dev/null 2>&1

wall() {
  local s e
  s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
  echo "$e - $s" | bc -l
}
min() { if [ -z "$1" ] || (( $(echo "$2 < $1" | bc -l) )); then echo "$2"; else echo "$1"; fi; }

t_full=""; t_small=""; t_big=""
for r in $(seq "$RUNS"); do
  t_full=$(min "$t_full" "$(wall "$H" sign "$M" --key "$DIR/p256.key" --sig "$DIR/full.sig")")
  echo "{\"hidden_size\": 4096, \"round\": $r}" > "$M/config.json"
  t_small=$(min "$t_small" "$(wall "$H" sign "$M" --key "$DIR/p256.key" --reuse "$M/model.sig")")
  head -c 1048576 /dev/urandom | dd of="$M/weights-00002-of-00004.bin" bs=1M seek=$((r * 7)) conv=notrunc status=none
  t_big=$(min "$t_big" "$(wall "$H" sign "$M" --key "$DIR/p256.key" --reuse "$M/model.sig")")
done
"$H" verify "$M" --pub "$DIR/p256.pub" >/dev/null || { echo "verify failed" >&2; exit 1; }
for v in t_full t_small t_big; do printf -v "$v" '%.3f' "${!v}"; done
ratio() { printf '%.1f' "$(echo "$1 / $2" | bc -l)"; }
echo "model: $M ($SIZE bytes apparent, $(du -s -B1 "$M" | cut -f1) on disk), best of $RUNS rounds, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-48s %8s s\n' "hallmark sign (full, sha256)" "$t_full"
printf '%-48s %8s s  %6sx faster\n' "hallmark sign --reuse (config.json changed)" "$t_small" "$(ratio "$t_full" "$t_small")"
printf '%-48s %8s s  %6sx faster\n' "hallmark sign --reuse (one 5 GB file changed)" "$t_big" "$(ratio "$t_full" "$t_big")"
