"""Fixtures for the production tests: tiny demo data, a clean local lake, S3 env, a standalone cluster."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent / "flowlake"
START, END = "2025-06-02T00:00:00Z", "2025-06-02T01:00:00Z"
START_MS, END_MS = 1748822400000, 1748826000000
RECORDS = 2000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="package", autouse=True)
def _small_gold():
    """Only the cheap insight gold tables (no Prophet forecast, no segmentation) in these tests' runs."""
    key = "FLOWLAKE_INSIGHT__TABLES"
    old = os.environ.get(key)
    os.environ[key] = '["rollups", "crosszone", "policy"]'
    yield
    if old is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = old


@pytest.fixture(scope="session")
def demo_raw(tmp_path_factory) -> Path:
    """One hour of simulated raw files (flows, IP events, truth) in a local folder."""
    from flowlake.config import load_config
    from flowlake.sim.core import simulate
    from flowlake.sim.params import SimParams

    # in process (what `flowlake simulate --hours 1 --records RECORDS` runs): the CLI is not under test here;
    # 20-minute files (312 of them, not 836 at the default 5): per-file cost dominates ingest at this size
    out = tmp_path_factory.mktemp("demo") / "raw"
    simulate(out=str(out), params=load_config(SimParams, path=REPO / "conf" / "sim.yaml", hours=1.0,
                                              records=RECORDS, batch_intervals=20), progress=False)
    return out


@pytest.fixture(scope="session")
def jobs_config():
    from flowlake.jobs.config import load_jobs_config

    return load_jobs_config(shuffle_partitions=2)


@pytest.fixture(scope="session")
def quality_config():
    from flowlake.jobs.config import load_quality_config

    return load_quality_config()


@pytest.fixture(scope="package")
def clean_lake(_small_gold, spark, demo_raw, jobs_config, quality_config, tmp_path_factory) -> Path:
    """The demo hour run once, cleanly, in local mode: the reference the other runs must equal."""
    from flowlake.jobs.run.pipeline import run

    lake = tmp_path_factory.mktemp("clean") / "lake"
    run(spark, raw_root=str(demo_raw), lake_root=str(lake), start_ms=START_MS, end_ms=END_MS,
        config=jobs_config, quality=quality_config)
    return lake


@pytest.fixture(scope="session")
def s3_env(s3_server):
    """AWS_ENDPOINT_URL pointing at the loopback S3 server for the session."""
    old = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = s3_server.endpoint
    yield s3_server
    if old is None:
        os.environ.pop("AWS_ENDPOINT_URL", None)
    else:
        os.environ["AWS_ENDPOINT_URL"] = old


def upload_tree(client, local: Path, bucket: str, prefix: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local).as_posix()}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Spark standalone master and two workers on loopback (scripts/spark-cluster.sh), stopped after
    the module that uses it (three idle JVMs would otherwise share the cores with every later test)."""
    state = tmp_path_factory.mktemp("cluster")
    port = _free_port()
    script = REPO / "scripts" / "spark-cluster.sh"
    done = subprocess.run(["bash", str(script), "start", "--port", str(port), "--dir", str(state)],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        subprocess.run(["bash", str(script), "stop", "--dir", str(state)], timeout=120)
        raise RuntimeError(f"cluster did not start: {done.stderr}")
    yield done.stdout.strip()
    subprocess.run(["bash", str(script), "stop", "--dir", str(state)], timeout=120)


class TcpProxy:
    """A loopback TCP forwarder in front of the S3 server: ``down()`` refuses and cuts every connection
    (the server and its data stay), ``up()`` serves again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def down(self) -> None:
        ls, self._listener = self._listener, None
        if ls is not None:
            try:
                ls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            ls.close()
        with self._lock:
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self._conns.clear()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def table_rows(spark, path, *, drop=()) -> list:
    """All rows of a Delta table, sorted, without the named columns."""
    df = spark.read.format("delta").load(str(path))
    df = df.drop(*[c for c in drop if c in df.columns])
    return sorted((tuple(r) for r in df.collect()), key=repr)


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)
