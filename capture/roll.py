"""Roll interval records into raw flow files (contracts §1): zstd Parquet, written atomically.

Each finished interval is written at once as a durable part under
``staging/``; every ``intervals_per_file`` intervals (or at
``max_file_records``) the parts are merged into one file placed in the
spool with a tmp-file + fsync + rename, so no reader ever sees half a file.
Parts left by a crash are merged into a file on the next start. Each file
carries ``flowlake.capture`` key-value metadata (run id, seq, intervals
covered, drops by reason since the previous file; see docs/capture.md).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from flowlake.contracts import PARQUET_COMPRESSION, RAW_FLOW_SCHEMA, raw_flow_key

from .upload import Spool

log = logging.getLogger(__name__)


def write_parquet_atomic(*, table: pa.Table, path: Path) -> None:
    """Write ``table`` as zstd Parquet at ``path``: invisible until complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    pq.write_table(table, tmp, compression=PARQUET_COMPRESSION)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def records_table(records: list[dict]) -> pa.Table:
    """Records -> a table with exactly the contract's schema (and its version metadata)."""
    return pa.Table.from_pylist(records, schema=RAW_FLOW_SCHEMA)


class SequenceCounter:
    """A per-instance file sequence number that survives restarts (keys never repeat)."""

    def __init__(self, *, path: Path) -> None:
        self.path = path
        self.value = int(path.read_text()) if path.is_file() else 0

    def next(self) -> int:
        self.value += 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(str(self.value))
        os.replace(tmp, self.path)
        return self.value


DROP_REASONS = ("conn_map_full", "flow_map_full", "ringbuf_full", "spool_evicted_files", "untracked_closes")
CAPTURE_META_KEY = b"flowlake.capture"


def capture_metadata(*, run_id: str, seq: int, instance_id: str, intervals: list[int], drops: dict[str, int],
                     records: int) -> bytes:
    """The ``flowlake.capture`` key-value metadata of one raw file (contracts §1), as JSON bytes."""
    return json.dumps({
        "run_id": run_id,
        "seq": seq,
        "instance_id": instance_id,
        "intervals": sorted(intervals),
        "drops": {reason: int(drops.get(reason, 0)) for reason in sorted({*DROP_REASONS, *drops})},
        "records": records,
    }, sort_keys=True).encode()


def with_capture_metadata(table: pa.Table, meta: bytes) -> pa.Table:
    """``table`` with ``flowlake.capture`` added to its schema metadata (schema_version kept)."""
    return table.replace_schema_metadata({**(table.schema.metadata or {}), CAPTURE_META_KEY: meta})


def _interval_list(meta: dict) -> list[int]:
    value = meta.get("intervals", [])
    return list(value) if isinstance(value, list) else []  # older state kept only a count


class RollingWriter:
    """Collects intervals into the current file and closes it into the spool.

    The file key comes from the earliest ``interval_start_ms`` among the
    file's records: an interval without records never names a file, and a
    batch without any record writes no file at all (its intervals and drops
    are carried into the next file's ``flowlake.capture`` metadata).
    """

    def __init__(self, *, staging_dir: Path, spool: Spool, instance_id: str, seq: SequenceCounter,
                 intervals_per_file: int, max_file_records: int, run_id: str = "") -> None:
        if intervals_per_file < 1 or max_file_records < 1:
            raise ValueError("intervals_per_file and max_file_records must be at least 1")
        raw_flow_key(instance_id=instance_id, first_interval_start_ms=0, seq=0)  # validates the id
        self.staging_dir = staging_dir
        self.spool = spool
        self.instance_id = instance_id
        self.seq = seq
        self.run_id = run_id or uuid.uuid4().hex
        self.intervals_per_file = intervals_per_file
        self.max_file_records = max_file_records
        self.files_written = 0
        self.records_written = 0
        self.staging_dir.mkdir(parents=True, exist_ok=True)

    def configure(self, *, intervals_per_file: int, max_file_records: int) -> None:
        """Apply new rolling limits (hot reload)."""
        self.intervals_per_file = intervals_per_file
        self.max_file_records = max_file_records

    def _parts(self) -> list[Path]:
        return sorted(self.staging_dir.glob("part-*.parquet"))

    @property
    def last_interval_start_ms(self) -> int | None:
        """Start of the last interval staged (durable across restarts; None before the first)."""
        return self._meta().get("last_interval_start_ms")

    def add_interval(self, records: list[dict], *, interval_start_ms: int,
                     drops: dict[str, int] | None = None) -> list[str]:
        """Stage one interval's records (and the drops counted in it); returns the keys of files closed."""
        meta = self._meta()
        meta["batch"] = meta.get("batch", 0) + 1
        meta["records"] = meta.get("records", 0) + len(records)
        meta["intervals"] = [*_interval_list(meta), interval_start_ms]
        pending = meta.setdefault("drops", {})
        for reason, count in (drops or {}).items():
            pending[reason] = pending.get(reason, 0) + int(count)
        meta["last_interval_start_ms"] = interval_start_ms
        if meta["batch"] >= self.intervals_per_file or meta["records"] >= self.max_file_records:
            # closes the file now: the interval goes straight in, not through a part
            return self._close(meta, records_table(records) if records else None)
        if records:
            write_parquet_atomic(table=records_table(records),
                                 path=self.staging_dir / f"part-{interval_start_ms:015d}.parquet")
        self._write_meta(meta)
        return []

    def close_file(self) -> list[str]:
        """Merge the staged intervals into one file in the spool.

        No file is written while no record is staged; the intervals and drops
        seen so far then wait for the next file.
        """
        return self._close(self._meta(), None)

    def _close(self, meta: dict, extra: pa.Table | None) -> list[str]:
        parts = self._parts()
        carry = {k: meta[k] for k in ("drops", "last_interval_start_ms") if k in meta} | {"intervals": _interval_list(meta)}
        tables = [pq.read_table(p) for p in parts] + ([extra] if extra is not None else [])
        table = pa.concat_tables(tables).cast(RAW_FLOW_SCHEMA) if tables else None
        if table is None or table.num_rows == 0:  # (parts of an older version may be empty)
            for p in parts:
                p.unlink()
            self._write_meta(carry)
            return []
        first = min(table.column("interval_start_ms").to_pylist())
        # intervals lost from the meta in a crash are recovered from the data
        intervals = sorted({*_interval_list(meta), *table.column("interval_start_ms").to_pylist()})
        seq = self.seq.next()
        key = raw_flow_key(instance_id=self.instance_id, first_interval_start_ms=first, seq=seq)
        table = with_capture_metadata(table, capture_metadata(
            run_id=self.run_id, seq=seq, instance_id=self.instance_id, intervals=intervals,
            drops=meta.get("drops", {}), records=table.num_rows))
        self.spool.add_table(key=key, table=table)
        for p in parts:
            p.unlink()
        self._write_meta({k: v for k, v in carry.items() if k == "last_interval_start_ms"})
        fsync_dir(self.staging_dir)
        self.files_written += 1
        self.records_written += table.num_rows
        log.info("closed %s (%d records, %d intervals)", key, table.num_rows, len(intervals))
        return [key]

    def _meta(self) -> dict:
        path = self.staging_dir / "current.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _write_meta(self, meta: dict) -> None:
        path = self.staging_dir / "current.json"
        tmp = path.with_name("current.json.tmp")
        with open(tmp, "w") as fh:
            fh.write(json.dumps(meta))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def discard_staging(self) -> None:
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
