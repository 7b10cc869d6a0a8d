"""Detection over a Spark DataFrame of texts, on Arrow (``mapInArrow``).

The registry directory is read once on the driver and broadcast; each Python worker writes it
to a private temporary directory once and opens it there, so no row ever re-reads or re-ships
keys. Each Arrow batch is tested by :meth:`hallmark.Registry.detect_texts` (the CLI's code,
GIL released); verdicts and p-values equal ``hallmark detect`` on the same texts.

Spark runs its Python workers with its own interpreter (``PYSPARK_PYTHON``, or the
``spark.pyspark.python`` setting; ``python3`` when neither is set), not necessarily the one the
driver runs in. Before the first job of a Spark application, :func:`detect` runs one tiny task
that imports hallmark on a worker and raises :class:`SparkWorkerError`, naming the worker's
interpreter and the fix, when it cannot: otherwise the job would fail deep inside the executors
with ``ModuleNotFoundError: No module named 'hallmark'``.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import sys
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple, Union

from . import Error, InputError, Registry, RegistryError, __version__

__all__ = ["detect", "COLUMNS", "SparkWorkerError"]


class SparkWorkerError(Error):
    """Spark's Python workers cannot run hallmark: they start an interpreter that does not have
    this package (or pyarrow) installed, or has another version of it."""

#: The columns :func:`detect` appends, in order.
COLUMNS = ("match", "p_value", "decided", "scored_tokens", "key", "status")

#: Largest registry shipped to executors (keys and fingerprints are small; a bigger directory is
#: almost certainly the wrong one).
MAX_REGISTRY_BYTES = 256 << 20

# Registries materialised in this worker process, by content digest.
_OPENED: Dict[str, Registry] = {}

# Spark applications (by id) whose Python workers were seen to import this hallmark.
_WORKERS_OK: Set[str] = set()

_WORKER_FIX = (
    "Spark starts its Python workers with PYSPARK_PYTHON (or spark.pyspark.python given to "
    "spark-submit or in spark-defaults.conf; a SparkSession's .config() does not reach it; "
    "`python3` from PATH when neither is set), not with the driver's interpreter. Locally, set "
    "PYSPARK_PYTHON={driver} in the environment before the SparkSession starts. On a cluster, "
    "install hallmark and pyarrow on every node into the interpreter PYSPARK_PYTHON names, or "
    "ship a packed virtual environment with spark.archives (see the README, section Python)."
)


def _check_workers(spark: Any) -> None:
    """Run one task that imports hallmark in a Python worker; raise SparkWorkerError, naming the
    worker's interpreter and the fix, when it cannot. Once per Spark application."""
    sc = spark.sparkContext
    app = sc.applicationId
    if app in _WORKERS_OK:
        return

    # Defined here, not at module level, so that cloudpickle ships it by value: a function of
    # this module would be pickled by reference and fail to unpickle on a worker without
    # hallmark, before it could report anything.
    def probe(_: Any) -> Iterator[Tuple[str, Optional[str], Optional[str]]]:
        import sys as worker_sys

        try:
            import hallmark as worker_hallmark
            import pyarrow  # noqa: F401

            yield (worker_sys.executable, worker_hallmark.__version__, None)
        except Exception as e:  # reported on the driver, with the fix
            yield (worker_sys.executable, None, f"{type(e).__name__}: {e}")

    fix = _WORKER_FIX.format(driver=sys.executable)
    try:
        found = sc.parallelize([0], 1).mapPartitions(probe).collect()
    except Exception as e:
        # The worker could not even start the task (no pyspark or cloudpickle there, or an
        # interpreter that does not exist): Spark's own error, trimmed to its first lines.
        first = " / ".join(line.strip()[:300] for line in str(e).strip().splitlines()[:3])
        raise SparkWorkerError(
            f"Spark's Python workers failed to start a task ({first}). {fix}"
        ) from None
    if len(found) != 1:
        raise SparkWorkerError(f"Spark's Python worker check returned {len(found)} rows. {fix}")
    exe, version, err = found[0]
    if err is not None:
        raise SparkWorkerError(
            f"Spark's Python workers run {exe}, which cannot import hallmark and pyarrow "
            f"({err}). {fix}"
        )
    if version != __version__:
        raise SparkWorkerError(
            f"Spark's Python workers run {exe} with hallmark {version}, but the driver has "
            f"hallmark {__version__}; install the same version everywhere. {fix}"
        )
    _WORKERS_OK.add(app)


