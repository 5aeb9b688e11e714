"""Where a run's fixed cost goes: a re-run with no new data, profiled by Spark job.

    .venv/bin/python bench/rerun_profile.py [--records 24000] [--data /tmp/flowlake-rerun-profile]
        [--spark-conf '{"spark.databricks.delta.snapshotPartitions": "50"}']

It simulates a two-hour fleet (20-minute files), runs the pipeline over each hour
in one fresh Spark session (local[*], the CLI's settings), then re-runs the
second hour in a NEW session, with nothing new to ingest: what that re-run
costs is the per-run fixed cost every hourly run pays on top of its data
(JVM warm-up included, as in a scheduled `flowlake pipeline run`).

Printed: the re-run's seconds per stage and per gate, its Spark jobs and
their summed seconds grouped by what they did (Delta's job descriptions such
as "Filtering files for query" / "Compute snapshot", or the call site), the
top groups first. ``--spark-conf`` sets Spark keys for both sessions (e.g.
Delta's snapshotPartitions back to its default 50, to compare).

This is a profile, not a benchmark against a baseline: DuckDB has no
equivalent of a Delta commit protocol's per-run work to compare with.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

START = "2025-06-02T00:00:00Z"

_RUN = r'''
import json, sys, time
from flowlake.jobs.config import load_jobs_config
from flowlake.jobs.run.pipeline import run
from flowlake.spark import get_spark
from flowlake.timeutil import HOUR_MS, parse_utc

data, hours = sys.argv[1], [int(h) for h in sys.argv[2].split(",")]
t0 = parse_utc("%s")
spark = get_spark(app_name="rerun-profile")
for h in hours:
    began = time.monotonic()
    report = run(spark, raw_root=data + "/raw", lake_root=data + "/lake", start_ms=t0 + h * HOUR_MS,
                 end_ms=t0 + (h + 1) * HOUR_MS, config=load_jobs_config())
    print(json.dumps({"hour": h, "wall_s": time.monotonic() - began, "seconds": report.seconds}), flush=True)
url = spark.sparkContext.uiWebUrl
app = json.load(urllib.request.urlopen(url + "/api/v1/applications"))[0]["id"]
jobs = json.load(urllib.request.urlopen(f"{url}/api/v1/applications/{app}/jobs"))
print("JOBS " + json.dumps(jobs), flush=True)
''' % START


def _session(data: Path, hours: str, conf: dict[str, str]) -> tuple[list[dict], list[dict]]:
    env = {**os.environ, "FLOWLAKE_SPARK_CONF": json.dumps({**conf, "spark.ui.enabled": "true"})}
    code = "import urllib.request\n" + _RUN
    done = subprocess.run([sys.executable, "-c", code, str(data), hours], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the pipeline session failed:\n{done.stderr[-4000:]}")
    runs, jobs = [], []
    for line in done.stdout.splitlines():
        if line.startswith("JOBS "):
            jobs = json.loads(line[5:])
        elif line.startswith("{"):
            runs.append(json.loads(line))
    return runs, jobs


def _seconds(job: dict) -> float:
    def ts(text: str) -> datetime:
        return datetime.strptime(text.replace("GMT", ""), "%Y-%m-%dT%H:%M:%S.%f")
    if not job.get("completionTime"):
        return 0.0
    return (ts(job["completionTime"]) - ts(job["submissionTime"])).total_seconds()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=24_000)
    ap.add_argument("--data", default="/tmp/flowlake-rerun-profile")
    ap.add_argument("--spark-conf", default="{}", help="JSON object of Spark keys for both sessions.")
    args = ap.parse_args()
    conf = json.loads(args.spark_conf)
    data = Path(args.data)
    shutil.rmtree(data, ignore_errors=True)

    from flowlake.config import load_config
    from flowlake.sim.core import simulate
    from flowlake.sim.params import SimParams

    simulate(out=str(data / "raw"), params=load_config(SimParams, start=START, hours=2.0, records=args.records,
                                                       seed=11, batch_intervals=20), progress=False)
    began = time.monotonic()
    _session(data, "0,1", conf)
    print(f"lake built: hours 0 and 1 in {time.monotonic() - began:.0f} s")
    (rerun,), jobs = _session(data, "1", conf)
    print(f"re-run of hour 1, no new data, fresh session: {rerun['wall_s']:.1f} s")
    print("  " + ", ".join(f"{k} {v:.1f}" for k, v in rerun["seconds"].items()))
    groups: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0, 0])
    for job in jobs:
        what = (job.get("description") or "").split("\n")[0][:60] or job["name"].split(" at ")[0]
        where = job["name"].split(" at ")[-1][:50]
        g = groups[f"{what} | {where}"]
        g[0] += _seconds(job)
        g[1] += 1
        g[2] += job["numTasks"]
    total = sum(g[0] for g in groups.values())
    print(f"Spark jobs: {len(jobs)}, {total:.1f} s summed, {sum(g[2] for g in groups.values())} tasks; top groups:")
    for name, (secs, n, tasks) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:12]:
        print(f"  {secs:6.1f} s  {n:3d} job(s) {tasks:5d} task(s)  {name}")


if __name__ == "__main__":
    main()
