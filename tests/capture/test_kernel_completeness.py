"""Real-kernel tests of issue 13: drops and seq in each file's metadata, a SIGKILL, per-container identity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flowlake.capture.probes import detach_stale_program

from .conftest import TRAFFIC, NetnsPair, ThreadedSidecar, capture_config, read_records, records_for, summed, write_config
from .test_kernel_lifecycle import _start_sidecar_process

pytestmark = pytest.mark.kernel
KEY = ("direction", "local_ip", "local_port", "remote_ip", "remote_port")
CGROOT = Path("/sys/fs/cgroup/unified")


def file_metas(root: Path) -> list[dict]:
    metas = [json.loads(pq.ParquetFile(p).schema_arrow.metadata[b"flowlake.capture"])
             for p in root.rglob("*.parquet") if not p.name.startswith(".tmp-")]
    return sorted(metas, key=lambda m: m["seq"])


def test_full_kernel_map_drops_are_in_the_files_and_a_restart_continues_seq(tmp_path, netns_pair):
    """kernel.max_conns = 64 while 150 connections (300 sockets on this host) are open at once."""
    client_ip, server_ip = netns_pair.v4
    n = 150
    cfg = capture_config(tmp_path, rolling={"intervals_per_file": 1}, kernel={"max_conns": 64})
    config = write_config(tmp_path, cfg)
    with ThreadedSidecar(config) as first:
        server = netns_pair.exec(netns_pair.s, sys.executable, str(TRAFFIC), "hold-server", server_ip, "7800", str(n))
        assert server.stdout.readline().strip() == "ready"
        client = netns_pair.exec(netns_pair.c, sys.executable, str(TRAFFIC), "hold-client", server_ip, "7800",
                                 str(n), "0.3")
        assert client.wait(timeout=60) == 0, client.stderr.read()
        assert server.wait(timeout=60) == 0, server.stderr.read()
        time.sleep(1.3)
    with ThreadedSidecar(config) as second:  # a restart: new run_id, the seq goes on
        plan = [{"port": 7801, "up": 10, "down": 20, "server_closes_first": False}]
        srv = netns_pair.start_server(server_ip, plan)
        netns_pair.run_client(server_ip, plan)
        srv.wait(timeout=30)
        time.sleep(1.3)
    metas = file_metas(tmp_path / "raw")
    assert [m["seq"] for m in metas] == list(range(1, len(metas) + 1)), "consecutive across the restart"
    runs = [m["run_id"] for m in metas]
    assert set(runs) == {first.sidecar.run_id, second.sidecar.run_id}
    assert runs == sorted(runs, key=lambda r: r != first.sidecar.run_id), "one run after the other"
    dropped = sum(m["drops"]["conn_map_full"] for m in metas if m["run_id"] == first.sidecar.run_id)
    assert dropped >= 2 * n - 64, metas
    assert all(m["drops"]["conn_map_full"] == 0 for m in metas if m["run_id"] == second.sidecar.run_id)
    # a full map loses no connection's bytes (close events still report them), but the kernel
    # has no establishment offsets for them, so their FIN can be counted: exact only when 0 drops
    out = summed(records_for(read_records(tmp_path / "raw"), local_ip=client_ip, remote_ip=server_ip), KEY)
    rec = out[("outbound", client_ip, 0, server_ip, 7800)]
    assert n <= rec["bytes_sent"] <= 2 * n and rec["connections_closed"] == n, rec


ROOM_BEFORE_BOUNDARY_S = 20.0  # the traffic and the kill below take ~5 s (CI: 9.4 s for the whole test)


def test_sigkill_loses_at_most_the_last_stage(tmp_path, netns_pair):
    """A 30 s interval, stage_s = 1: SIGKILL 2.5 s after the closes; the restart writes them, exactly.

    Edge case: a connection opened after the last boundary stays open across the kill: its
    bytes before the last stage come from the stage, the rest after the restart: exact totals."""
    client_ip, server_ip = netns_pair.v4
    plan = [{"port": 7900 + i, "up": 1000 * (i + 1), "down": 7 + i, "server_closes_first": bool(i % 2)}
            for i in range(5)]
    interval_s = 30.0
    config = write_config(tmp_path, capture_config(tmp_path, interval_s=interval_s, stage_s=1.0))
    log = tmp_path / "sidecar.log"
    long_item = {"port": 7910, "up": 900_000, "down": 321, "server_closes_first": False}
    first = _start_sidecar_process(config, log)
    # intervals end on wall-clock multiples of interval_s: one ending between the closes and the kill
    # would write them normally and leave nothing staged to recover (CI saw that once); start the
    # traffic early in an interval
    left_s = interval_s - time.time() % interval_s
    if left_s < ROOM_BEFORE_BOUNDARY_S:
        time.sleep(left_s + 0.5)
    boundary_ms = int((time.time() // interval_s + 1) * interval_s * 1000)
    try:
        server = netns_pair.start_server(server_ip, [long_item, *plan])
        # opened after the last boundary, open across the kill and the restart
        long_client = netns_pair.exec(netns_pair.c, sys.executable, str(TRAFFIC), "client", server_ip,
                                      json.dumps([long_item]), "0.5", "16")
        netns_pair.run_client(server_ip, plan)
        closed_ms = int(time.time() * 1000)
        time.sleep(2.5)  # > stage_s + one loop pass: the closes are staged
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        killed_ms = int(time.time() * 1000)
    finally:
        if first.poll() is None:
            first.kill()
    assert killed_ms < boundary_ms, (
        f"the traffic and the kill took more than {ROOM_BEFORE_BOUNDARY_S} s: an interval ended before the kill, "
        "so this run cannot test the recovery of a staged interval")
    old_prog = int((tmp_path / "state" / "prog_id").read_text())
    second = _start_sidecar_process(config, log)
    try:
        assert "recovered the interval open when run" in log.read_text()
        _, err = long_client.communicate(timeout=60)
        assert long_client.returncode == 0, err
        server.wait(timeout=30)
        # the killed run's program was detached by the restart (else it would count for ever)
        assert not detach_stale_program(prog_id=old_prog, cgroup_path=str(CGROOT), name=b"flowlake_sockops")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0, log.read_text()
    rows = records_for(read_records(tmp_path / "raw"), local_ip=client_ip, remote_ip=server_ip)
    out = summed(rows, KEY)
    for item in [*plan, long_item]:
        rec = out[("outbound", client_ip, 0, server_ip, item["port"])]
        assert (rec["connections_opened"], rec["connections_closed"], rec["bytes_sent"], rec["bytes_received"]) == (
            1, 1, item["up"], item["down"]), (item, rec)
    staged = [r for r in rows if r["remote_port"] != long_item["port"]]
    assert all(closed_ms <= r["interval_end_ms"] <= killed_ms for r in staged), "the staged interval ends at its stage"


def _in_cgroup(cgroup: Path, args: list[str]) -> subprocess.Popen:
    """Start ``args`` as a member of ``cgroup`` (a 'container')."""
    return subprocess.Popen(["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _write_identity(directory: Path, name: str, data: dict | None) -> None:
    """What a runtime hook does: write-then-rename (or remove) one file per container."""
    path = directory / f"{name}.json"
    if data is None:
        path.unlink(missing_ok=True)
        return
    tmp = directory / f".{name}.json.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def test_two_containers_on_one_host_sidecar_carry_their_own_workload(tmp_path):
    """Containers alpha and beta (own netns + cgroup); beta stops and alpha restarts with beta's old IP."""
    pa_, pb = NetnsPair(251).up(), NetnsPair(252).up()
    tag = uuid.uuid4().hex[:6]
    cg_a, cg_b = CGROOT / f"flowlake-test-{tag}-alpha", CGROOT / f"flowlake-test-{tag}-beta"
    ident = tmp_path / "identity"
    ident.mkdir()
    try:
        cg_a.mkdir()
        cg_b.mkdir()
        a_ip, a_srv = pa_.v4
        b_ip, b_srv = pb.v4
        _write_identity(ident, "alpha", {"workload": "alpha", "ips": [a_ip], "cgroup": str(cg_a)})
        _write_identity(ident, "beta", {"workload": "beta", "ips": [b_ip], "cgroup": str(cg_b)})
        cfg = capture_config(tmp_path, interval_s=1.0, identity={"local_dir": str(ident)})

        def talk(pair: NetnsPair, cg: Path, server_ip: str, port: int, up: int) -> None:
            plan = [{"port": port, "up": up, "down": 5, "server_closes_first": False}]
            server = pair.start_server(server_ip, plan)
            client = _in_cgroup(cg, ["ip", "netns", "exec", pair.c, sys.executable, str(TRAFFIC), "client",
                                     server_ip, json.dumps(plan)])
            assert client.wait(timeout=30) == 0, client.stderr.read()
            server.wait(timeout=30)

        with ThreadedSidecar(write_config(tmp_path, cfg)) as side:
            talk(pa_, cg_a, a_srv, 7950, 111)
            talk(pb, cg_b, b_srv, 7951, 222)
            change_ms = int(time.time() * 1000)
            _write_identity(ident, "beta", None)  # beta stops
            _write_identity(ident, "alpha", {"workload": "alpha", "ips": [b_ip], "cgroup": str(cg_a)})
            deadline = time.monotonic() + 10  # checked every 0.25 s; a loaded CI host may be slower
            while side.sidecar.aggregator.local_workloads.get(b_ip) != "alpha" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert side.sidecar.aggregator.local_workloads == {b_ip: "alpha"}
            applied_s = time.monotonic() - deadline + 10
            talk(pb, cg_a, b_srv, 7952, 333)  # alpha, now on beta's old IP
            time.sleep(1.3)
        rows = read_records(tmp_path / "raw")
    finally:
        pa_.down()
        pb.down()
        for cg in (cg_a, cg_b):
            if cg.is_dir():
                cg.rmdir()
    by_port: dict[int, dict] = {}  # a connection can straddle a boundary: sum its rows
    for r in rows:
        if r["direction"] == "outbound" and r["remote_port"] in (7950, 7951, 7952):
            acc = by_port.setdefault(r["remote_port"], {"ips": set(), "workloads": set(), "bytes_sent": 0,
                                                        "start": r["interval_start_ms"], "end": 0})
            acc["ips"].add(r["local_ip"])
            acc["workloads"].add(r["local_workload"])
            acc["bytes_sent"] += r["bytes_sent"]
            acc["start"] = min(acc["start"], r["interval_start_ms"])
            acc["end"] = max(acc["end"], r["interval_end_ms"])
    view = {port: (a["ips"], a["workloads"]) for port, a in by_port.items()}
    assert view == {7950: ({a_ip}, {"alpha"}), 7951: ({b_ip}, {"beta"}), 7952: ({b_ip}, {"alpha"})}
    # bytes: exact in almost every run; once in ~10 runs on a host at load ~11 one connection
    # closed in the kernel had its FIN byte counted (334 for 333; see the capture report)
    sent = {port: a["bytes_sent"] for port, a in by_port.items()}
    assert all(0 <= sent[p] - want <= 1 for p, want in ((7950, 111), (7951, 222), (7952, 333))), sent
    assert all(r["instance_id"] == "test-host" for r in rows), "instance_id still names the host"
    # the change splits the interval: beta's record ends by it, alpha's on that IP starts after it
    assert by_port[7951]["end"] <= by_port[7952]["start"]
    assert by_port[7952]["start"] >= change_ms
    assert applied_s < 5.0, f"the change took {applied_s:.2f} s to apply"  # 0.25 s checks; fsyncs on a loaded host
    # servers' IPs are in no identity file: the host's workload
    assert {r["local_workload"] for r in rows if r["direction"] == "inbound" and r["local_port"] in (7950, 7951, 7952)} == {"tests"}
