"""Shared fixtures: the hallmark CLI built by cargo, the real models, a registry made with the
CLI, the human null corpus, and a CLI `detect` runner to compare the Python results with."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("HALLMARK_ROOT", Path(__file__).resolve().parents[2]))
BIN = os.environ.get("HALLMARK_BIN", str(ROOT / "target/release/hallmark"))
SMOLLM2 = ROOT / "test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = ROOT / "test-models/real/minilm"
HUMAN = ROOT / "test-models/human/fortunes.jsonl"


def hm(*args, check=True):
    """Run the hallmark CLI; returns the CompletedProcess."""
    p = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True)
    if check and p.returncode not in (0, 1, 3):
        raise AssertionError(f"hallmark {args} exited {p.returncode}: {p.stderr}")
    return p


@pytest.fixture(scope="session")
def models():
    for p in (SMOLLM2, MINILM / "model.safetensors", HUMAN):
        assert p.exists(), f"{p} missing: run test-models/fetch.sh"
    return {"smollm2": SMOLLM2, "minilm": MINILM, "human": HUMAN}


@pytest.fixture(scope="session")
def registry(tmp_path_factory, models):
    """A registry with a kgw and a gumbel key on SmolLM2's tokenizer and MiniLM's fingerprint."""
    d = tmp_path_factory.mktemp("work")
    reg = d / "keys"
    keys = {}
    for scheme in ("kgw", "gumbel"):
        k = d / f"{scheme}.wmkey"
        hm("wm-key", "--scheme", scheme, "--tokenizer", models["smollm2"], "--out", k)
        keys[scheme] = k
    fp = d / "minilm.fp"
    hm("fingerprint", models["minilm"], "--out", fp, "--name", "minilm")
    r = hm("register", keys["kgw"], keys["gumbel"], fp, "--registry", reg)
    assert r.returncode == 0, r.stderr
    return {"dir": reg, "keys": keys, "work": d}


@pytest.fixture(scope="session")
def human_texts(models):
    with open(models["human"], encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def cli_detect_texts(texts, registry_dir, work, alpha=1e-3, name="docs"):
    """`hallmark detect --jsonl --json` over texts: one report per text, in order."""
    f = Path(work) / f"{name}.jsonl"
    with open(f, "w", encoding="utf-8") as out:
        for t in texts:
            out.write(json.dumps({"text": t}) + "\n")
    p = hm("detect", "--jsonl", f, "--json", "--registry", registry_dir, "--alpha", alpha, check=False)
    assert p.returncode in (0, 1, 2, 3), p.stderr
    reports = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    assert len(reports) == len(texts), p.stderr
    return reports


def same_verdicts(py, cli):
    """Python and CLI reports agree on every verdict and p-value, exactly (inputs differ)."""
    assert len(py) == len(cli)
    for i, (a, b) in enumerate(zip(py, cli)):
        a = dict(a)
        b = dict(b)
        a.pop("input")
        b.pop("input")
        assert a == b, f"document {i}: python {a} != cli {b}"


def synthetic_marked(key_path, n_tokens=200, seed=7, temperature=1.0):
    """Watermarked text without a model: the processor samples from random logits (a fixed
    numpy RNG, vocabulary 49,152) and the key's tokenizer decodes the tokens."""
    import numpy as np

    import hallmark

    key = hallmark.WatermarkKey.load(key_path)
    proc = key.logits_processor(temperature=temperature, seed=seed)
    rng = np.random.default_rng(seed)
    ids = key.encode("Once upon a time")
    for _ in range(n_tokens):
        logits = (rng.standard_normal(49152) * 3.0).astype(np.float32)
        out = proc(np.array(ids, dtype=np.int64), logits)
        ids.append(int(np.argmax(out)))
    return key.decode(ids[len(key.encode("Once upon a time")):])


class Timed:
    """Wraps a logits processor and accumulates the time spent in it."""

    def __init__(self, inner):
        self.inner = inner
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, input_ids, scores):
        t0 = time.perf_counter()
        out = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out
