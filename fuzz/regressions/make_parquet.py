"""Seed corpus of the `parquet` fuzz target (`detect --parquet`): small valid files that cover
the encodings and codecs the reader meets (plain and dictionary pages, snappy, zstd, gzip, no
compression, nulls, several row groups, a large-string column, a non-string column, page index
on/off), so fuzzing starts inside the format instead of guessing its magic and footer.

Run from the repository root with a Python that has pyarrow:
    test-models/cache/py/bin/python fuzz/regressions/make_parquet.py
"""

import io
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq

out = pathlib.Path("fuzz/regressions/parquet")
out.mkdir(parents=True, exist_ok=True)
texts = ["the quick brown fox", "", None, "jumps over the lazy dog", "é ü 漢字", "x" * 300]


def write(name, table, **kw):
    buf = io.BytesIO()
    pq.write_table(table, buf, **kw)
    data = buf.getvalue()
    assert len(data) <= 16384, (name, len(data))
    (out / f"ok-{name}.parquet").write_bytes(data)


t = pa.table({"text": pa.array(texts, pa.string()), "id": pa.array(range(len(texts)), pa.int64())})
write("plain-none", t, compression="none", use_dictionary=False)
write("dict-snappy", t, compression="snappy", use_dictionary=True)
write("zstd", t, compression="zstd")
write("gzip", t, compression="gzip")
write("row-groups", t, row_group_size=2, compression="none")
write("v1-pages", t, data_page_version="1.0", compression="none")
write("v2-pages", t, data_page_version="2.0", compression="snappy")
write("large-string", pa.table({"text": pa.array(texts, pa.large_string())}), compression="none")
write("page-index", t, write_page_index=True, compression="none")
write("int-text", pa.table({"text": pa.array([1, 2, 3], pa.int32())}), compression="none")
write("no-text-column", pa.table({"body": pa.array(texts, pa.string())}), compression="none")
write("many-rows", pa.table({"text": pa.array([f"row {i}" for i in range(500)], pa.string())}),
      compression="snappy", row_group_size=100)

# Refused: not Parquet, cut short, a footer that lies, no text column, a non-string column.
good = (out / "ok-plain-none.parquet").read_bytes()
(out / "err-empty.parquet").write_bytes(b"")
(out / "err-magic-only.parquet").write_bytes(b"PAR1PAR1")
(out / "err-truncated.parquet").write_bytes(good[: len(good) // 2])
(out / "err-no-tail-magic.parquet").write_bytes(good[:-4] + b"XXXX")
(out / "err-footer-len-huge.parquet").write_bytes(good[:-8] + (0x7FFFFFFF).to_bytes(4, "little") + b"PAR1")
(out / "err-footer-len-zero.parquet").write_bytes(good[:-8] + (0).to_bytes(4, "little") + b"PAR1")
for name in ["int-text", "no-text-column"]:
    (out / f"ok-{name}.parquet").rename(out / f"err-{name}.parquet")
# err-fuzz-*: inputs found by fuzzing, kept as they were found (not written by this script).
