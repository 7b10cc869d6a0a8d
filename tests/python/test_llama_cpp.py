"""Watermarked generation with llama-cpp-python and SmolLM2 through `logits_processor`; the
text is found by `hallmark detect` (the CLI) and by the Python API, the control stays clean."""

import json
import time

import numpy as np
import pytest

import hallmark
from conftest import Timed, hm

T = 200
PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm."


@pytest.fixture(scope="module")
def llm(models):
    from llama_cpp import Llama

    return Llama(
        model_path=str(models["smollm2"]), n_ctx=1024, n_threads=2, seed=1, verbose=False
    )


def generate(llm, procs, seed):
    from llama_cpp import LogitsProcessorList

    eos = llm.token_eos()

    def no_eos(input_ids, scores):  # exactly T tokens, for every run alike
        scores[eos] = -np.inf
        return scores

    t0 = time.perf_counter()
    out = llm.create_chat_completion(
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=T,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        min_p=0.0,
        repeat_penalty=1.0,
        seed=seed,
        logits_processor=LogitsProcessorList([no_eos, *procs]),
    )
    secs = time.perf_counter() - t0
    n = out["usage"]["completion_tokens"]
    return out["choices"][0]["message"]["content"], n, secs


def cli_detect(text, registry, work, name):
    f = work / f"{name}.txt"
    f.write_text(text, encoding="utf-8")
    p = hm("detect", f, "--json", "--registry", registry["dir"])
    return json.loads(p.stdout), p.returncode


@pytest.mark.parametrize("scheme", ["kgw", "gumbel"])
def test_watermarked_generation_is_detected(llm, registry, scheme):
    key = hallmark.WatermarkKey.load(registry["keys"][scheme])
    proc = Timed(key.logits_processor(temperature=1.0, seed=11))
    text, n, secs = generate(llm, [proc], seed=11)
    assert n == T
    r, code = cli_detect(text, registry, registry["work"], f"llama-{scheme}")
    assert code == 0 and r["match"], r
    assert r["p_value"] <= 1e-5, r
    best = min(r["results"], key=lambda t: t["log10_p"])
    assert best["kind"] == scheme
    py = hallmark.Registry(registry["dir"]).detect_text(text)
    assert py["p_value"] == r["p_value"] and py["match"]
    print(
        f"FIGURE llama-cpp-python {scheme}: p = {r['p_value']:.3g}, {r['scored_tokens']} tokens "
        f"scored; processor {proc.seconds / proc.calls * 1e6:.0f} us/step over {proc.calls} steps"
    )


def test_control_stays_clean_and_overhead(llm, registry):
    """Plain generation is not matched; tokens/s with and without the processor."""
    plain = []
    for seed in (21, 22):
        text, n, secs = generate(llm, [], seed=seed)
        assert n == T
        r, code = cli_detect(text, registry, registry["work"], f"llama-plain-{seed}")
        assert code == 1 and not r["match"] and r["decided"], r
        plain.append(secs / n)
    key = hallmark.WatermarkKey.load(registry["keys"]["gumbel"])
    proc = Timed(key.logits_processor(seed=3))
    _, n, secs = generate(llm, [proc], seed=23)
    step = min(plain)
    per = proc.seconds / proc.calls
    print(
        f"FIGURE llama-cpp-python tokens/s: plain {1 / step:.1f}, watermarked {n / secs:.1f}; "
        f"processor {per * 1e6:.0f} us/step = {100 * per / step:.2f}% of a decode step"
    )
