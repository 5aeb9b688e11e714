"""Where the lake's writer lock lives: a local file or an S3 object, with create-if-absent and
compare-and-swap on the version read (jobs/run/lock.py holds the locking rules)."""

from __future__ import annotations

import fcntl
import os
import threading
from urllib.parse import urlparse

from flowlake.storage import endpoint_url, is_s3, join

LOCK_NAME = "_meta/writer.lock"


class _LocalStore:
    """The lock as a local file; the version is its content."""

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

    def read(self) -> tuple[bytes | None, object]:
        try:
            with open(self.path, "rb") as f:
                body = f.read()
        except FileNotFoundError:
            return None, None
        return body, body

    def replace(self, body: bytes, version: object) -> bool:
        """Write ``body`` if the lock is still at ``version`` (atomic against other replaces)."""
        with open(self.path + ".guard", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            current, _ = self.read()
            if current is None or current != version:
                return False
            tmp = f"{self.path}.{os.getpid()}.{threading.get_ident()}"
            with open(tmp, "wb") as f:
                f.write(body)
            os.replace(tmp, self.path)
            return True

    def delete(self) -> None:
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass


class _S3Store:
    """The lock as an S3 object; the version is its ETag."""

    def __init__(self, uri: str) -> None:
        import boto3
        from botocore.config import Config

        from flowlake.storage import s3_params

        parsed = urlparse(uri)
        self.bucket, self.key = parsed.netloc, parsed.path.lstrip("/")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        p = s3_params()
        self.client = boto3.client("s3", endpoint_url=endpoint_url(), region_name=region, config=Config(
            connect_timeout=p.connect_timeout_s, read_timeout=p.request_timeout_s,
            retries={"max_attempts": p.attempts, "mode": "standard"}))

    @staticmethod
    def _lost(err) -> bool:
        return err.response.get("Error", {}).get("Code") in (
            "PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404", "412", "409")

    def create(self, body: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, IfNoneMatch="*")
        except ClientError as err:
            if self._lost(err):
                return False
            raise
        return True

    def read(self) -> tuple[bytes | None, object]:
        from botocore.exceptions import ClientError

        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None
            raise
        return got["Body"].read(), got["ETag"]

    def replace(self, body: bytes, version: object) -> bool:
        """Put ``body`` only if the object still has ETag ``version`` (If-Match): one of racers wins."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, IfMatch=str(version))
        except ClientError as err:
            if self._lost(err):
                return False
            raise
        return True

    def delete(self) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key)


def store_for(lake_root: str):
    """The lock's store for a lake root: an S3 object or a local file."""
    path = join(lake_root, LOCK_NAME)
    return _S3Store(path) if is_s3(lake_root) else _LocalStore(os.path.abspath(path))
