"""Reading raw files' capture metadata (contracts §1 ``flowlake.capture``) from their footers, in Spark tasks."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession

from flowlake.capture.roll import CAPTURE_META_KEY, DROP_REASONS  # the writer's names, defined once
from flowlake.storage import resolve
from flowlake.timeutil import HOUR_MS, day_start_ms

LOSS_REASONS = ("conn_map_full", "ringbuf_full", "spool_evicted_files", "untracked_closes")
DROP_COLUMNS = tuple(f"drops_{r}" for r in DROP_REASONS)

META_OK = "ok"
META_MISSING = "missing"
META_UNREADABLE = "unreadable"

FILE_META_DDL = (
    "source_file string, instance_id string, key_hour_ms bigint, meta_status string, meta_reason string, "
    "run_id string, seq bigint, intervals array<bigint>, "
    + ", ".join(f"{c} bigint" for c in DROP_COLUMNS) + ", records bigint"
)
_KEY_RE = re.compile(r"dt=(\d{4}-\d{2}-\d{2})/hr=(\d{2})/instance=([^/]+)/(\d+)-(\d+)\.parquet$")
FILES_PER_TASK = 256


def _arrow_schema() -> pa.Schema:
    types = {"string": pa.string(), "bigint": pa.int64(), "array<bigint>": pa.list_(pa.int64())}
    return pa.schema([(c.split(" ", 1)[0], types[c.split(" ", 1)[1]]) for c in FILE_META_DDL.split(", ")])


def _key_parts(key: str) -> tuple[str | None, int | None, int | None]:
    """(instance_id, hour start ms, seq) from a contract key, or Nones."""
    m = _KEY_RE.search(key)
    if not m:
        return None, None, None
    return m.group(3), day_start_ms(m.group(1)) + int(m.group(2)) * HOUR_MS, int(m.group(5))


def parse_capture_meta(key: str, metadata: dict[bytes, bytes] | None) -> dict:
    """One per-file row (FILE_META_DDL) from a file's key and its Parquet key-value metadata.

    Without ``flowlake.capture`` the row says ``meta_status`` = ``missing``, and
    instance and seq come from the key (contracts §1: the key's seq is the same).
    """
    instance, key_hour, key_seq = _key_parts(key)
    row = {"source_file": key, "instance_id": instance, "key_hour_ms": key_hour, "meta_status": META_MISSING,
           "meta_reason": f"no {CAPTURE_META_KEY.decode()} key-value metadata", "run_id": None, "seq": key_seq,
           "intervals": None, "records": None, **{c: None for c in DROP_COLUMNS}}
    raw = (metadata or {}).get(CAPTURE_META_KEY)
    if raw is None:
        return row
    try:
        meta = json.loads(raw)
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        seq = int(meta["seq"])
        intervals = sorted(int(v) for v in meta.get("intervals") or [])
        drops = meta.get("drops") or {}
        values = {f"drops_{r}": int(drops.get(r, 0)) for r in DROP_REASONS}
        records = meta.get("records")
        run_id = meta.get("run_id")
    except (ValueError, TypeError, KeyError) as err:
        row.update(meta_status=META_UNREADABLE, meta_reason=f"{CAPTURE_META_KEY.decode()} unreadable: "
                   f"{type(err).__name__}: {str(err)[:120]}")
        return row
    row.update(meta_status=META_OK, meta_reason=None, run_id=str(run_id) if run_id else None, seq=seq,
               intervals=intervals, records=int(records) if records is not None else None, **values)
    row["instance_id"] = str(meta.get("instance_id") or instance or "") or None
    return row


def read_capture_meta(spark: SparkSession, *, raw_root: str, keys: Iterable[str]) -> DataFrame:
    """One row per raw flow file (FILE_META_DDL): its footer's ``flowlake.capture``, read in Spark tasks.

    Only footers are read (``pq.read_metadata``). A file whose footer cannot be
    read gives a row with ``meta_status`` = ``unreadable`` and the reason;
    ``source_file`` is the file's URI, as in bronze.
    """
    keys = sorted(set(keys))
    schema = _arrow_schema()

    def read_batches(batches):
        loc = resolve(raw_root)
        for batch in batches:
            rows = []
            for key in batch.column("key").to_pylist():
                path = f"{loc.path}/{key}"
                try:
                    with loc.fs.open_input_file(path) as f:
                        metadata = pq.read_metadata(f).metadata
                    row = parse_capture_meta(key, metadata)
                except Exception as err:  # noqa: BLE001 - any unreadable footer is reported, not raised
                    row = parse_capture_meta(key, None)
                    row.update(meta_status=META_UNREADABLE,
                               meta_reason=f"footer unreadable: {type(err).__name__}: {str(err)[:160]}")
                row["source_file"] = loc.uri(path)
                rows.append(row)
            yield pa.RecordBatch.from_pylist(rows, schema=schema)

    if not keys:
        return spark.createDataFrame([], FILE_META_DDL)
    parts = max(1, min(len(keys) // FILES_PER_TASK + 1, spark.sparkContext.defaultParallelism * 4))
    keys_df = spark.createDataFrame([(k,) for k in keys], "key string").repartition(parts)
    return keys_df.mapInArrow(read_batches, FILE_META_DDL)
