"""hallmark.spark.detect in local[2] mode equals the CLI, document for document."""

import os
import re
import subprocess
import sys

import pytest

import hallmark
import hallmark.spark
from conftest import ROOT, cli_detect_texts, hm, synthetic_marked


@pytest.fixture(scope="module")
def spark():
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    s = (
        SparkSession.builder.master("local[2]")
        .appName("hallmark-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "256")
        .getOrCreate()
    )
    yield s
    s.stop()


def test_spark_equals_cli(spark, registry, human_texts):
    marked = [synthetic_marked(registry["keys"][s], seed=i) for s in ("kgw", "gumbel") for i in range(2)]
    texts = human_texts + marked
    rows = [(i, t) for i, t in enumerate(texts)] + [(len(texts), None)]
    df = spark.createDataFrame(rows, "id long, text string").repartition(4)
    out = hallmark.spark.detect(df, "text", registry=registry["dir"], alpha=1e-3)
    assert out.columns == ["id", "text", *hallmark.spark.COLUMNS]
    got = {r["id"]: r for r in out.collect()}
    assert len(got) == len(rows)
    cli = cli_detect_texts(texts, registry["dir"], registry["work"], name="spark")
    for i, want in enumerate(cli):
        g = got[i]
        assert g["match"] == want["match"], (i, g, want)
        assert g["p_value"] == want["p_value"], (i, g, want)
        assert g["decided"] == want["decided"], (i, g, want)
        assert g["scored_tokens"] == want.get("scored_tokens"), (i, g, want)
        assert g["status"] == want["status"], (i, g, want)
        if want["match"]:
            best = min(want["results"], key=lambda t: t["log10_p"])
            assert g["key"] == best["name"]
    # The null text is an error, never clean.
    null = got[len(texts)]
    assert null["status"] == "error" and not null["match"] and not null["decided"]
    # Every watermarked document matched; human ones only at the null's rate (see test_api).
    assert all(got[i]["match"] for i in range(len(human_texts), len(texts)))
    assert sum(got[i]["match"] for i in range(len(human_texts))) <= 12


def test_spark_bad_input(spark, registry, tmp_path):
    df = spark.createDataFrame([(1, "x")], "id long, text string")
    with pytest.raises(hallmark.InputError, match="no column `body`"):
        hallmark.spark.detect(df, "body", registry=registry["dir"])
    with pytest.raises(hallmark.InputError, match="not a string"):
        hallmark.spark.detect(df, "id", registry=registry["dir"])
    with pytest.raises(hallmark.RegistryError):
        hallmark.spark.detect(df, "text", registry=tmp_path / "missing")
    with pytest.raises(hallmark.InputError, match="alpha"):
        hallmark.spark.detect(df, "text", registry=registry["dir"], alpha=0)
    clash = spark.createDataFrame([(1, "x")], "match long, text string")
    with pytest.raises(hallmark.InputError, match="already has"):
        hallmark.spark.detect(clash, "text", registry=registry["dir"])


def _readme_spark_block():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- spark-example[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert m, "README.md has no spark-example block"
    return m.group(1)


def _scratch(tmp_path, models):
    """A scratch directory as the README's recipe leaves it: the example and a py-keys registry."""
    (tmp_path / "spark_example.py").write_text(_readme_spark_block(), encoding="utf-8")
    hm("wm-key", "--scheme", "gumbel", "--tokenizer", models["smollm2"], "--out", tmp_path / "chat.wmkey")
    r = hm("register", tmp_path / "chat.wmkey", "--registry", tmp_path / "py-keys")
    assert r.returncode == 0, r.stderr


def _run_example(tmp_path, worker_python):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_")}
    env.pop("HALLMARK_REGISTRY", None)
    # `export PYSPARK_PYTHON="$(command -v python)"` in the activated virtualenv
    env["PYSPARK_PYTHON"] = worker_python
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return subprocess.run(
        [sys.executable, "spark_example.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )


def test_readme_spark_example_runs_as_written(tmp_path, models):
    _scratch(tmp_path, models)
    # An activated virtualenv's `python` is the venv's bin/python (not a resolved symlink).
    p = _run_example(tmp_path, os.path.join(os.path.dirname(sys.executable), "python"))
    assert p.returncode == 0, p.stderr[-4000:]
    assert p.stdout.splitlines() == ["1 undecided None", "2 error None"], p.stdout


def test_readme_spark_install_line_brings_what_detect_needs():
    """The recipe's `pip install` must bring pandas and pyarrow: pyspark's mapInArrow needs
    both on the driver, and this test environment has them anyway, so the example's run alone
    would not notice a recipe that lacks them."""
    from importlib.metadata import requires

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^python3 -m venv \.venv .*?pip install (.*)$", text, re.M)
    assert m, "README.md has no Spark venv recipe line"
    brought = set()
    for arg in m.group(1).split():
        arg = arg.strip('"')
        if arg.startswith("./python"):
            brought.add("hallmark")
            continue
        name, _, extra = arg.partition("[")
        brought.add(name)
        extra = extra.rstrip("]")
        for req in requires(name) or []:
            base, _, marker = req.partition(";")
            if not marker or (extra and f'extra == "{extra}"' in marker):
                brought.add(re.split(r"[<>=!~ \[(]", base.strip())[0].lower())
    assert {"hallmark", "pyspark", "pandas", "pyarrow"} <= brought, brought


def test_spark_workers_without_hallmark_get_a_clear_error(tmp_path, models):
    """The new user's case: the driver runs in a virtualenv, Spark's workers run the system
    Python, which has no hallmark. detect() must say so and name the fix, on the driver."""
    _scratch(tmp_path, models)
    system_python = sys._base_executable
    assert os.path.realpath(system_python) != os.path.realpath(sys.executable) or sys.prefix != sys.base_prefix
    probe = subprocess.run([system_python, "-c", "import hallmark"], capture_output=True, text=True)
    assert probe.returncode != 0, "the base interpreter has hallmark installed; this test needs one without"
    p = _run_example(tmp_path, system_python)
    assert p.returncode != 0, p.stdout
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("hallmark.spark.SparkWorkerError: "), p.stderr[-4000:]
    assert "PYSPARK_PYTHON=" in last and "spark.archives" in last, last
    assert system_python in last or "failed to start" in last, last


def test_spark_worker_check_runs_once_per_application(spark, registry):
    """detect() checks the workers with one eager job the first time in an application and never
    again (detect itself is lazy: without the check it starts no job)."""
    df = spark.createDataFrame([(1, "x")], "id long, text string")
    sc = spark.sparkContext
    tracker = sc.statusTracker()
    hallmark.spark._WORKERS_OK.discard(sc.applicationId)
    sc.setJobGroup("hallmark-first", "first detect")
    hallmark.spark.detect(df, "text", registry=registry["dir"])
    assert len(tracker.getJobIdsForGroup("hallmark-first")) == 1
    sc.setJobGroup("hallmark-second", "second detect")
    out = hallmark.spark.detect(df, "text", registry=registry["dir"])
    assert list(tracker.getJobIdsForGroup("hallmark-second")) == []
    assert [r["status"] for r in out.collect()] == ["undecided"]
