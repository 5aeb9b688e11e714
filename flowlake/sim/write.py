"""Where the simulator writes: a local folder or ``s3://bucket/prefix`` through pyarrow.fs.

The S3 endpoint comes from ``s3_endpoint`` (CLI ``--s3-endpoint``) or the
``AWS_ENDPOINT_URL`` environment variable; credentials from the standard AWS chain.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from flowlake.contracts import PARQUET_COMPRESSION


class Output:
    """A root (folder or bucket/prefix) that keys are written under."""

    def __init__(self, out: str, *, s3_endpoint: str | None = None) -> None:
        self.uri = out
        if out.startswith("s3://") or out.startswith("s3a://"):
            parsed = urlparse(out)
            if not parsed.netloc:
                raise ValueError(f"--out {out!r} names no bucket: use s3://bucket/prefix")
            endpoint = s3_endpoint or os.environ.get("AWS_ENDPOINT_URL")
            kwargs: dict = {"region": os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"}
            if endpoint:
                ep = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
                kwargs.update(endpoint_override=ep.netloc, scheme=ep.scheme or "https")
            self.fs: pafs.FileSystem = pafs.S3FileSystem(**kwargs)
            self.root = f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
            self.local = False
        else:
            if "://" in out:
                raise ValueError(f"--out {out!r}: only local folders and s3:// URIs are supported")
            self.fs = pafs.LocalFileSystem()
            self.root = os.path.abspath(out)
            self.local = True
        self._made: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _parent(self, key: str) -> None:
        if not self.local:
            return
        parent = os.path.dirname(self.path(key))
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)

    def write_table(self, key: str, table: pa.Table, **options) -> None:
        self._parent(key)
        pq.write_table(table, self.path(key), filesystem=self.fs, compression=PARQUET_COMPRESSION, **options)

    def write_bytes(self, key: str, data: bytes) -> None:
        self._parent(key)
        with self.fs.open_output_stream(self.path(key), compression=None) as f:  # bytes as given, no .gz detection
            f.write(data)

    def has_files(self, prefix: str) -> bool:
        info = self.fs.get_file_info(self.path(prefix))
        if info.type == pafs.FileType.NotFound:
            return False
        sel = pafs.FileSelector(self.path(prefix), recursive=True, allow_not_found=True)
        return any(i.type == pafs.FileType.File for i in self.fs.get_file_info(sel))

    def delete(self, prefix: str) -> None:
        if self.fs.get_file_info(self.path(prefix)).type != pafs.FileType.NotFound:
            self.fs.delete_dir(self.path(prefix))
