"""Capture test fixtures: network namespaces on veth pairs, a sidecar runner, record readers."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TRAFFIC = HERE / "traffic.py"


def kernel_tests_skipped() -> bool:
    return os.environ.get("FLOWLAKE_SKIP_KERNEL_TESTS") == "1"


def pytest_collection_modifyitems(config, items):
    if not kernel_tests_skipped():
        return
    skip = pytest.mark.skip(reason="FLOWLAKE_SKIP_KERNEL_TESTS=1")
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(skip)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


class NetnsPair:
    """Two namespaces joined by a veth pair: client side `c` and server side `s`.

    IPv4 10.200.<n>.1 (client) / .2 (server), IPv6 fd00:200::<n>:1 / ::<n>:2.
    """

    def __init__(self, index: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.c, self.s = f"flc-{tag}", f"fls-{tag}"
        self.veth_c, self.veth_s = f"vc{tag}", f"vs{tag}"
        self.v4 = (f"10.200.{index}.1", f"10.200.{index}.2")
        self.v6 = (f"fd00:200::{index:x}:1", f"fd00:200::{index:x}:2")

    def up(self) -> "NetnsPair":
        sh("ip", "netns", "add", self.c)
        sh("ip", "netns", "add", self.s)
        sh("ip", "link", "add", self.veth_c, "netns", self.c, "type", "veth", "peer", "name", self.veth_s, "netns", self.s)
        for ns, dev, a4, a6 in ((self.c, self.veth_c, self.v4[0], self.v6[0]), (self.s, self.veth_s, self.v4[1], self.v6[1])):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{a4}/24", "dev", dev)
            sh("ip", "-n", ns, "addr", "add", f"{a6}/64", "dev", dev, "nodad")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        return self

    def add_loss(self, *, percent: int) -> str:
        """Lose ``percent``% of the client's TCP packets on the wire: tc netem on the client's
        veth when the kernel has it, else an nftables random drop where they arrive in the
        server namespace (this CI kernel lacks sch_netem; a drop in the sender's own
        OUTPUT hook would not be a loss TCP retransmits, only a local send failure)."""
        tc = sh("ip", "netns", "exec", self.c, "tc", "qdisc", "add", "dev", self.veth_c, "root", "netem",
                "loss", f"{percent}%", check=False)
        if tc.returncode == 0:
            return "tc netem"
        script = (f"add table inet fl_loss\n"
                  f"add chain inet fl_loss in {{ type filter hook prerouting priority 0; }}\n"
                  f"add rule inet fl_loss in iifname {self.veth_s} meta l4proto tcp numgen random mod 100 < {percent} drop\n")
        subprocess.run(["ip", "netns", "exec", self.s, "nft", "-f", "-"], input=script, text=True, check=True,
                       capture_output=True)
        return "nftables numgen drop"

    def down(self) -> None:
        sh("ip", "netns", "del", self.c, check=False)
        sh("ip", "netns", "del", self.s, check=False)

    def exec(self, ns: str, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", ns, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, **kw)

    def start_server(self, host: str, plan: list[dict]) -> subprocess.Popen:
        proc = self.exec(self.s, sys.executable, str(TRAFFIC), "server", host, json.dumps(plan))
        line = proc.stdout.readline()
        assert line.strip() == "ready", f"traffic server did not start: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
        return proc

    @staticmethod
    def finish_server(proc: subprocess.Popen, *, timeout: float = 30) -> list[dict]:
        """Wait for a server from start_server; return its per-connection retransmits."""
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"traffic server failed: {err}"
        return json.loads(out.strip().splitlines()[-1])

    def run_client(self, host: str, plan: list[dict], *, chunk_delay_s: float = 0.0, chunks: int = 1,
                   timeout: float = 120) -> list[dict]:
        proc = self.exec(self.c, sys.executable, str(TRAFFIC), "client", host, json.dumps(plan),
                         str(chunk_delay_s), str(chunks))
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"traffic client failed: {err}"
        return json.loads(out)


_NETNS_INDEX = iter(range(10, 250))


@pytest.fixture
def netns_pair():
    pair = NetnsPair(next(_NETNS_INDEX)).up()
    yield pair
    pair.down()


def capture_config(tmp_path: Path, **extra) -> dict:
    """A sidecar config for tests: short interval, local sink under tmp_path."""
    cfg = {
        "interval_s": 1.0,
        "identity": {"instance_id": "test-host", "local_workload": "tests", "region": "test-1", "availability_zone": "test-1a"},
        "sink": {"kind": "local", "local_root": str(tmp_path / "raw"), "backoff_initial_s": 0.2, "backoff_max_s": 1.0},
        "rolling": {"intervals_per_file": 2},
        "spool": {"dir": str(tmp_path / "spool")},
        "state_dir": str(tmp_path / "state"),
        "metrics": {"port": 0},
        "kernel": {"max_conns": 4096, "max_flows": 4096, "ringbuf_pages": 64},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def write_config(tmp_path: Path, cfg: dict) -> Path:
    import yaml

    path = tmp_path / "capture.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class ThreadedSidecar:
    """A Sidecar running in a thread of the test process."""

    def __init__(self, config_path: Path, **kw) -> None:
        from flowlake.capture.config import load_capture_config
        from flowlake.capture.sidecar import Sidecar

        self.cfg = load_capture_config(path=config_path)
        self.sidecar = Sidecar(self.cfg, config_path=config_path, **kw)
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def __enter__(self) -> "ThreadedSidecar":
        self.sidecar.start()

        def run() -> None:
            try:
                self.sidecar.run(install_signals=False)
            except BaseException as exc:  # noqa: BLE001
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread is not None:
            self.sidecar.stopping = True
            self.thread.join(timeout=60)
            self.thread = None
        if self.error:
            raise self.error

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_boundaries(n: int, interval_s: float) -> None:
    """Sleep past ``n`` interval boundaries (plus slack for the boundary work)."""
    time.sleep(n * interval_s + 0.3)


def read_records(root: Path) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(str(root / "**" / "*.parquet"), recursive=True)):
        if "/.tmp-" in path:
            continue
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def records_for(rows: list[dict], *, local_ip: str | None = None, remote_ip: str | None = None) -> list[dict]:
    return [r for r in rows if (local_ip is None or r["local_ip"] == local_ip)
            and (remote_ip is None or r["remote_ip"] == remote_ip)]


def summed(rows: list[dict], key_fields: tuple[str, ...]) -> dict[tuple, dict]:
    """Sum counters over intervals per key."""
    out: dict[tuple, dict] = {}
    fields = ("connections_opened", "connections_closed", "bytes_sent", "bytes_received", "segments_sent",
              "segments_received", "retransmits")
    for r in rows:
        k = tuple(r[f] for f in key_fields)
        acc = out.setdefault(k, {f: 0 for f in fields} | {"intervals": 0})
        for f in fields:
            acc[f] += r[f]
        acc["intervals"] += 1
    return out
