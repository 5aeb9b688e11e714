"""Storage failures in one line: what failed, where, what to try, exit 5, the trace in a log file."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from flowlake.storage import EXIT_STORAGE, storage_failure
from tests.prod.conftest import BIN, END, REPO, START, _free_port


def _client_error(code: str, status: int, op: str = "PutObject"):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "from the store"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, op)


def test_a_dead_endpoint_is_told_as_unreachable_from_boto3_and_pyarrow(monkeypatch):
    import boto3
    import pyarrow.fs as pafs
    from botocore.config import Config

    dead = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    client = boto3.client("s3", endpoint_url=dead, region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x", config=Config(retries={"max_attempts": 1}))
    with pytest.raises(Exception) as boto_err:
        client.put_object(Bucket="b", Key="k", Body=b"")
    fs = pafs.S3FileSystem(endpoint_override=dead.removeprefix("http://"), scheme="http", region="us-east-1",
                           access_key="x", secret_key="x",
                           retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1))
    with pytest.raises(OSError) as arrow_err:
        fs.get_file_info(pafs.FileSelector("b/raw", recursive=True))
    for err in (boto_err.value, arrow_err.value):
        failure = storage_failure(err, roots=("s3://b/lake",))
        assert failure is not None and failure.kind == "endpoint unreachable", err
        assert f"(endpoint {dead})" in failure.where
        assert "AWS_ENDPOINT_URL" in failure.hint


@pytest.mark.parametrize("code, status, kind, hint", [
    ("InvalidAccessKeyId", 403, "bad credentials", "AWS_ACCESS_KEY_ID"),
    ("SignatureDoesNotMatch", 403, "bad credentials", "AWS_SECRET_ACCESS_KEY"),
    ("AccessDenied", 403, "access denied", "s3:PutObject"),
    ("NoSuchBucket", 404, "missing bucket", "create the bucket"),
    ("SlowDown", 503, "throttled", "throttle_retry_limit"),
])
def test_each_kind_of_store_refusal_has_its_own_line(code, status, kind, hint):
    wrapped = RuntimeError("the run failed")
    wrapped.__cause__ = _client_error(code, status)
    failure = storage_failure(wrapped, roots=("s3://bucket/lake",))
    assert failure.kind == kind and failure.where.startswith("s3://bucket/lake")
    assert hint in failure.hint
    line = failure.line(log_file="/tmp/x.log")
    assert line.startswith(f"error: storage failure ({kind}) at s3://bucket/lake") and "\n" not in line
    assert line.endswith("; full trace in /tmp/x.log")


def test_the_path_named_is_the_first_s3_path_in_the_error_without_a_full_stop():
    err = OSError("Connection refused while writing s3a://b/lake/bronze/flows. Giving up.")
    assert storage_failure(err, roots=("s3://b/lake",)).where.split(" (endpoint")[0] == "s3a://b/lake/bronze/flows"


def test_errors_that_are_not_storage_failures_are_left_alone():
    assert storage_failure(ValueError("window end before start"), roots=("s3://b/lake",)) is None
    # a refused connection with only local roots is not an object-store failure
    assert storage_failure(ConnectionRefusedError("Connection refused"), roots=("/tmp/lake",)) is None


def _cli(args, env_extra, timeout=600):
    env = {**os.environ, **env_extra}
    started = time.monotonic()
    done = subprocess.run([str(BIN), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - started


def test_pipeline_run_against_a_dead_endpoint_exits_5_in_one_line(tmp_path):
    dead = f"http://127.0.0.1:{_free_port()}"
    log_file = tmp_path / "trace.log"
    done, seconds = _cli(["pipeline", "run", "--raw", "s3://flowlake-raw/raw", "--lake", "s3://flowlake-raw/lake",
                          "--start", START, "--end", END, "--log-file", str(log_file)],
                         {"AWS_ENDPOINT_URL": dead, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"})
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    print(f"\n[dead endpoint] exit {done.returncode} after {seconds:.1f} s: {lines[-1] if lines else ''}")
    assert done.returncode == EXIT_STORAGE, done.stderr[-3000:]
    assert lines[-1] == (
        f"error: storage failure (endpoint unreachable) at s3://flowlake-raw/lake (endpoint {dead}): check that the "
        f"S3 endpoint (AWS_ENDPOINT_URL) is up and reachable from here, then re-run; full trace in {log_file}")
    assert "Traceback" not in done.stderr
    assert "Traceback" in log_file.read_text()


def test_pipeline_run_into_a_missing_bucket_exits_5_in_one_line(s3_env, tmp_path):
    done, _ = _cli(["pipeline", "run", "--raw", "s3://no-such-bucket-here/raw", "--lake",
                    "s3://no-such-bucket-here/lake", "--start", START, "--end", END],
                   {"AWS_ENDPOINT_URL": s3_env.endpoint})
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == EXIT_STORAGE, done.stderr[-3000:]
    assert lines[-1].startswith("error: storage failure (missing bucket) at s3://no-such-bucket-here/lake "
                                f"(endpoint {s3_env.endpoint}): create the bucket or fix the bucket name")
    log_file = lines[-1].rsplit("full trace in ", 1)[1]
    assert "NoSuchBucket" in open(log_file).read()


def test_simulate_to_a_dead_endpoint_exits_5_in_one_line(tmp_path):
    dead = f"http://127.0.0.1:{_free_port()}"
    done, _ = _cli(["simulate", "--out", "s3://sim-bucket/raw", "--hours", "1", "--records", "200", "--quiet"],
                   {"AWS_ENDPOINT_URL": dead, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"})
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == EXIT_STORAGE, done.stderr[-3000:]
    assert lines == [lines[-1]] and lines[-1].startswith("error: storage failure (endpoint unreachable) at s3")
    assert "full trace in " in lines[-1]


def test_status_of_a_lake_on_a_dead_endpoint_exits_5_in_one_line():
    dead = f"http://127.0.0.1:{_free_port()}"
    done, seconds = _cli(["status", "--lake", "s3://lake-bucket/lake"],
                         {"AWS_ENDPOINT_URL": dead, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == EXIT_STORAGE, done.stderr[-3000:]
    assert lines == [lines[-1]] and lines[-1].startswith(
        f"error: storage failure (endpoint unreachable) at s3://lake-bucket/lake (endpoint {dead}): check that the "
        "S3 endpoint (AWS_ENDPOINT_URL) is up and reachable from here, then re-run; full trace in ")
    assert seconds < 60
