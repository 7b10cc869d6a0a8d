#!/usr/bin/env bash
# Decode speed at batch 1: hallmark (candle-loaded GGUF, own kernels) vs llama.cpp (through
# llama-cpp-python) on the same GGUF, prompt, thread count and number of generated tokens
# (greedy, end-of-sequence ignored so both produce exactly N tokens).
# Each side runs ROUNDS times, alternating, and the best run of each is compared, so a busy
# machine penalises both alike. Prints both tokens/s and the ratio.
#
# Needs: test-models/fetch.sh, which builds llama-cpp-python into test-models/cache/py with the
# explicit ISA flags of test-models/llama-cmake-args.sh (pip's -march=native build crashes on AMX
# machines); LLAMA_PY=/path/to/python picks another interpreter.
# Usage: benches/compare_llama.sh [MODEL] [TOKENS] [THREADS] [ROUNDS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-$root/test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
tokens=${2:-128}
threads=${3:-$(nproc)}
rounds=${4:-3}
py=${LLAMA_PY:-$root/test-models/cache/py/bin/python}
prompt="Write a detailed essay about the history of the printing press."
[ -x "$py" ] || { echo "compare_llama: no llama-cpp-python at $py (see the header of this script)" >&2; exit 2; }
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
bin=$root/target/release/hallmark

hallmark_run() {
  HALLMARK_THREADS=$threads "$bin" generate --model "$model" --no-watermark --prompt "$prompt" \
    --max-tokens "$tokens" --temperature 0 --ignore-eos --json |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["generated_tokens"], d["decode_tokens_per_s"])'
}

llama_run() {
  "$py" - "$model" "$tokens" "$threads" "$prompt" <<'PY'
import sys, llama_cpp
model, n, threads, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
llm = llama_cpp.Llama(model_path=model, n_threads=threads, n_threads_batch=threads, n_ctx=1024,
                      n_batch=512, verbose=False, seed=0)
eos = llm.token_eos()
llama_cpp.llama_perf_context_reset(llm.ctx)
out = llm.create_chat_completion(messages=[{"role": "user", "content": prompt}], max_tokens=n,
                                 temperature=0.0, logit_bias={eos: -1e9})
perf = llama_cpp.llama_perf_context(llm.ctx)
# t_eval_ms / n_eval: the single-token decode steps, the prompt excluded (as hallmark's figure).
print(out["usage"]["completion_tokens"], 1000.0 * perf.n_eval / perf.t_eval_ms)
PY
}

best_h=0; best_l=0
for r in $(seq "$rounds"); do
  read -r nh th < <(hallmark_run)
  read -r nl tl < <(llama_run)
  echo "round $r: hallmark $th tok/s ($nh tokens)   llama.cpp $tl tok/s ($nl tokens)"
  best_h=$(python3 -c "print(max($best_h, $th))")
  best_l=$(python3 -c "print(max($best_l, $tl))")
done
python3 - "$best_h" "$best_l" "$threads" "$tokens" <<'PY'
import sys
h, l, t, n = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
print(f"decode at batch 1, {n} tokens, {t} threads (best of runs):")
print(f"  hallmark   {h:8.1f} tok/s")
print(f"  llama.cpp  {l:8.1f} tok/s")
print(f"  ratio hallmark/llama.cpp = {h / l:.2f}")
PY
