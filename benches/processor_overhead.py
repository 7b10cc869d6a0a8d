"""The watermarking logits processor's cost per decode step, and end-to-end tokens/s with and
without it, in llama-cpp-python and HF transformers on SmolLM2 (test-models/real).

Each side alternates plain and watermarked runs ROUNDS times and keeps the best of each, so a
busy machine penalises both alike. "plain" still passes a trivial logits processor (it bans
end-of-sequence so every run makes exactly T tokens), so the difference is the watermark alone,
not llama-cpp-python's cost of calling back into Python.

Run: test-models/cache/py/bin/python benches/processor_overhead.py [T] [ROUNDS]
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import hallmark

ROOT = Path(__file__).resolve().parents[1]
BIN = str(ROOT / "target/release/hallmark")
SMOL = ROOT / "test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm."


class Timed:
    def __init__(self, inner):
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def __call__(self, ids, scores):
        t0 = time.perf_counter()
        out = self.inner(ids, scores)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def llama(key, T, rounds):
    from llama_cpp import Llama, LogitsProcessorList

    llm = Llama(model_path=str(SMOL), n_ctx=1024, n_threads=2, verbose=False)
    eos = llm.token_eos()

    def no_eos(ids, scores):
        scores[eos] = -np.inf
        return scores

    best = {"plain": 0.0, "marked": 0.0}
    per = []
    for r in range(rounds):
        for mode in ("plain", "marked"):
            procs = [no_eos]
            if mode == "marked":
                t = Timed(key.logits_processor(seed=r))
                procs.append(t)
            t0 = time.perf_counter()
            out = llm.create_chat_completion(messages=[{"role": "user", "content": PROMPT}], max_tokens=T,
                                             temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=r,
                                             logits_processor=LogitsProcessorList(procs))
            n = out["usage"]["completion_tokens"]
            best[mode] = max(best[mode], n / (time.perf_counter() - t0))
            if mode == "marked":
                per.append(t.seconds / t.calls)
    step = 1 / best["plain"]
    p = min(per)
    print(f"llama-cpp-python ({T} tokens, best of {rounds}): plain {best['plain']:.1f} tokens/s, "
          f"watermarked {best['marked']:.1f} tokens/s; processor {p * 1e6:.0f} us/step = "
          f"{100 * p / step:.2f}% of a decode step ({step * 1e3:.1f} ms)")


def hf(key, T, rounds):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(str(SMOL.parent), gguf_file=SMOL.name)
    model = AutoModelForCausalLM.from_pretrained(str(SMOL.parent), gguf_file=SMOL.name, dtype=torch.float32).eval()
    enc = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)

    class Identity(LogitsProcessor):
        def __call__(self, ids, scores):
            return scores

    best = {"plain": 0.0, "marked": 0.0}
    per = []
    for r in range(rounds):
        for mode in ("plain", "marked"):
            t = Timed(key.logits_processor(seed=r)) if mode == "marked" else Identity()
            t0 = time.perf_counter()
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=T, min_new_tokens=T, do_sample=False,
                                     logits_processor=LogitsProcessorList([t]), pad_token_id=tok.eos_token_id)
            n = out.shape[1] - enc["input_ids"].shape[1]
            best[mode] = max(best[mode], n / (time.perf_counter() - t0))
            if mode == "marked":
                per.append(t.seconds / t.calls)
    step = 1 / best["plain"]
    p = min(per)
    print(f"transformers ({T} tokens, best of {rounds}): plain {best['plain']:.1f} tokens/s, "
          f"watermarked {best['marked']:.1f} tokens/s; processor {p * 1e6:.0f} us/step = "
          f"{100 * p / step:.2f}% of a decode step ({step * 1e3:.1f} ms)")


def isolated(key, steps=2000):
    """The processor alone, outside any decode loop: the same strided float32 `logit` field of
    49,152 candidate records llama-cpp-python hands over, a context growing by the chosen token
    each call (as in generation), median over `steps` calls. The gap to the in-loop figure is
    what a real decode step does to the caches around it."""
    rec = np.zeros(49152, dtype=np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)).view(np.recarray)
    base = (np.random.default_rng(0).standard_normal(49152) * 3).astype(np.float32)
    proc = key.logits_processor(seed=0)
    ids, times = list(range(64)), []
    for _ in range(steps):
        rec.logit[:] = base
        ctx = np.array(ids, dtype=np.int32)
        t0 = time.perf_counter()
        proc(ctx, rec.logit)
        times.append(time.perf_counter() - t0)
        ids.append(proc.last_tokens[0])
        if len(ids) > 512:
            ids = list(range(64))
    print(f"isolated ({key.scheme}): processor {np.median(times) * 1e6:.0f} us/call (median of {steps})")


def main():
    T = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory() as d:
        k = Path(d) / "g.wmkey"
        subprocess.run([BIN, "wm-key", "--scheme", "gumbel", "--tokenizer", SMOL, "--out", k], check=True, capture_output=True)
        key = hallmark.WatermarkKey.load(k)
        k2 = Path(d) / "k.wmkey"
        subprocess.run([BIN, "wm-key", "--scheme", "kgw", "--tokenizer", SMOL, "--out", k2], check=True, capture_output=True)
        isolated(key)
        isolated(hallmark.WatermarkKey.load(k2))
        llama(key, T, rounds)
        hf(key, T, rounds)


if __name__ == "__main__":
    main()
