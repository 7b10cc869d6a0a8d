"""Detection at scale: `Registry.detect_texts` from Python vs the CLI (`detect --jsonl`), per
core, and Spark local[2] over >= 100,000 documents; memory per Python worker.

The documents are the human null corpus (test-models/human/fortunes.jsonl) resampled with a
fixed seed, so every run scans the same texts. The registry holds a kgw and a gumbel key on
SmolLM2's tokenizer (made with the CLI), as in the tests.

Run (after test-models/fetch.sh, which builds the test virtualenv and installs the package):
    test-models/cache/py/bin/python benches/scale.py [--docs-core 20000] [--docs-spark 100000]
"""

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = os.environ.get("HALLMARK_BIN", str(ROOT / "target/release/hallmark"))
SMOLLM2 = ROOT / "test-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
HUMAN = ROOT / "test-models/human/fortunes.jsonl"


def corpus(n, seed=1):
    with open(HUMAN, encoding="utf-8") as f:
        base = [json.loads(line)["text"] for line in f if line.strip()]
    rng = random.Random(seed)
    return [rng.choice(base) for _ in range(n)]


def make_registry(work):
    reg = work / "keys"
    keys = []
    for scheme in ("kgw", "gumbel"):
        k = work / f"{scheme}.wmkey"
        subprocess.run([BIN, "wm-key", "--scheme", scheme, "--tokenizer", SMOLLM2, "--out", k], check=True, capture_output=True)
        keys.append(k)
    subprocess.run([BIN, "register", *keys, "--registry", reg], check=True, capture_output=True)
    return reg


def per_core(reg, texts, work):
    """Single-threaded docs/s and tokens/s: Python API vs CLI, same documents."""
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    code = (
        "import sys, json, time, hallmark\n"
        "texts = [json.loads(l)['text'] for l in open(sys.argv[2])]\n"
        "reg = hallmark.Registry(sys.argv[1])\n"
        "t0 = time.perf_counter(); rs = reg.detect_texts(texts); dt = time.perf_counter() - t0\n"
        "print(json.dumps({'secs': dt, 'tokens': sum(r.get('scored_tokens') or 0 for r in rs)}))\n"
    )
    docs = work / "docs.jsonl"
    with open(docs, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    py = json.loads(subprocess.run([sys.executable, "-c", code, reg, docs], env=env, check=True, capture_output=True, text=True).stdout)
    t0 = time.perf_counter()
    p = subprocess.run([BIN, "detect", "--jsonl", docs, "--json", "--registry", reg], env=env, capture_output=True, text=True)
    cli_secs = time.perf_counter() - t0
    assert p.returncode in (0, 1, 3), p.stderr
    n = len(texts)
    print(f"per core (RAYON_NUM_THREADS=1), {n} documents, {py['tokens']} tokens scored per key:")
    print(f"  python detect_texts : {n / py['secs']:9.0f} docs/s  {py['tokens'] / py['secs']:11.0f} tokens/s")
    print(f"  cli detect --jsonl  : {n / cli_secs:9.0f} docs/s  {py['tokens'] / cli_secs:11.0f} tokens/s (process start and JSON output included)")
    print(f"  ratio python/cli    : {cli_secs / py['secs']:.2f}")
    return n / py["secs"], py["tokens"] / py["secs"]


def key_sweep(work, texts):
    """How the registry's size enters the cost: docs/s on one core with 1, 4 and 16 text keys
    (one tokenizer: each text is tokenized once and scored once per key)."""
    import hallmark

    code = (
        "import sys, json, time, hallmark\n"
        "texts = [json.loads(l)['text'] for l in open(sys.argv[2])]\n"
        "reg = hallmark.Registry(sys.argv[1])\n"
        "t0 = time.perf_counter(); reg.detect_texts(texts); print(time.perf_counter() - t0)\n"
    )
    docs = work / "sweep.jsonl"
    with open(docs, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    print(f"registry size, one core, {len(texts)} documents:")
    for n in (1, 4, 16):
        reg = work / f"keys-{n}"
        keys = []
        for i in range(n):
            k = work / f"sweep-{n}-{i}.wmkey"
            scheme = "kgw" if i % 2 == 0 else "gumbel"
            subprocess.run([BIN, "wm-key", "--scheme", scheme, "--tokenizer", SMOLLM2, "--out", k], check=True, capture_output=True)
            keys.append(k)
        subprocess.run([BIN, "register", *keys, "--registry", reg], check=True, capture_output=True)
        secs = float(subprocess.run([sys.executable, "-c", code, reg, docs], env=env, check=True, capture_output=True, text=True).stdout)
        print(f"  {n:2d} keys: {len(texts) / secs:8.0f} docs/s, {secs / len(texts) * 1e6:7.1f} us/doc")


def spark_run(reg, n):
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    import hallmark.spark

    s = (
        SparkSession.builder.master("local[2]").appName("hallmark-scale")
        .config("spark.ui.enabled", "false")
        .config("spark.python.worker.reuse", "true")
        .getOrCreate()
    )
    texts = corpus(n, seed=2)
    df = s.createDataFrame([(i, t) for i, t in enumerate(texts)], "id long, text string").repartition(8).cache()
    df.count()
    t0 = time.perf_counter()
    out = hallmark.spark.detect(df, "text", registry=reg)
    agg = out.groupBy("status").count().collect()
    secs = time.perf_counter() - t0
    tokens = out.agg({"scored_tokens": "sum"}).collect()[0][0]

    def rss(it):
        import pyarrow as pa

        for _ in it:
            pass
        yield pa.RecordBatch.from_pydict({"rss_kb": [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]})

    peaks = [r["rss_kb"] for r in df.mapInArrow(rss, "rss_kb long").collect()]
    print(f"spark local[2], {n} documents: {secs:.1f} s, {n / secs:.0f} docs/s, {tokens / secs:.0f} tokens/s (2 cores)")
    print(f"  statuses: {sorted((r['status'], r['count']) for r in agg)}")
    print(f"  python worker peak RSS: {max(peaks) / 1024:.0f} MiB (max over {len(peaks)} partitions' workers)")
    s.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs-core", type=int, default=20000)
    ap.add_argument("--docs-spark", type=int, default=100000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        reg = make_registry(work)
        per_core(reg, corpus(a.docs_core), work)
        key_sweep(work, corpus(min(a.docs_core, 5000), seed=3))
        if a.docs_spark:
            spark_run(reg, a.docs_spark)


if __name__ == "__main__":
    main()