def _pack(path: str) -> Tuple[str, List[Tuple[str, bytes]]]:
    """Every regular file under the registry directory, as (relative path, bytes), with a
    digest of the whole. Symlinks are followed as the CLI follows them."""
    if not os.path.isdir(path):
        raise RegistryError(f"opening registry {path}: not a directory")
    files: List[Tuple[str, bytes]] = []
    total = 0
    for root, dirs, names in os.walk(path, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(root, name)
            if not os.path.isfile(full):
                continue
            with open(full, "rb") as f:
                data = f.read()
            total += len(data)
            if total > MAX_REGISTRY_BYTES:
                raise RegistryError(
                    f"registry {path} holds more than {MAX_REGISTRY_BYTES} bytes; "
                    "is it the right directory?"
                )
            files.append((os.path.relpath(full, path), data))
    h = hashlib.sha256()
    for rel, data in files:
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest(), files


def _open_shipped(packed: Tuple[str, List[Tuple[str, bytes]]]) -> Registry:
    digest, files = packed
    reg = _OPENED.get(digest)
    if reg is not None:
        return reg
    # Private (0700) directory; watermark keys are secrets (0600).
    root = tempfile.mkdtemp(prefix=f"hallmark-registry-{digest[:12]}-")
    for rel, data in files:
        dest = os.path.join(root, rel)
        os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    reg = Registry(root)
    _OPENED[digest] = reg
    return reg


def _best_key(report: Dict[str, Any]) -> Optional[str]:
    """The name of the entry with the smallest adjusted p-value (a matching one first)."""
    best = None
    for r in report.get("results", []):
        if r.get("p_value") is None:
            continue
        k = (not r.get("match", False), r.get("log10_p", 0.0))
        if best is None or k < best[0]:
            best = (k, r["name"])
    return None if best is None else best[1]


def _columns(reports: List[Optional[Dict[str, Any]]]) -> Dict[str, list]:
    out: Dict[str, list] = {c: [] for c in COLUMNS}
    for r in reports:
        if r is None:  # a null text: nothing to test
            out["match"].append(False)
            out["p_value"].append(None)
            out["decided"].append(False)
            out["scored_tokens"].append(None)
            out["key"].append(None)
            out["status"].append("error")
            continue
        out["match"].append(bool(r["match"]))
        out["p_value"].append(r.get("p_value"))
        out["decided"].append(bool(r["decided"]))
        out["scored_tokens"].append(r.get("scored_tokens"))
        out["key"].append(_best_key(r))
        out["status"].append(r["status"])
    return out


def detect(
    df: Any,
    text_col: str,
    registry: Union[None, str, "os.PathLike[str]", Registry] = None,
    alpha: float = 1e-3,
) -> Any:
    """``df`` with the columns of :data:`COLUMNS` appended: ``match`` (bool), ``p_value``
    (double; null when undecided, as in ``detect --json``), ``decided`` (bool),
    ``scored_tokens`` (long), ``key`` (the best entry's name) and ``status`` (``match``,
    ``no_match``, ``undecided`` or ``error``). A null text is ``status = "error"``, never clean.

    ``registry`` is a directory (default: ``$HALLMARK_REGISTRY``, else ``./keys``) or a
    :class:`hallmark.Registry`; it is read once on the driver and broadcast. ``alpha`` bounds
    the family-wise false-positive rate across all registered keys, per document.
    """
    from pyspark.sql import types as T

    a = float(alpha)
    if not (0.0 < a < 1.0):
        raise InputError(f"alpha must be in (0, 1), got {alpha}")
    if text_col not in df.columns:
        raise InputError(f"no column `{text_col}` (columns: {', '.join(df.columns)})")
    field = df.schema[text_col]
    if not isinstance(field.dataType, T.StringType):
        raise InputError(f"column `{text_col}` is {field.dataType.simpleString()}, not a string")
    clash = [c for c in COLUMNS if c in df.columns]
    if clash:
        raise InputError(f"the DataFrame already has column(s) {', '.join(clash)}")
    if isinstance(registry, Registry):
        path = registry.path
    else:
        path = os.fspath(registry) if registry is not None else None
        path = Registry(path).path  # the CLI's rules and errors, on the driver
    _check_workers(df.sparkSession)
    shipped = df.sparkSession.sparkContext.broadcast(_pack(path))
    task_cpus = df.sparkSession.conf.get("spark.task.cpus", "1")
    schema = T.StructType(
        list(df.schema.fields)
        + [
            T.StructField("match", T.BooleanType(), False),
            T.StructField("p_value", T.DoubleType(), True),
            T.StructField("decided", T.BooleanType(), False),
            T.StructField("scored_tokens", T.LongType(), True),
            T.StructField("key", T.StringType(), True),
            T.StructField("status", T.StringType(), False),
        ]
    )

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        # One task, one core (Spark's model): keep hallmark's thread pool to the task's share.
        os.environ.setdefault("RAYON_NUM_THREADS", str(task_cpus))
        reg = _open_shipped(shipped.value)
        for batch in batches:
            texts = batch.column(batch.schema.get_field_index(text_col)).to_pylist()
            present = [t for t in texts if t is not None]
            found = iter(reg.detect_texts(present, alpha=a)) if present else iter(())
            reports = [None if t is None else next(found) for t in texts]
            cols = _columns(reports)
            arrays = list(batch.columns) + [
                pa.array(cols["match"], pa.bool_()),
                pa.array(cols["p_value"], pa.float64()),
                pa.array(cols["decided"], pa.bool_()),
                pa.array(cols["scored_tokens"], pa.int64()),
                pa.array(cols["key"], pa.string()),
                pa.array(cols["status"], pa.string()),
            ]
            yield pa.RecordBatch.from_arrays(arrays, names=list(batch.schema.names) + list(COLUMNS))

    return df.mapInArrow(run, schema)
