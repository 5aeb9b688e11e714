"""Read a lake without a JVM: Delta tables through delta-rs, the lock and quality files through pyarrow.

Used by ``flowlake status``, ``flowlake report`` and :mod:`flowlake.notebook`. Local
folders and ``s3://`` / ``s3a://`` roots; on S3 the settings come from the standard
AWS environment (``AWS_REGION``, ``AWS_ENDPOINT_URL`` for an S3-compatible store,
keys or the default credential chain), the same ones :mod:`flowlake.storage` uses.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable

from flowlake.lake import LOCK_FILE, QUALITY_REPORTS
from flowlake.storage import endpoint_url, is_s3, join, resolve

LOCK_PATH = LOCK_FILE  # written by jobs/run/lock.py: {"owner", "host", "pid", "acquired_at_ms"}
QUALITY_DIR = QUALITY_REPORTS
LAYERS = ("bronze", "silver", "gold", "quarantine", "_meta")


def utc(ms) -> str:
    """Epoch milliseconds as ``YYYY-MM-DD HH:MM UTC`` ("–" for null)."""
    if ms is None or pd.isna(ms):
        return "–"
    return datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def complete_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``_meta/runs`` whose run finished gold: their window is complete. A run of some
    stages (``stages``, one row a process of the Airflow DAG) is listed but not complete; rows from
    before that column reached gold (the only runs that wrote a row then)."""
    if "stages" not in runs.columns:
        return runs
    return runs[runs["stages"].map(lambda s: s is None or not hasattr(s, "__len__") or "gold" in list(s))]


def stage_list(stages) -> str:
    """A runs row's ``stages`` as ``ingest,ownership`` ("all" for a row from before the column)."""
    return "all" if stages is None or not hasattr(stages, "__len__") else ",".join(stages)


def storage_options(root: str) -> dict[str, str] | None:
    """delta-rs storage options for a root: None locally, the AWS environment on S3."""
    if not is_s3(root):
        return None
    opts = {"AWS_REGION": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if os.environ.get(key):
            opts[key] = os.environ[key]
    ep = endpoint_url()
    if ep:
        opts["AWS_ENDPOINT_URL"] = ep
        opts["AWS_ALLOW_HTTP"] = str(ep.startswith("http://")).lower()
        opts["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
    return opts


def table_uri(root: str, rel: str) -> str:
    """URI delta-rs understands for a table under a root (``s3a://`` becomes ``s3://``)."""
    uri = join(root, rel)
    return "s3://" + uri[len("s3a://"):] if uri.startswith("s3a://") else uri


def open_table(root: str, rel: str) -> DeltaTable | None:
    """The Delta table at ``<root>/<rel>``, or None if there is none."""
    uri, opts = table_uri(root, rel), storage_options(root)
    if not DeltaTable.is_deltatable(uri, storage_options=opts):
        return None
    return DeltaTable(uri, storage_options=opts)


def read_table(root: str, rel: str, *, columns: list[str] | None = None, filters=None) -> pd.DataFrame | None:
    """A Delta table as pandas (optionally only ``columns`` / rows matching pyarrow ``filters``), or None."""
    dt = open_table(root, rel)
    if dt is None:
        return None
    ds = dt.to_pyarrow_dataset()
    return ds.to_table(columns=columns, filter=filters).to_pandas()


@dataclass(frozen=True)
class TableStats:
    """One Delta table's current snapshot, from its log."""

    name: str
    version: int
    files: int
    bytes: int
    rows: int | None
    last_commit_ms: int | None


def list_tables(root: str) -> list[str]:
    """Every Delta table two levels under the root (``<layer>/<table>``), sorted."""
    loc = resolve(root)
    found: list[str] = []
    for layer in LAYERS:
        sel = pafs.FileSelector(f"{loc.path}/{layer}", allow_not_found=True)
        for info in loc.fs.get_file_info(sel):
            if info.type != pafs.FileType.Directory:
                continue
            log_dir = loc.fs.get_file_info(f"{info.path}/_delta_log")
            if log_dir.type == pafs.FileType.Directory:
                found.append(f"{layer}/{info.base_name}")
    return sorted(found)


def table_stats(root: str, rel: str) -> TableStats | None:
    """Size, file count and rows of the table's current snapshot (from the Delta log, no data read)."""
    dt = open_table(root, rel)
    if dt is None:
        return None
    adds = pa.table(dt.get_add_actions(flatten=True))
    rows = adds.column("num_records").to_pylist() if "num_records" in adds.column_names else []
    history = dt.history(1)
    ts = history[0].get("timestamp") if history else None
    return TableStats(name=rel, version=dt.version(), files=adds.num_rows,
                      bytes=int(pa.compute.sum(adds.column("size_bytes")).as_py() or 0),
                      rows=None if any(r is None for r in rows) else int(sum(rows)),
                      last_commit_ms=int(ts) if ts is not None else None)


def _read_bytes(root: str, rel: str) -> bytes | None:
    loc = resolve(root)
    try:
        with loc.fs.open_input_stream(f"{loc.path}/{rel}") as f:
            return f.read()
    except (FileNotFoundError, OSError):
        return None


def writer_lock(root: str) -> dict | None:
    """The writer lock's holder (owner, host, pid, acquired_at_ms), None when free.

    An unreadable lock file is reported as held by ``unknown`` with the reason.
    """
    body = _read_bytes(root, LOCK_PATH)
    if body is None:
        return None
    try:
        d = json.loads(body)
        return {"owner": str(d["owner"]), "host": str(d["host"]), "pid": int(d["pid"]),
                "acquired_at_ms": int(d["acquired_at_ms"])}
    except (ValueError, KeyError, TypeError) as e:
        return {"owner": "unknown", "host": "unknown", "pid": None, "acquired_at_ms": None,
                "error": f"unreadable lock file {join(root, LOCK_PATH)}: {e}"}


def quality_reports(root: str) -> list[dict]:
    """Every quality report under ``_quality/<run_id>/<stage>.json``, newest first.

    Each: run_id, stage, written_at, passed, failed (blocking), warnings, failures (names).
    """
    loc = resolve(root)
    sel = pafs.FileSelector(f"{loc.path}/{QUALITY_DIR}", recursive=True, allow_not_found=True)
    out = []
    for info in loc.fs.get_file_info(sel):
        if info.type != pafs.FileType.File or not info.base_name.endswith(".json"):
            continue
        with loc.fs.open_input_stream(info.path) as f:
            try:
                d = json.loads(f.read())
            except ValueError as e:
                out.append({"run_id": info.path.rsplit("/", 2)[-2], "stage": info.base_name[:-5], "written_at": None,
                            "passed": 0, "failed": 0, "warnings": 0, "failures": [], "error": f"unreadable: {e}"})
                continue
        results = d.get("results", [])
        bad = [r for r in results if not r.get("success")]
        out.append({
            "run_id": d.get("run_id"), "stage": d.get("stage"), "written_at": d.get("written_at"),
            "passed": sum(1 for r in results if r.get("success")),
            "failed": sum(1 for r in bad if r.get("severity") != "warning"),
            "warnings": sum(1 for r in bad if r.get("severity") == "warning"),
            "failures": [r.get("name") for r in bad],
        })
    return sorted(out, key=lambda r: (r["written_at"] or "", r["stage"] or ""), reverse=True)
