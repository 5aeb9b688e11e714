"""Overhead of the capture sidecar vs. BCC's tcplife under loopback connection load.

For each rate (default 1k, 5k, 20k connections/s) and each tool (flowlake
sidecar, tcplife-bpfcc), in one run: start the tool, drive short loopback
connections at that rate for a few seconds with a small C load generator,
then report CPU as % of one core (the tool's user+system time plus the
kernel-side run time of its BPF programs, from kernel.bpf_stats_enabled),
peak RSS, what it lost, and the cost per connection.

    sudo .venv/bin/python bench/capture_overhead.py [--rates 1000,5000,20000] [--seconds 8]

Needs root, BCC (scripts/setup-capture.sh), gcc and bpftool.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PORT = 39111  # the load generator's server port (records are counted for it)
WARMUP_S = 3.0  # after the tool says it is ready, the same for every tool, before a phase starts
LOADGEN_THREADS = 4

LOADGEN_C = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int port, listener; static double rate, seconds; static int nthreads = 4;
static volatile long done_count = 0, fail_count = 0;

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static void *server(void *arg) {
    char buf[256];
    for (;;) {
        int c = accept(listener, NULL, NULL);
        if (c < 0) continue;
        ssize_t n = read(c, buf, sizeof buf);
        if (n > 0) write(c, buf, n);
        close(c);  /* server closes first: no client TIME_WAIT, ports recycle */
    }
    return NULL;
}

static void *client(void *arg) {
    long id = (long)arg; char buf[256]; memset(buf, 'x', 100);
    double per = rate / nthreads, start = now(); long i = 0;
    struct sockaddr_in a = {0}; a.sin_family = AF_INET; a.sin_port = htons(port);
    while (now() - start < seconds) {
        double due = start + i / per;
        double t = now();
        if (t < due) { struct timespec s = {0, (long)((due - t) * 1e9)}; nanosleep(&s, NULL); }
        a.sin_addr.s_addr = htonl(0x7f000001 + ((i * nthreads + id) % 8));  /* 127.0.0.1-8 */
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(s, (struct sockaddr *)&a, sizeof a) == 0 && write(s, buf, 100) == 100) {
            while (read(s, buf, sizeof buf) > 0) {}
            __sync_fetch_and_add(&done_count, 1);
        } else {
            __sync_fetch_and_add(&fail_count, 1);
        }
        close(s); i++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    port = atoi(argv[1]); rate = atof(argv[2]); seconds = atof(argv[3]);
    if (argc > 4) nthreads = atoi(argv[4]);
    if (nthreads < 1 || nthreads > 8) { fprintf(stderr, "threads must be 1..8\n"); return 2; }
    listener = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1; setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {0}; a.sin_family = AF_INET; a.sin_port = htons(port); a.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(listener, (struct sockaddr *)&a, sizeof a) || listen(listener, 4096)) { perror("listen"); return 1; }
    pthread_t th;
    for (int k = 0; k < 2; k++) pthread_create(&th, NULL, server, NULL);
    pthread_t cl[8];
    double t0 = now();
    for (long k = 0; k < nthreads; k++) pthread_create(&cl[k], NULL, client, (void *)k);
    for (int k = 0; k < nthreads; k++) pthread_join(cl[k], NULL);
    printf("{\"connections\": %ld, \"failures\": %ld, \"elapsed_s\": %.3f}\n", done_count, fail_count, now() - t0);
    return 0;
}
"""


def build_loadgen(workdir: Path) -> Path:
    src, exe = workdir / "loadgen.c", workdir / "loadgen"
    src.write_text(LOADGEN_C)
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe), str(src)], check=True)
    return exe


