"""`hallmark detect --parquet FILE --column C` equals `--jsonl` over the same documents."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import cli_detect_texts, hm, synthetic_marked


@pytest.mark.parametrize("compression,large", [("snappy", False), ("zstd", True), ("gzip", False), ("none", False)])
def test_parquet_equals_jsonl(registry, human_texts, compression, large):
    texts = human_texts[:400] + [synthetic_marked(registry["keys"]["kgw"], seed=1)]
    typ = pa.large_string() if large else pa.string()
    table = pa.table({"id": list(range(len(texts) + 1)), "body": pa.array(texts + [None], typ)})
    f = registry["work"] / f"docs-{compression}.parquet"
    pq.write_table(table, f, compression=compression, row_group_size=128)
    p = hm("detect", "--parquet", f, "--column", "body", "--json", "--registry", registry["dir"])
    got = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    assert len(got) == len(texts) + 1
    want = cli_detect_texts(texts, registry["dir"], registry["work"], name=f"pq-{compression}")
    for i, (g, w) in enumerate(zip(got, want)):
        assert g["input"] == f"{f}:{i + 1}"
        g, w = dict(g), dict(w)
        g.pop("input"), w.pop("input")
        assert g == w, i
    assert got[-1]["status"] == "error" and "null" in got[-1]["error"]
    # any match wins the exit code
    assert p.returncode == 0


def test_parquet_bad_input(registry, tmp_path):
    f = tmp_path / "t.parquet"
    pq.write_table(pa.table({"n": [1, 2]}), f)
    p = hm("detect", "--parquet", f, "--column", "n", "--registry", registry["dir"], check=False)
    assert p.returncode == 2 and "not a string column" in p.stderr
    p = hm("detect", "--parquet", f, "--registry", registry["dir"], check=False)
    assert p.returncode == 2 and "no column `text`" in p.stderr
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 this is not parquet")
    p = hm("detect", "--parquet", junk, "--registry", registry["dir"], check=False)
    assert p.returncode == 2 and p.stderr.startswith("hallmark: ")
    p = hm("detect", "--parquet", tmp_path / "missing.parquet", "--registry", registry["dir"], check=False)
    assert p.returncode == 2
