#!/usr/bin/env bash
# Run every fuzz target for a fixed number of executions, starting from the committed
# regression corpus (fuzz/regressions/TARGET) plus what earlier runs found (fuzz/corpus/TARGET,
# not committed). Prints libFuzzer's final stats per target; a crash stops the script with the
# reproducer in fuzz/artifacts/TARGET/.
#
#   fuzz/run.sh [RUNS (default 10000000)] [TARGET...]
#
# SANITIZER=address runs under AddressSanitizer (3-5x slower); the default, none, keeps
# libFuzzer's coverage guidance, debug assertions (integer overflow checks) and its RSS limit,
# which is what finds panics, aborts and over-allocation in Rust code.
# Needs a nightly toolchain (rustup toolchain install nightly) and cargo-fuzz (cargo install
# cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")"
runs="${1:-10000000}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors_header gguf bundle registry_entry sigstore_bundle trusted_root reuse_state pem_chain parquet jsonl_lines parquet_page_header)
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  # Inputs stay small enough for speed; the parsers' size limits are tested separately
  # (tests/hostile.rs) on full-size hostile files.
  maxlen=16384
  echo "== $t: $runs executions"
  log="corpus/$t.log"
  if ! cargo +nightly fuzz run -O --debug-assertions -s "${SANITIZER:-none}" "$t" "corpus/$t" "regressions/$t" -- \
    -runs="$runs" -max_len="$maxlen" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "== $t: FAILED (see $log and artifacts/$t/)" >&2
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|stat::new_units_added|Done)' "$log"
done
