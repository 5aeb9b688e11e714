"""Real-kernel lifecycle tests: SIGTERM + restart, S3 outage, real clients (curl vs nginx)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .conftest import (
    TRAFFIC,
    ThreadedSidecar,
    capture_config,
    read_records,
    records_for,
    summed,
    wait_boundaries,
    write_config,
)

pytestmark = pytest.mark.kernel
KEY = ("direction", "local_ip", "local_port", "remote_ip", "remote_port")


def _start_sidecar_process(config: Path, log: Path) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "flowlake"
    before = log.read_text().count("capture started") if log.exists() else 0
    fh = open(log, "ab")
    proc = subprocess.Popen([str(exe), "capture", "run", "--config", str(config)], stdout=fh, stderr=fh)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.read_text().count("capture started") > before:
            return proc
        if proc.poll() is not None:
            raise AssertionError(f"sidecar exited early:\n{log.read_text()}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"sidecar did not start:\n{log.read_text()}")


def test_sigterm_mid_interval_then_restart_loses_and_doubles_nothing(tmp_path, netns_pair):
    client_ip, server_ip = netns_pair.v4
    long_item = {"port": 7600, "up": 1_200_000, "down": 777, "server_closes_first": False}
    batch_a = [{"port": 7601 + i, "up": 1000 * (i + 1), "down": 10 + i, "server_closes_first": bool(i % 2)} for i in range(3)]
    batch_b = [{"port": 7604 + i, "up": 3000 + i, "down": 500 * (i + 1), "server_closes_first": bool(i % 2)} for i in range(3)]
    config = write_config(tmp_path, capture_config(tmp_path, interval_s=2.0))
    log = tmp_path / "sidecar.log"

    first = _start_sidecar_process(config, log)
    server = netns_pair.start_server(server_ip, [long_item, *batch_a, *batch_b])
    long_client = netns_pair.exec(netns_pair.c, sys.executable, str(TRAFFIC), "client", server_ip,
                                  json.dumps([long_item]), "0.5", "12")
    netns_pair.run_client(server_ip, batch_a)
    # SIGTERM in the middle of an interval
    phase = time.time() % 2.0
    time.sleep((1.0 - phase) if phase < 1.0 else (3.0 - phase))  # lands 1 s into a 2 s interval
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0, log.read_text()
    time.sleep(0.7)  # down: the long connection keeps sending
    second = _start_sidecar_process(config, log)
    netns_pair.run_client(server_ip, batch_b)
    long_out, err = long_client.communicate(timeout=60)
    assert long_client.returncode == 0, err
    server.wait(timeout=30)
    time.sleep(2.5)
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 0, log.read_text()

    rows = records_for(read_records(tmp_path / "raw"), local_ip=client_ip, remote_ip=server_ip)
    out = summed(rows, KEY)
    for item in [long_item, *batch_a, *batch_b]:
        rec = out[("outbound", client_ip, 0, server_ip, item["port"])]
        assert (rec["connections_opened"], rec["connections_closed"]) == (1, 1), (item, rec)
        assert (rec["bytes_sent"], rec["bytes_received"]) == (item["up"], item["down"]), (item, rec)
    assert len(out) == 7
    long_rows = [r for r in rows if r["remote_port"] == 7600]
    assert len(long_rows) >= 3
    # no interval was written twice
    seen = [(r["interval_start_ms"], r["remote_port"]) for r in rows]
    assert len(seen) == len(set(seen))


def test_s3_outage_spools_then_uploads_everything_in_order_once(tmp_path, netns_pair, s3_server):
    client_ip, server_ip = netns_pair.v4
    bucket = s3_server.new_bucket()
    cfg = capture_config(tmp_path, rolling={"intervals_per_file": 1},
                         sink={"kind": "s3", "bucket": bucket, "prefix": "raw", "endpoint_url": s3_server.endpoint,
                               "region_name": "us-east-1", "max_attempts": 1, "timeout_s": 2,
                               "backoff_initial_s": 0.2, "backoff_max_s": 0.5})
    plan = [{"port": 7700 + i, "up": 10_000 + i, "down": 20 + i, "server_closes_first": False} for i in range(4)]
    try:
        with ThreadedSidecar(write_config(tmp_path, cfg)) as side:
            s3_server.stop()
            server = netns_pair.start_server(server_ip, plan)
            for item in plan:  # one connection per interval
                netns_pair.run_client(server_ip, [item])
                time.sleep(1.0)
            server.wait(timeout=30)
            wait_boundaries(1, 1.0)
            sidecar = side.sidecar
            assert sidecar.uploader.failures > 0
            spooled = len(sidecar.spool.entries())
            assert spooled >= 4, "files wait in the spool while S3 is down"
            s3_server.start()
            s3_server.client().create_bucket(Bucket=bucket)  # the restarted server starts empty
            deadline = time.monotonic() + 30
            while sidecar.spool.entries() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not sidecar.spool.entries(), "the spool drains once S3 is back"
        uploaded = list(sidecar.uploader.uploaded_keys)
    finally:
        if s3_server.proc is None:
            s3_server.start()
    assert len(uploaded) == len(set(uploaded)) == sidecar.writer.files_written
    seqs = [int(k.rsplit("-", 1)[1].split(".")[0]) for k in uploaded]
    assert seqs == sorted(seqs), "oldest first"
    client = s3_server.client()
    listed = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="raw/").get("Contents", []))
    assert listed == sorted(f"raw/{k}" for k in uploaded)
    local = tmp_path / "from_s3"
    for key in listed:
        dest = local / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(dest))
    out = summed(records_for(read_records(local), local_ip=client_ip, remote_ip=server_ip), KEY)
    for item in plan:
        rec = out[("outbound", client_ip, 0, server_ip, item["port"])]
        assert (rec["connections_opened"], rec["bytes_sent"], rec["bytes_received"]) == (1, item["up"], item["down"])


NGINX_CONF = """
user root;
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
    log_format counts '$bytes_sent $request_length';
    access_log {d}/access.log counts;
    keepalive_timeout 0;
    server {{
        listen {ip}:8080;
        root {d}/www;
    }}
}}
"""


def test_curl_against_nginx_matches_both_sides_own_counts(tmp_path, netns_pair):
    assert shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"), "nginx missing: run scripts/setup-capture.sh"
    client_ip, server_ip = netns_pair.v4
    web = tmp_path / "web"
    (web / "www").mkdir(parents=True)
    (web / "www" / "small.txt").write_bytes(b"s" * 1234)
    (web / "www" / "big.bin").write_bytes(os.urandom(3_000_000))
    (web / "nginx.conf").write_text(NGINX_CONF.format(d=web, ip=server_ip))
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    with ThreadedSidecar(write_config(tmp_path, capture_config(tmp_path))) as side:
        nginx = netns_pair.exec(netns_pair.s, nginx_bin, "-c", str(web / "nginx.conf"), "-p", str(web))
        try:
            deadline = time.monotonic() + 10
            while not (web / "nginx.pid").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            curl = []
            for path in ("small.txt", "big.bin", "missing", "small.txt"):
                res = subprocess.run(
                    ["ip", "netns", "exec", netns_pair.c, "curl", "-s", "-o", "/dev/null", "-w",
                     "%{size_request} %{size_header} %{size_download}", f"http://{server_ip}:8080/{path}"],
                    capture_output=True, text=True, check=True, timeout=30)
                curl.append(tuple(int(x) for x in res.stdout.split()))
        finally:
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(timeout=10)
        wait_boundaries(1, side.cfg.interval_s)
    access = [tuple(int(x) for x in line.split()) for line in (web / "access.log").read_text().splitlines()]
    assert len(access) == 4
    rows = read_records(tmp_path / "raw")
    inn = summed(records_for(rows, local_ip=server_ip, remote_ip=client_ip), KEY)[("inbound", server_ip, 8080, client_ip, 0)]
    out = summed(records_for(rows, local_ip=client_ip, remote_ip=server_ip), KEY)[("outbound", client_ip, 0, server_ip, 8080)]
    assert inn["connections_opened"] == 4 and out["connections_opened"] == 4
    # nginx's own log: bytes it sent, request bytes it read
    assert inn["bytes_sent"] == sum(a[0] for a in access)
    assert inn["bytes_received"] == sum(a[1] for a in access)
    # curl's own counts: request bytes, response header + body bytes
    assert out["bytes_sent"] == sum(c[0] for c in curl)
    assert out["bytes_received"] == sum(c[1] + c[2] for c in curl)
