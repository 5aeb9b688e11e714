"""Shared fixtures: one SparkSession for the whole session, a real S3 server on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Every Spark process the tests start (local sessions, spark-submit, the standalone
# cluster) binds to loopback: test traffic never leaves 127.0.0.1.
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


# The fast tier for everyday work is `pytest -m "not slow and not kernel"` (README); CI runs
# everything. Markers are given here by path so that test files need no edits:
#   slow   end-to-end runs through a subprocess, a cluster, Airflow or a multi-hour simulated fleet
#   kernel root, BCC and the real kernel (the capture sidecar's kernel tests; most already say so)
SLOW_FILES = {
    "tests/prod/test_cluster.py",      # a standalone master + two workers, spark-submit
    "tests/prod/test_dag.py",          # airflow db migrate + five task processes
    "tests/prod/test_s3_pipeline.py",  # two pipeline runs through s3a
    "tests/prod/test_faults.py",       # kill -9, S3 outage, concurrent writer, backfill
    "tests/prod/test_cron.py",         # the cron wrapper's pipeline subprocess
    "tests/jobs/test_pipeline_e2e.py",  # a 24k-record fleet through every stage, several times
    "tests/gold/test_run_gold.py",     # every insight table through the stage runner (Prophet fits), twice
    "tests/jobs/test_maintain.py",     # OPTIMIZE, Z-ORDER and VACUUM of every table
    "tests/prod/test_storage_errors.py",  # the CLI's exit code and one line: a pipeline subprocess each
}
SLOW_TESTS = {
    # the CLI's exit code when a blocking gate fails: a pipeline subprocess
    "tests/prod/test_quality.py::test_blocking_failure_publishes_nothing_and_exits_non_zero_with_the_report",
    # two hourly ownership + attribute runs against one run over both hours (window invariance)
    "tests/jobs/test_tracker_faults.py::test_hourly_runs_learn_cut_and_attribute_as_one_run_over_both_hours",
}
KERNEL_PREFIX = "tests/capture/test_kernel_"


# Two workers (`pytest -n 2 --dist loadgroup --no-loadscope-reorder`, as scripts/test.sh runs the suite):
# the tests of one group run on one worker, in order. A group is a file (module fixtures are built once),
# except tests/prod (its package fixture builds the reference lake: built once) and the kernel tests
# (one sidecar on the kernel at a time). Groups go out heaviest first so that both workers end together;
# xdist hands each worker two groups up front, so the third is a light one (it joins prod's worker).
GROUP_PREFIXES = {"tests/prod/": "prod", KERNEL_PREFIX: "kernel"}
GROUP_ORDER = ["prod", "tests/jobs/test_pipeline_e2e.py", "tests/test_layers.py", "tests/gold/test_run_gold.py",
               "tests/jobs/test_attribute.py", "tests/jobs/test_maintain.py", "kernel"]


def _group(rel: str) -> str:
    return next((g for prefix, g in GROUP_PREFIXES.items() if rel.startswith(prefix)), rel)


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup``: xdist's scope scheduler with :func:`_group` as the scope (the groups are
    given by path here, not by xdist_group marks, which pytest 9's node ids no longer carry)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class PathGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid.split("::", 1)[0])

    return PathGroups(config, log)


def pytest_collection_modifyitems(config, items):
    for item in items:
        try:
            rel = Path(str(item.fspath)).resolve().relative_to(REPO).as_posix()
        except ValueError:  # collected from outside the checkout
            continue
        if rel in SLOW_FILES or f"{rel}::{item.originalname}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        if rel.startswith(KERNEL_PREFIX):
            item.add_marker(pytest.mark.kernel)
    if hasattr(config, "workerinput"):  # an xdist worker: every worker sorts alike (a stable sort)
        rank = {g: i for i, g in enumerate(GROUP_ORDER)}
        items.sort(key=lambda it: rank.get(_group(it.nodeid.split("::", 1)[0]), len(rank)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"S3 server did not listen on 127.0.0.1:{port} within {timeout_s}s")


class S3Server:
    """A real S3-protocol HTTP server (moto in server mode) on loopback.

    ``stop()``/``start()`` take it down and bring it back on the same port
    (its contents are lost on stop unless ``keep_state``), for outage tests.
    """

    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
        self.proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def new_bucket(self) -> str:
        name = f"flowlake-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server on loopback for the whole test session.

    Sets the AWS_* variables the standard credential chain reads (dummy
    credentials: moto accepts any)."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(key, value)
    server = S3Server()
    server.start()
    yield server
    server.stop()


# The tests' DataFrames hold a handful of rows, and each test plans hundreds of small queries: compiling
# generated Java code for every one of them (Janino, then the JIT) cost more CPU than running them. The
# in-process tests evaluate expressions interpreted instead (same results; Spark tests both paths). The
# subprocess tests (the CLI, cron, Airflow, the cluster, kill -9) and the demo keep the default codegen.
TINY_DATA_CONF = {"spark.sql.codegen.wholeStage": "false", "spark.sql.codegen.factoryMode": "NO_CODEGEN"}


@pytest.fixture(scope="session")
def spark():
    """The one SparkSession of the test session: local, UTC, few shuffle partitions, Delta."""
    from flowlake.spark import get_spark

    session = get_spark(app_name="flowlake-tests", master="local[2]", shuffle_partitions=2, extra_conf=TINY_DATA_CONF)
    yield session
    session.stop()
