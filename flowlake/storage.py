"""Object-store access outside Spark (listing, footers, copies), one code path for local and S3.

A root is either a local folder or ``s3://bucket/prefix`` / ``s3a://bucket/prefix``.
S3 settings come from the standard AWS chain plus ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``) for an S3-compatible endpoint; the same settings are
handed to Spark's s3a connector by :func:`spark_s3a_conf`, so both see one store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlparse

import pyarrow.fs as pafs

S3_SCHEMES = ("s3", "s3a")


def endpoint_url() -> str | None:
    """The S3 endpoint override from the environment, if any."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


@lru_cache(maxsize=8)
def _s3(endpoint: str | None, region: str) -> pafs.S3FileSystem:
    kwargs: dict = {"region": region}
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs.update(endpoint_override=parsed.netloc or parsed.path, scheme=parsed.scheme or "https")
        kwargs["force_virtual_addressing"] = False
    return pafs.S3FileSystem(**kwargs)


@dataclass(frozen=True)
class Location:
    """A root resolved to a filesystem and a path inside it, with its canonical URI form."""

    fs: pafs.FileSystem
    path: str  # fs-internal path ("bucket/key" for S3, absolute path for local)
    scheme: str  # "s3a" or "" (local)

    def uri(self, fs_path: str) -> str:
        """Canonical URI of an fs-internal path: ``s3a://bucket/key`` or an absolute local path."""
        return f"s3a://{fs_path}" if self.scheme else fs_path

    def spark_uri(self, fs_path: str | None = None) -> str:
        """What Spark should be given for this (or a contained) path."""
        p = self.path if fs_path is None else fs_path
        return f"s3a://{p}" if self.scheme else p


def resolve(root: str) -> Location:
    """Resolve a root URI or local path."""
    parsed = urlparse(root)
    if parsed.scheme in S3_SCHEMES:
        if not parsed.netloc:
            raise ValueError(f"{root!r} names no bucket: write s3://bucket/prefix")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        return Location(_s3(endpoint_url(), region), f"{parsed.netloc}{parsed.path}".rstrip("/"), "s3a")
    if parsed.scheme in ("", "file"):
        path = os.path.abspath(parsed.path if parsed.scheme == "file" else root)
        return Location(pafs.LocalFileSystem(), path, "")
    raise ValueError(f"unsupported storage scheme {parsed.scheme!r} in {root!r}: use a local folder or s3://bucket/prefix")


def join(root: str, *parts: str) -> str:
    """Join path parts under a root (URI or local), with single slashes."""
    return "/".join([root.rstrip("/"), *[p.strip("/") for p in parts]])


def spark_path(root: str) -> str:
    """The path to hand Spark for a root: s3:// becomes s3a://, local stays local."""
    loc = resolve(root)
    return loc.spark_uri()


def spark_s3a_conf() -> dict[str, str]:
    """Hadoop s3a settings matching :func:`resolve`'s (endpoint, path style, region, credentials).

    Credentials follow Hadoop's default chain (keys given here, the
    AWS_* environment, then the instance role); keys present in this
    process's environment are passed on explicitly so that a JVM started
    before they were set still sees them.
    """
    conf = {"spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem"}
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        conf["spark.hadoop.fs.s3a.access.key"] = os.environ["AWS_ACCESS_KEY_ID"]
        conf["spark.hadoop.fs.s3a.secret.key"] = os.environ["AWS_SECRET_ACCESS_KEY"]
        if os.environ.get("AWS_SESSION_TOKEN"):
            conf["spark.hadoop.fs.s3a.session.token"] = os.environ["AWS_SESSION_TOKEN"]
            conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = (
                "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        conf["spark.hadoop.fs.s3a.endpoint.region"] = region
    ep = endpoint_url()
    if ep:
        conf["spark.hadoop.fs.s3a.endpoint"] = ep
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(ep.startswith("https")).lower()
        conf["spark.hadoop.fs.s3a.endpoint.region"] = region or "us-east-1"
    return conf


def is_s3(root: str) -> bool:
    """Whether a root is on S3 (s3:// or s3a://)."""
    return urlparse(root).scheme in S3_SCHEMES
