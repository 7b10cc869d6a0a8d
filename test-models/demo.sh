#!/usr/bin/env bash
# hallmark end to end, over the test models: the README's first command.
#   1. release signing: keygen, sign, verify, tamper, verify again (names the changed tensor)
#   2. text watermark (Gumbel-max): generate with SmolLM2 watermarked inside the sampler, detect; an unwatermarked
#      answer and human text come out clean
#   3. weight fingerprint: register all-MiniLM-L6-v2, leak a transformed copy, detect it
#   4. active weight mark: mark, sign, leak with an attack, detect blind with the key
# Work files go to target/demo/ (recreated each run). Exits non-zero if any step misbehaves.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# Bold headings only on a terminal; plain text when piped or logged.
if [ -t 1 ]; then BOLD=$'\033[1m'; PLAIN=$'\033[0m'; else BOLD=; PLAIN=; fi

# The Python test environment (several GB) is the test suite's, not the demo's.
HALLMARK_FETCH_PYTHON=0 test-models/fetch.sh
# The same build as `cargo test --release` (test binaries included), so that command compiles
# nothing more afterwards.
echo "demo: building hallmark and its tests (cargo test --release --no-run); the first build takes several minutes on 2 cores..."
cargo test --release --no-run
H="$root/target/release/hallmark"
TM="$root/target/release/hallmark-testmodels"
ZOO="$root/target/release/examples/hallmark-zoo"
work="$root/target/demo"
rm -rf "$work"
mkdir -p "$work"
export HALLMARK_REGISTRY="$work/registry"
mkdir -p "$HALLMARK_REGISTRY"

step() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$PLAIN"; }
run() { printf '$ %s\n' "$*" | sed "s#$H#hallmark#g; s#$TM#hallmark-testmodels#g; s#$ZOO#hallmark-zoo#g; s#$root/##g"; "$@"; }
expect_exit() { # code cmd...
  local want=$1; shift
  set +e; run "$@"; local got=$?; set -e
  if [ "$got" != "$want" ]; then echo "demo: expected exit $want, got $got" >&2; exit 1; fi
}

step "1. Release signing (sharded safetensors checkpoint)"
run "$TM" sharded "$work/model" --shards 2 --layers 2
run "$H" keygen --out "$work/release"
run "$H" sign "$work/model" --key "$work/release.key"
expect_exit 0 "$H" verify "$work/model" --pub "$work/release.pub"
step "   tamper: flip one bit inside a tensor of shard 2, then verify again"
python3 - "$work/model" <<'PY'
import glob, sys
f = sorted(glob.glob(sys.argv[1] + "/model-*.safetensors"))[-1]
b = bytearray(open(f, "rb").read()); b[-100] ^= 0x01; open(f, "wb").write(b)
PY
expect_exit 1 "$H" verify "$work/model" --pub "$work/release.pub"

step "2. Text watermark: SmolLM2-135M generates, watermarked inside the sampler"
SMOL=test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
run "$H" wm-key --scheme gumbel --tokenizer "$SMOL" --out "$work/chat.wmkey"
run "$H" register "$work/chat.wmkey"
PROMPT="Explain to a child why the sky is blue."
run "$H" generate --model "$SMOL" --wm-key "$work/chat.wmkey" --prompt "$PROMPT" --max-tokens 200 --top-p 0.95 --seed 7 | tee "$work/answer-watermarked.txt"
expect_exit 0 "$H" detect "$work/answer-watermarked.txt"
step "   the same model without the watermark, and human-written text, come out clean"
run "$H" generate --model "$SMOL" --no-watermark --prompt "$PROMPT" --max-tokens 200 --top-p 0.95 --seed 7 | tee "$work/answer-plain.txt"
expect_exit 1 "$H" detect "$work/answer-plain.txt"
python3 - test-models/human/fortunes.jsonl "$work/human.txt" <<'PY'
import json, sys
docs = [json.loads(l)["text"] for l in open(sys.argv[1])]
open(sys.argv[2], "w").write(max(docs, key=len))
PY
expect_exit 1 "$H" detect "$work/human.txt"

step "3. Weight fingerprint: register all-MiniLM-L6-v2, then catch a leaked copy"
MINILM=test-models/real/minilm/model.safetensors
run "$H" fingerprint "$MINILM" --out "$work/all-MiniLM-L6-v2.fp" --name all-MiniLM-L6-v2
run "$H" register "$work/all-MiniLM-L6-v2.fp"
step "   the leak: 5% fine-tune noise, FFN neurons permuted, re-quantized to Q4_0 GGUF"
run "$ZOO" leak --model "$MINILM" --family minilm --case 'noise-5%+ffn-permute+q4_0' --out "$work/leaked-minilm"
expect_exit 0 "$H" detect "$work/leaked-minilm.gguf"
step "   an unrelated model (SmolLM2) does not match"
expect_exit 1 "$H" detect test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

step "4. Active weight mark: mark the release, sign it, leak an attacked copy, detect it blind"
run "$H" wm-key --scheme weights --out "$work/release-mark.wmkey"
run "$H" register "$work/release-mark.wmkey"
mkdir -p "$work/release-marked"
run "$H" mark "$MINILM" --wm-key "$work/release-mark.wmkey" --out "$work/release-marked/model.safetensors"
run "$H" sign "$work/release-marked" --key "$work/release.key"
expect_exit 0 "$H" verify "$work/release-marked" --pub "$work/release.pub"
step "   the leak: the marked release, fine-tuned (5% noise), FFN-permuted and re-quantized to Q4_0"
run "$ZOO" leak --model "$work/release-marked/model.safetensors" --family minilm --case 'noise-5%+ffn-permute+q4_0' --out "$work/leaked-marked"
expect_exit 0 "$H" detect "$work/leaked-marked.gguf"

printf '\n%sdemo: every step behaved as expected%s (work files in %s)\n' "$BOLD" "$PLAIN" "${work#$root/}"
