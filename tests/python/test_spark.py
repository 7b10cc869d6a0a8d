"""hallmark.spark.detect in local[2] mode equals the CLI, document for document."""

import os
import sys

import pytest

import hallmark
import hallmark.spark
from conftest import cli_detect_texts, synthetic_marked


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
