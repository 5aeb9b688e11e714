"""Object-store access outside Spark (listing, footers, copies), one code path for local and S3.

A root is either a local folder or ``s3://bucket/prefix`` / ``s3a://bucket/prefix``.
S3 settings come from the standard AWS chain plus ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``) for an S3-compatible endpoint; the same settings are
handed to Spark's s3a connector by :func:`spark_s3a_conf`, so both see one store.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlparse

import pyarrow.fs as pafs
from pydantic import BaseModel, ConfigDict, Field

S3_SCHEMES = ("s3", "s3a")


class S3Params(BaseModel):
    """Timeouts and retries of every S3 client of the jobs (Spark's s3a, pyarrow, the lock's boto3).

    conf/jobs.yaml ``storage:`` (env ``FLOWLAKE_JOBS__STORAGE__<FIELD>``). The defaults make a dead
    endpoint fail a run within about two minutes (docs/production.md gives the measured bound) while a
    blip shorter than the retries' back-off (about 1.5 s on s3a, 2 attempts per request) is retried.
    Throttling (503 SlowDown) is retried longer: it means the store is up.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    connect_timeout_s: float = Field(5.0, gt=0)  # TCP connect (a black-holed endpoint)
    request_timeout_s: float = Field(60.0, gt=0)  # one request, including reading its answer
    attempts: int = Field(2, ge=1)  # attempts of one request by the AWS SDK (fs.s3a.attempts.maximum)
    retry_limit: int = Field(2, ge=0)  # s3a's own retries of a failed operation (fs.s3a.retry.limit)
    retry_interval_ms: int = Field(500, ge=1)  # first back-off of those, doubling (fs.s3a.retry.interval)
    throttle_retry_limit: int = Field(10, ge=0)  # retries of a throttled operation (fs.s3a.retry.throttle.limit)
    throttle_retry_interval_ms: int = Field(500, ge=1)

    def s3a(self) -> dict[str, str]:
        """These settings as Hadoop s3a keys (without the ``spark.hadoop.`` prefix)."""
        return {
            "fs.s3a.connection.establish.timeout": f"{int(self.connect_timeout_s * 1000)}ms",
            "fs.s3a.connection.timeout": f"{int(self.request_timeout_s * 1000)}ms",
            "fs.s3a.connection.request.timeout": f"{int(self.request_timeout_s * 1000)}ms",
            "fs.s3a.connection.acquisition.timeout": f"{int(self.request_timeout_s * 1000)}ms",
            "fs.s3a.attempts.maximum": str(self.attempts),
            "fs.s3a.retry.limit": str(self.retry_limit),
            "fs.s3a.retry.interval": f"{self.retry_interval_ms}ms",
            "fs.s3a.retry.throttle.limit": str(self.throttle_retry_limit),
            "fs.s3a.retry.throttle.interval": f"{self.throttle_retry_interval_ms}ms",
        }


_params = S3Params()


def use_s3_params(params: S3Params) -> None:
    """Make ``params`` the timeouts and retries of the S3 clients this process creates from now on."""
    global _params
    _params = params


def s3_params() -> S3Params:
    """The S3 timeouts and retries in use in this process."""
    return _params


