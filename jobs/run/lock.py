"""One writer per lake: a lock object at ``<lake>/_meta/writer.lock``.

Delta on S3 (s3a's single-driver log store) is safe with one writer per
table only: two drivers committing to one table at once can lose a commit.
Every pipeline stage takes this lock before it writes and releases it when
done, so a second concurrent run fails fast with :class:`LakeLockedError`.

The lock is created atomically: ``O_CREAT | O_EXCL`` on a local lake, a
conditional put (``If-None-Match: *``) on S3. A lock left by a run that was
killed is taken over when its process is gone (same host) or it is older
than the time to live (``FLOWLAKE_LOCK_TTL_S``, default 6 h); ``flowlake
pipeline unlock --lake`` removes one by hand.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlparse

from flowlake.storage import endpoint_url, is_s3, join

log = logging.getLogger(__name__)
LOCK_NAME = "_meta/writer.lock"
TTL_ENV = "FLOWLAKE_LOCK_TTL_S"
DEFAULT_TTL_S = 6 * 3600


class LakeLockedError(RuntimeError):
    """Another run holds the lake's writer lock."""


@dataclass(frozen=True)
class LockInfo:
    owner: str
    host: str
    pid: int
    acquired_at_ms: int

    def describe(self) -> str:
        age = (time.time() * 1000 - self.acquired_at_ms) / 1000
        return f"run {self.owner} (pid {self.pid} on {self.host}, {age:.0f} s ago)"


def _ttl_s() -> int:
    return int(os.environ.get(TTL_ENV, DEFAULT_TTL_S))


class _LocalStore:
    def __init__(self, path: str) -> None:
        self.path = path

    def create(self, body: bytes) -> bool:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        return True

    def read(self) -> bytes | None:
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def delete(self) -> None:
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass


class _S3Store:
    def __init__(self, uri: str) -> None:
        import boto3

        parsed = urlparse(uri)
        self.bucket, self.key = parsed.netloc, parsed.path.lstrip("/")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.client = boto3.client("s3", endpoint_url=endpoint_url(), region_name=region)

    def create(self, body: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, IfNoneMatch="*")
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def read(self) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def delete(self) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key)


def _store(lake_root: str):
    path = join(lake_root, LOCK_NAME)
    return _S3Store(path) if is_s3(lake_root) else _LocalStore(os.path.abspath(path))


def _parse(body: bytes | None) -> LockInfo | None:
    if body is None:
        return None
    try:
        d = json.loads(body)
        return LockInfo(str(d["owner"]), str(d["host"]), int(d["pid"]), int(d["acquired_at_ms"]))
    except (ValueError, KeyError, TypeError):
        return LockInfo("(unreadable lock)", "?", -1, 0)


def _stale(info: LockInfo) -> bool:
    if time.time() * 1000 - info.acquired_at_ms > _ttl_s() * 1000:
        return True
    if info.host == socket.gethostname() and info.pid > 0:
        try:
            os.kill(info.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


class LakeLock:
    """Context manager holding the lake's writer lock for ``owner`` (a run id)."""

    def __init__(self, lake_root: str, *, owner: str) -> None:
        self.lake_root = lake_root
        self.owner = owner
        self.store = _store(lake_root)
        self.held = False

    def acquire(self) -> None:
        body = json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "acquired_at_ms": int(time.time() * 1000)}).encode()
        for _ in range(2):
            if self.store.create(body):
                self.held = True
                return
            info = _parse(self.store.read())
            if info is None:
                continue  # released in between: try again
            if info.owner == self.owner and info.host == socket.gethostname() and info.pid == os.getpid():
                self.held = True
                return
            if not _stale(info):
                raise LakeLockedError(
                    f"the lake {self.lake_root} is being written by {info.describe()}: one writer per lake "
                    "(Delta on S3 is not safe with two). Wait for it to finish; if that run is dead, remove "
                    f"the lock with `flowlake pipeline unlock --lake {self.lake_root}`.")
            self.store.delete()  # stale: the process that held it is gone
        raise LakeLockedError(f"could not take the writer lock of {self.lake_root}: another run took it first")

    def release(self) -> None:
        """Remove the lock if this run holds it; a store that cannot be reached leaves it (logged)."""
        if not self.held:
            return
        self.held = False
        try:
            info = _parse(self.store.read())
            if info is not None and info.owner == self.owner:
                self.store.delete()
        except Exception as err:  # noqa: BLE001 - never hide the run's own error behind this one
            log.warning("could not remove the writer lock of %s (%s): it is taken over once this process "
                        "has exited, or remove it with `flowlake pipeline unlock --lake %s`",
                        self.lake_root, err, self.lake_root)

    def __enter__(self) -> "LakeLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def force_unlock(lake_root: str) -> LockInfo | None:
    """Remove the lock whatever holds it; returns what held it."""
    store = _store(lake_root)
    info = _parse(store.read())
    store.delete()
    return info
