"""Roll interval records into raw flow files (contracts §1): zstd Parquet, written atomically.

Each finished interval is written at once as a durable part under
``staging/``; every ``intervals_per_file`` intervals (or at
``max_file_records``) the parts are merged into one file placed in the
spool with a tmp-file + fsync + rename, so no reader ever sees half a file.
Parts left by a crash are merged into a file on the next start.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
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


class RollingWriter:
    """Collects intervals into the current file and closes it into the spool."""

    def __init__(self, *, staging_dir: Path, spool: Spool, instance_id: str, seq: SequenceCounter,
                 intervals_per_file: int, max_file_records: int) -> None:
        if intervals_per_file < 1 or max_file_records < 1:
            raise ValueError("intervals_per_file and max_file_records must be at least 1")
        raw_flow_key(instance_id=instance_id, first_interval_start_ms=0, seq=0)  # validates the id
        self.staging_dir = staging_dir
        self.spool = spool
        self.instance_id = instance_id
        self.seq = seq
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

    def add_interval(self, records: list[dict], *, interval_start_ms: int) -> list[str]:
        """Stage one interval's records; returns the keys of files closed by it."""
        part = self.staging_dir / f"part-{interval_start_ms:015d}.parquet"
        write_parquet_atomic(table=records_table(records), path=part)
        meta = self._meta()
        meta["intervals"] = meta.get("intervals", 0) + 1
        meta["records"] = meta.get("records", 0) + len(records)
        meta.setdefault("first_interval_start_ms", interval_start_ms)
        self._write_meta(meta)
        if meta["intervals"] >= self.intervals_per_file or meta["records"] >= self.max_file_records:
            return self.close_file()
        return []

    def close_file(self) -> list[str]:
        """Merge the staged intervals into one file in the spool (no-op when nothing is staged)."""
        parts = self._parts()
        if not parts:
            self._write_meta({})
            return []
        meta = self._meta()
        tables = [pq.read_table(p) for p in parts]
        table = pa.concat_tables(tables).cast(RAW_FLOW_SCHEMA)
        first = meta.get("first_interval_start_ms")
        if first is None:  # meta lost in a crash: recover it from the data or the part names
            first = int(parts[0].name.split("-")[1].split(".")[0])
        if table.num_rows:
            first = min(first, min(table.column("interval_start_ms").to_pylist()))
        key = raw_flow_key(instance_id=self.instance_id, first_interval_start_ms=first, seq=self.seq.next())
        self.spool.add_table(key=key, table=table)
        for p in parts:
            p.unlink()
        self._write_meta({})
        fsync_dir(self.staging_dir)
        self.files_written += 1
        self.records_written += table.num_rows
        log.info("closed %s (%d records, %d intervals)", key, table.num_rows, len(parts))
        return [key]

    def _meta(self) -> dict:
        path = self.staging_dir / "current.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _write_meta(self, meta: dict) -> None:
        path = self.staging_dir / "current.json"
        tmp = path.with_name("current.json.tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, path)

    def discard_staging(self) -> None:
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