def endpoint_url() -> str | None:
    """The S3 endpoint override from the environment, if any."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


@lru_cache(maxsize=8)
def _s3(endpoint: str | None, region: str, params: S3Params) -> pafs.S3FileSystem:
    kwargs: dict = {"region": region, "connect_timeout": params.connect_timeout_s,
                    "request_timeout": params.request_timeout_s,
                    "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=params.attempts)}
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
        return Location(_s3(endpoint_url(), region, _params), f"{parsed.netloc}{parsed.path}".rstrip("/"), "s3a")
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
    """Hadoop s3a settings matching :func:`resolve`'s (endpoint, path style, region, credentials,
    and the timeouts and retries of :func:`s3_params`).

    Credentials follow Hadoop's default chain (keys given here, the
    AWS_* environment, then the instance role); keys present in this
    process's environment are passed on explicitly so that a JVM started
    before they were set still sees them.
    """
    conf = {"spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem"}
    conf.update({f"spark.hadoop.{k}": v for k, v in _params.s3a().items()})
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


EXIT_STORAGE = 5  # the exit code of every command whose object store failed (README, docs/production.md)

# (kind, patterns in the error's text, what to try); the first kind whose pattern matches wins
_FAILURES: list[tuple[str, tuple[str, ...], str]] = [
    ("bad credentials", ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                         "Unable to locate credentials", "NoCredentialsError", "Unable to load credentials",
                         "NoAuthWithAWSException", "No AWS Credentials"),
     "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the instance role) for this endpoint"),
    ("missing bucket", ("NoSuchBucket", "UnknownStoreException", "bucket does not exist", "Bucket does not exist"),
     "create the bucket or fix the bucket name in the path"),
    ("access denied", ("AccessDenied", "Access Denied", "403 Forbidden", "Status Code: 403", "HTTP 403", "Forbidden"),
     "grant the credentials s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on this path"),
    ("throttled", ("SlowDown", "Throttl", "Status Code: 503", "503 Service Unavailable", "TooManyRequests",
                   "RequestLimitExceeded"),
     "the store is rate-limiting: re-run later, or raise storage.throttle_retry_limit in conf/jobs.yaml"),
    ("endpoint unreachable", ("Connection refused", "Connect to ", "ConnectException", "UnknownHostException",
                              "connect timed out", "Could not connect to the endpoint", "Couldn't connect to server",
                              "NETWORK_CONNECTION", "Unable to execute HTTP request", "ConnectTimeout",
                              "SocketTimeoutException", "Read timed out", "EndpointConnectionError",
                              "Connection reset", "Failed to connect", "Unable to connect"),
     "check that the S3 endpoint (AWS_ENDPOINT_URL) is up and reachable from here, then re-run"),
]
_S3_PATH_RE = re.compile(r"s3a?://[A-Za-z0-9.\-_]+(?:/[^\s'\",;:)\]]*)?")


@dataclass(frozen=True)
class StorageFailure:
    """An object-store failure told in one line: what failed, where, what to try."""

    kind: str
    where: str
    hint: str

    def line(self, *, log_file: str | None = None) -> str:
        text = f"error: storage failure ({self.kind}) at {self.where}: {self.hint}"
        return text + (f"; full trace in {log_file}" if log_file else "")


def _chain_text(err: BaseException) -> str:
    parts, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        parts.append(f"{type(err).__name__}: {err}")
        java = getattr(err, "java_exception", None)  # py4j: the Java side's message and causes
        if java is not None:
            try:
                cause = java
                while cause is not None:
                    parts.append(str(cause.toString()))
                    cause = cause.getCause()
            except Exception:  # noqa: BLE001 - the gateway may be gone
                pass
        err = err.__cause__ or err.__context__
    return "\n".join(parts)


def storage_failure(err: BaseException, *, roots: tuple[str, ...] = ()) -> StorageFailure | None:
    """The object-store failure behind ``err`` (any depth, Python or Java), or None if it is not one.

    ``roots`` are the S3 roots the command used: the first one is named when the error names no path.
    """
    text = _chain_text(err)
    for kind, patterns, hint in _FAILURES:
        if any(p in text for p in patterns):
            break
    else:
        return None
    paths = [p.rstrip(".") for p in _S3_PATH_RE.findall(text)]  # not a sentence's full stop
    s3_roots = [r for r in roots if is_s3(r)]
    if not s3_roots and not paths:
        return None  # a local lake: not an object-store failure
    where = (paths or s3_roots)[0]
    if kind in ("endpoint unreachable", "missing bucket") and endpoint_url():
        where += f" (endpoint {endpoint_url()})"
    return StorageFailure(kind, where, hint)


def write_trace(err: BaseException, path: str) -> str | None:
    """Append ``err``'s full trace (Python, and Java's causes) to ``path``; None if that fails too."""
    import traceback

    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a") as f:
            f.write("".join(traceback.format_exception(err)))
            f.write("\n" + _chain_text(err) + "\n")
        return path
    except OSError:
        return None


def exit_on_storage_failure(err: BaseException, *, roots: tuple[str, ...], log_to: str) -> None:
    """If ``err`` is an object-store failure: print one line on stderr naming what failed, where and
    what to try (and ``log_to``, where the full trace went), and exit with :data:`EXIT_STORAGE`.
    Otherwise return (the caller re-raises)."""
    import sys

    failure = storage_failure(err, roots=roots)
    if failure is None:
        return
    print(failure.line(log_file=write_trace(err, log_to)), file=sys.stderr, flush=True)
    sys.exit(EXIT_STORAGE)
