"""Watermarked generation with HF transformers (SmolLM2 read from its GGUF) through a
`LogitsProcessorList`; `hallmark detect` finds it, the control stays clean."""

import json
import time

import pytest

import hallmark
from conftest import Timed, hm

T = 200
PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm."


@pytest.fixture(scope="module")
def hf(models):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    d, name = str(models["smollm2"].parent), models["smollm2"].name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, torch_dtype=torch.float32)
    model.eval()
    return tok, model


def generate(hf, procs, seed, sample):
    import torch
    from transformers import LogitsProcessorList

    tok, model = hf
    enc = tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    ids = enc["input_ids"]
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=enc["attention_mask"],
            max_new_tokens=T,
            min_new_tokens=T,
            do_sample=sample,
            top_k=0 if sample else None,
            top_p=1.0 if sample else None,
            temperature=1.0 if sample else None,
            logits_processor=LogitsProcessorList(procs),
            pad_token_id=tok.eos_token_id,
        )
    secs = time.perf_counter() - t0
    new = out[0, ids.shape[1]:]
    return tok.decode(new, skip_special_tokens=True), len(new), secs


def cli_detect(text, registry, name):
    f = registry["work"] / f"{name}.txt"
    f.write_text(text, encoding="utf-8")
    p = hm("detect", f, "--json", "--registry", registry["dir"])
    return json.loads(p.stdout), p.returncode


@pytest.mark.parametrize("scheme", ["kgw", "gumbel"])
def test_watermarked_generation_is_detected(hf, registry, scheme):
    key = hallmark.WatermarkKey.load(registry["keys"][scheme])
    proc = Timed(key.logits_processor(temperature=1.0, seed=5))
    # The downstream sampler is greedy: it keeps the token the processor forced.
    text, n, secs = generate(hf, [proc], seed=5, sample=False)
    assert n == T
    r, code = cli_detect(text, registry, f"hf-{scheme}")
    assert code == 0 and r["match"] and r["p_value"] <= 1e-5, r
    best = min(r["results"], key=lambda t: t["log10_p"])
    assert best["kind"] == scheme
    print(
        f"FIGURE transformers {scheme}: p = {r['p_value']:.3g}, {r['scored_tokens']} tokens "
        f"scored; processor {proc.seconds / proc.calls * 1e6:.0f} us/step; "
        f"{n / secs:.1f} tokens/s watermarked"
    )


def test_control_stays_clean(hf, registry):
    text, n, secs = generate(hf, [], seed=8, sample=True)
    assert n == T
    r, code = cli_detect(text, registry, "hf-plain")
    assert code == 1 and not r["match"] and r["decided"], r
    print(f"FIGURE transformers tokens/s: plain {n / secs:.1f}")
