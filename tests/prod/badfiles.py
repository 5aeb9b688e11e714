"""Bad raw files made from a good one: each is a kind of input the pipeline must quarantine."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

DAY = "flows/v1/dt=2025-06-02/hr=00"
YEAR_MS = 365 * 86_400_000


def _parquet(table: pa.Table, *, version: bytes = b"1") -> bytes:
    meta = dict(table.schema.metadata or {})
    meta[b"flowlake.schema_version"] = version
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buf, compression="zstd")
    return buf.getvalue()


def _shift(table: pa.Table, ms: int) -> pa.Table:
    for c in ("interval_start_ms", "interval_end_ms", "first_start_ms"):
        table = table.set_column(table.schema.get_field_index(c), c, pc.add(table[c], pa.scalar(ms, pa.int64())))
    return table


def bad_files(good: Path) -> dict[str, tuple[bytes, str]]:
    """key -> (content, a word the quarantine reason must contain)."""
    raw = good.read_bytes()
    table = pq.read_table(good)
    start = table["interval_start_ms"][0].as_py()
    ips = table.set_column(table.schema.get_field_index("local_ip"), "local_ip",
                           pa.array(["not-an-ip"] * table.num_rows, pa.string()))
    return {
        f"{DAY}/instance=bad-trunc/{start}-0.parquet": (raw[: len(raw) // 2], "not a readable"),
        f"{DAY}/instance=bad-empty/{start}-0.parquet": (b"", "not a readable"),
        f"{DAY}/instance=bad-text/{start}-0.parquet": (b"instance_id,bytes\nx,1\n", "not a readable"),
        f"{DAY}/instance=bad-version/{start}-0.parquet": (_parquet(table, version=b"2"), "schema version 2"),
        f"{DAY}/instance=bad-future/{start}-0.parquet": (_parquet(_shift(table, 10 * YEAR_MS)), "future"),
        f"{DAY}/instance=bad-negative/{start}-0.parquet": (_parquet(_shift(table, -start - 60_000)), "negative"),
        f"{DAY}/instance=bad-ip/{start}-0.parquet": (_parquet(ips), "unparseable local_ip"),
        f"{DAY}/instance=bad-escape/../../../../../escape/{start}-0.parquet": (raw, "contract layout"),
    }


def good_rows(raw_root: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in (raw_root / "flows").rglob("*.parquet"))
