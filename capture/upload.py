"""The bounded on-disk spool of closed files and the sinks that drain it (S3 or a local folder).

Files wait in the spool until the sink has them. Draining is oldest first and
stops at the first failure, retrying later with exponential backoff. When the
spool would exceed its byte bound the oldest files are dropped, counted and
logged. Credentials come from the standard AWS chain and are never logged.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.parquet as pq

from flowlake.contracts import PARQUET_COMPRESSION
from flowlake.storage import storage_failure

log = logging.getLogger(__name__)


class Sink(Protocol):
    def put(self, *, key: str, path: Path) -> None: ...

    def describe(self) -> str: ...


class LocalSink:
    """A folder as the raw root: files land at <root>/<prefix>/<key>, atomically."""

    def __init__(self, *, root: str | Path, prefix: str = "") -> None:
        self.root = Path(root)
        self.prefix = prefix.strip("/")

    def put(self, *, key: str, path: Path) -> None:
        dest = self.root / self.prefix / key if self.prefix else self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".tmp-{dest.name}")
        shutil.copyfile(path, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)

    def describe(self) -> str:
        return f"local folder {self.root / self.prefix}"


class S3Sink:
    """An S3 bucket (or S3-compatible endpoint) through boto3 with its standard retries."""

    def __init__(self, *, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 region_name: str | None = None, max_attempts: int = 3, timeout_s: float = 10.0,
                 client=None) -> None:
        if not bucket:
            raise ValueError("S3 sink needs a bucket: set sink.bucket")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        if client is None:
            import boto3  # noqa: PLC0415
            from botocore.config import Config  # noqa: PLC0415

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region_name,
                config=Config(
                    retries={"max_attempts": max_attempts, "mode": "standard"},
                    connect_timeout=timeout_s,
                    read_timeout=timeout_s,
                ),
            )
        self.client = client

    def put(self, *, key: str, path: Path) -> None:
        full = f"{self.prefix}/{key}" if self.prefix else key
        with open(path, "rb") as body:
            self.client.put_object(Bucket=self.bucket, Key=full, Body=body)

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"


def make_sink(cfg) -> Sink:
    """A sink from the ``sink`` config section."""
    if cfg.kind == "s3":
        return S3Sink(bucket=cfg.bucket, prefix=cfg.prefix, endpoint_url=cfg.endpoint_url,
                      region_name=cfg.region_name, max_attempts=cfg.max_attempts, timeout_s=cfg.timeout_s)
    if cfg.kind == "local":
        return LocalSink(root=cfg.local_root, prefix=cfg.prefix)
    raise ValueError(f"unknown sink.kind {cfg.kind!r}: use 's3' or 'local'")


class Spool:
    """Closed files waiting for the sink, oldest first, at most ``max_bytes`` on disk."""

    def __init__(self, *, directory: str | Path, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("spool max_bytes must be positive")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.dropped_files = 0
        self.dropped_bytes = 0
        for tmp in self.dir.glob(".tmp-*"):  # half-written by a crash: never part of the spool
            tmp.unlink(missing_ok=True)
        self._counter = self._last_counter()

    def _last_counter(self) -> int:
        names = [p.name for p in self.dir.glob("*__*.parquet") if not p.name.startswith(".")]
        return max((int(n.split("__", 1)[0]) for n in names), default=0)

    def entries(self) -> list[tuple[str, Path]]:
        """(key, path) of every spooled file, oldest first."""
        paths = sorted(self.dir.glob("*__*.parquet"))
        return [(unquote(p.name.split("__", 1)[1][: -len(".parquet")]), p) for p in paths]

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for _, p in self.entries())

    def oldest_age_s(self, *, now: float) -> float:
        entries = self.entries()
        return max(0.0, now - entries[0][1].stat().st_mtime) if entries else 0.0

    def add_table(self, *, key: str, table: pa.Table) -> Path:
        """Write ``table`` into the spool as the file for ``key`` (atomic), then enforce the bound."""
        self._counter += 1
        path = self.dir / f"{self._counter:012d}__{quote(key, safe='')}.parquet"
        tmp = self.dir / f".tmp-{path.name}"
        pq.write_table(table, tmp, compression=PARQUET_COMPRESSION)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        self._enforce_bound(keep=path)
        return path

    def _enforce_bound(self, *, keep: Path) -> None:
        entries = self.entries()
        total = sum(p.stat().st_size for _, p in entries)
        for key, path in entries:
            if total <= self.max_bytes or path == keep:
                break
            size = path.stat().st_size
            path.unlink()
            total -= size
            self.dropped_files += 1
            self.dropped_bytes += size
            log.error("spool over its bound of %d bytes: dropped the oldest file %s (%d bytes); "
                      "raise spool.max_bytes or fix the sink", self.max_bytes, key, size)

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)


class Uploader:
    """Drains the spool into a sink, oldest first, backing off while the sink fails."""

    def __init__(self, *, spool: Spool, sink: Sink, backoff_initial_s: float = 1.0, backoff_max_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spool = spool
        self.sink = sink
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.clock = clock
        self._backoff_s = 0.0
        self._next_attempt = 0.0
        self.files_uploaded = 0
        self.bytes_uploaded = 0
        self.failures = 0
        self.last_error: str | None = None
        self.uploaded_keys: list[str] = []  # in upload order (bounded)

    def set_sink(self, sink: Sink, *, backoff_initial_s: float, backoff_max_s: float) -> None:
        """Switch sinks (hot reload); the spool keeps everything not yet uploaded."""
        self.sink = sink
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._backoff_s = 0.0
        self._next_attempt = 0.0

    def drain(self, *, force: bool = False) -> int:
        """Upload spooled files oldest first until one fails; returns how many went up."""
        if not force and self.clock() < self._next_attempt:
            return 0
        done = 0
        for key, path in self.spool.entries():
            size = path.stat().st_size
            try:
                self.sink.put(key=key, path=path)
            except Exception as exc:  # noqa: BLE001 - any sink failure means: keep it, retry later
                self.failures += 1
                self._backoff_s = min(self.backoff_max_s, max(self.backoff_initial_s, self._backoff_s * 2))
                self._next_attempt = self.clock() + self._backoff_s
                failure = storage_failure(exc, roots=(self.sink.describe(),))  # one clear line, not the SDK's text
                self.last_error = failure.line().removeprefix("error: ") if failure else f"{type(exc).__name__}: {exc}"
                log.warning("upload of %s to %s failed (%s); %d file(s) wait in the spool, retry in %.1fs",
                            key, self.sink.describe(), self.last_error, len(self.spool.entries()), self._backoff_s)
                break
            self.spool.remove(path)
            self._backoff_s = 0.0
            self.files_uploaded += 1
            self.bytes_uploaded += size
            self.uploaded_keys.append(key)
            del self.uploaded_keys[:-1000]
            done += 1
        return done
