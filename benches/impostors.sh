#!/bin/sh
# Issue 23: the symmetry-invariant line's impostor benchmark, outside CI.
#
# Trains (once; cached under test-models/cache/trained/<key>/, one set per family) 20
# independently initialised models of each of three families (llama-like and grouped-query
# llama-like with SmolLM2's tokenizer, bert-like with MiniLM's) plus two children of seed 0,
# scores every ordered impostor pair and disguised copies of seeds 0-2, scores 5,000 simulated
# impostor pairs per reader sharing, and diagnoses width pruning. Prints the false-match rate
# with its Clopper-Pearson 95 % upper bound, the largest impostor, the weakest genuine disguised
# copy and the margin; writes the score-distribution and loss-curve figures to docs/.
#
# Usage: benches/impostors.sh [SEEDS]   (default 20; the trained set is keyed by SEEDS)
# Training takes about an hour of one core per family at nice 10 on a shared two-core machine.
set -eu
cd "$(dirname "$0")/.."
HALLMARK_IMPOSTOR_SEEDS="${1:-20}" \
HALLMARK_IMPOSTOR_PLOT=docs/impostor_scores.png \
HALLMARK_IMPOSTOR_LOSS_PLOT=docs/impostor_loss.png \
nice -n 10 cargo test --release --test tests impostors:: -- --ignored --nocapture --test-threads 1