def proc_cpu_s(pid: int) -> float:
    """user+system CPU seconds of a process and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_rss(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    get = lambda k: int(re.search(rf"^{k}:\s+(\d+) kB", status, re.M).group(1)) * 1024  # noqa: E731
    return get("VmRSS"), get("VmHWM")


def bpf_progs() -> dict[int, int]:
    """id -> run_time_ns of every loaded BPF program (run time needs kernel.bpf_stats_enabled=1)."""
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True, check=True).stdout
    return {p["id"]: p.get("run_time_ns", 0) for p in json.loads(out or "[]")}


def bpf_time_ns(prog_ids: set[int]) -> int:
    """Kernel run time of the given programs (the ones the measured tool loaded)."""
    return sum(t for i, t in bpf_progs().items() if i in prog_ids)


def wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited early:\n{path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {text!r} in {path}")


def measure(pid: int, prog_ids: set[int], loadgen: Path, rate: int, seconds: float,
            files_closed: "callable | None" = None) -> dict:
    if not prog_ids:
        raise RuntimeError("the measured tool loaded no BPF program")
    files0 = files_closed() if files_closed else 0
    cpu0, bpf0, t0 = proc_cpu_s(pid), bpf_time_ns(prog_ids), time.monotonic()
    res = subprocess.run([str(loadgen), str(PORT), str(rate), str(seconds), str(LOADGEN_THREADS)],
                         capture_output=True, text=True, check=True)
    time.sleep(0.5)  # let the tool read what the last connections produced
    cpu1, bpf1, t1 = proc_cpu_s(pid), bpf_time_ns(prog_ids), time.monotonic()
    files1 = files_closed() if files_closed else 0
    load = json.loads(res.stdout)
    rss, peak = proc_rss(pid)
    wall = t1 - t0
    user_s, bpf_s = cpu1 - cpu0, (bpf1 - bpf0) / 1e9
    conns = max(1, load["connections"])
    return {
        "rate_target": rate, "connections": load["connections"], "connect_failures": load["failures"],
        "rate_achieved": round(load["connections"] / load["elapsed_s"]),
        "cpu_pct_one_core": round(100 * (user_s + bpf_s) / wall, 3),
        "user_cpu_pct": round(100 * user_s / wall, 3), "bpf_cpu_pct": round(100 * bpf_s / wall, 3),
        "us_per_connection": round(1e6 * (user_s + bpf_s) / conns, 3),
        "rss_mb": round(rss / 2**20, 1), "peak_rss_mb": round(peak / 2**20, 1),
        "files_closed_in_phase": files1 - files0,
    }


def run_sidecar(loadgen: Path, rate: int, seconds: float, work: Path, interval_s: float,
                intervals_per_file: int = 1) -> dict:
    d = work / f"sidecar-{rate}"
    d.mkdir()
    cfg = {
        "interval_s": interval_s, "identity": {"instance_id": "bench"},
        "sink": {"kind": "local", "local_root": str(d / "raw")}, "spool": {"dir": str(d / "spool")},
        "state_dir": str(d / "state"), "metrics": {"port": 0}, "rolling": {"intervals_per_file": intervals_per_file},
        "kernel": {"netns_dirs": []},
    }
    (d / "capture.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    log = d / "sidecar.log"
    before = set(bpf_progs())
    proc = subprocess.Popen([str(Path(sys.executable).parent / "flowlake"), "capture", "run", "--config",
                             str(d / "capture.yaml")], stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(log, "capture started", proc)
        time.sleep(WARMUP_S)
        # a file counts once it is uploaded (to the local sink): closing and uploading are in the phase
        uploaded = lambda: sum(1 for _ in (d / "raw").rglob("*.parquet"))  # noqa: E731
        result = measure(proc.pid, set(bpf_progs()) - before, loadgen, rate, seconds, files_closed=uploaded)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    import pyarrow.parquet as pq  # noqa: PLC0415

    recorded = 0
    for path in (d / "raw").rglob("*.parquet"):
        t = pq.read_table(path, columns=["local_port", "direction", "connections_closed"]).to_pylist()
        recorded += sum(r["connections_closed"] for r in t if r["direction"] == "inbound" and r["local_port"] == PORT)
    drops = re.findall(r"drops: (\{[^}]*\})", log.read_text())
    result["recorded_connections"] = recorded
    result["lost"] = result["connections"] - recorded
    result["kernel_drops"] = drops[-1] if drops else "?"
    return result


def run_tcplife(loadgen: Path, rate: int, seconds: float, work: Path, interval_s: float) -> dict:
    exe = shutil.which("tcplife-bpfcc") or "/usr/sbin/tcplife-bpfcc"
    out = work / f"tcplife-{rate}.out"
    before = set(bpf_progs())
    proc = subprocess.Popen([exe, "-L", str(PORT)], stdout=open(out, "wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(out, "PID", proc)
        time.sleep(WARMUP_S)
        result = measure(proc.pid, set(bpf_progs()) - before, loadgen, rate, seconds)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    text = out.read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if re.match(r"^\d+\s", ln)]
    lost_samples = sum(int(n) for n in re.findall(r"[Ll]ost (\d+) samples", text))
    result["recorded_connections"] = len(lines)
    result["lost"] = result["connections"] - len(lines)
    result["kernel_drops"] = f"perf buffer lost {lost_samples} samples"
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1000,5000,20000", help="connections per second, comma separated")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    ap.add_argument("--tools", default="flowlake,tcplife")
    ap.add_argument("--interval-s", type=float, default=5.0,
                    help="sidecar interval (default 5 s, so each phase includes boundary work; production uses 60)")
    ap.add_argument("--intervals-per-file", type=int, default=1,
                    help="sidecar rolling (default 1: every boundary in a phase closes and uploads a file)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("capture_overhead.py needs root (BPF, bpf_stats)")
    for tool in ("gcc", "bpftool"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install {tool}")
    stats_before = Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()
    Path("/proc/sys/kernel/bpf_stats_enabled").write_text("1")
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="flowlake-bench-") as tmp:
            work = Path(tmp)
            loadgen = build_loadgen(work)
            for rate in (int(r) for r in args.rates.split(",")):
                for tool in args.tools.split(","):
                    if tool == "flowlake":
                        res = run_sidecar(loadgen, rate, args.seconds, work, args.interval_s,
                                          intervals_per_file=args.intervals_per_file)
                    else:
                        res = run_tcplife(loadgen, rate, args.seconds, work, args.interval_s)
                    res = {"tool": tool, **res}
                    results.append(res)
                    print(json.dumps(res), flush=True)
    finally:
        Path("/proc/sys/kernel/bpf_stats_enabled").write_text(stats_before)
    print()
    print(f"{'tool':9} {'rate':>6} {'achieved':>8} {'conns':>7} {'cpu%':>7} {'bpf%':>6} {'us/conn':>8} "
          f"{'rss MB':>7} {'peak':>6} {'lost':>5} {'files':>5}")
    for r in results:
        print(f"{r['tool']:9} {r['rate_target']:>6} {r['rate_achieved']:>8} {r['connections']:>7} "
              f"{r['cpu_pct_one_core']:>7.3f} {r['bpf_cpu_pct']:>6.3f} {r['us_per_connection']:>8.3f} "
              f"{r['rss_mb']:>7} {r['peak_rss_mb']:>6} {r['lost']:>5} {r.get('files_closed_in_phase', '-'):>5}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
