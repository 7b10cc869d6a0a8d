#!/usr/bin/env bash
# Print one digest of every source the Python package is built from (the Rust library, the
# extension crate, the Python sources, the lock file). test-models/fetch.sh records it when it
# installs the package; tests/python.rs compares, so the Python tests never run a stale build.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  printf '%s\n' Cargo.toml Cargo.lock python/Cargo.toml python/pyproject.toml
  find src python/src python/hallmark -type f ! -name '*.pyc' ! -path '*/__pycache__/*'
} | LC_ALL=C sort | while IFS= read -r f; do
  printf '%s %s\n' "$(sha256sum < "$f" | cut -d' ' -f1)" "$f"
done | sha256sum | cut -d' ' -f1
