"""What one interval costs as the Airflow DAG runs it: a `flowlake pipeline run --stages <stage>` process a task.

    .venv/bin/python bench/dag_tasks.py [--records 2000] [--rounds 1]

Simulates one hour (the DAG test's size by default: 2,000 records in 20-minute
files) and runs the DAG's tasks on it, in order, each as its own process with one
run id, as `dags/flowlake_hourly.py` does (gates on, the cheap insight tables, two
shuffle partitions, local[2]). Printed per task: the process's wall seconds (JVM
start and warm-up included, as each Airflow task pays them) and the stage seconds
its report gives. ``--rounds N`` repeats the interval on fresh lakes (the machine
is noisy). A profile of fixed costs, not a benchmark against a baseline: at this
size a task's work is its process's warm-up and Delta's commit protocol.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent / "flowlake"
START, END = "2025-06-02T00:00:00Z", "2025-06-02T01:00:00Z"
STAGE_SECONDS = re.compile(r"^stage seconds: (.*)$", re.M)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--data", default=None, help="work folder (default: a new temporary one, removed after)")
    args = ap.parse_args()

    from flowlake.jobs.run.stage_names import STAGE_NAMES

    work = Path(args.data or tempfile.mkdtemp(prefix="flowlake-dag-tasks-"))
    env = {**os.environ, "FLOWLAKE_SIM__BATCH_INTERVALS": "20", "FLOWLAKE_JOBS__SHUFFLE_PARTITIONS": "2",
           "FLOWLAKE_SPARK_MASTER": "local[2]", "FLOWLAKE_INSIGHT__TABLES": '["rollups", "crosszone", "policy"]'}
    raw = work / "raw"
    if not raw.is_dir():
        subprocess.run([str(BIN), "simulate", "--out", str(raw), "--start", START, "--hours", "1",
                        "--records", str(args.records), "--quiet"], env=env, check=True, cwd=REPO)
    try:
        for n in range(args.rounds):
            lake = work / f"lake{n}"
            shutil.rmtree(lake, ignore_errors=True)
            walls = {}
            for stage in STAGE_NAMES:
                began = time.monotonic()
                done = subprocess.run([str(BIN), "pipeline", "run", "--raw", str(raw), "--lake", str(lake),
                                       "--start", START, "--end", END, "--stages", stage, "--run-id", f"bench-{n}"],
                                      env=env, cwd=REPO, capture_output=True, text=True)
                walls[stage] = time.monotonic() - began
                if done.returncode:
                    sys.exit(f"{stage} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
                found = STAGE_SECONDS.search(done.stdout)
                print(f"round {n + 1} {stage:9s} wall {walls[stage]:6.1f} s   stage seconds: "
                      f"{found.group(1) if found else '?'}", flush=True)
            print(f"round {n + 1} total wall {sum(walls.values()):.1f} s over {len(walls)} processes", flush=True)
    finally:
        if not args.data:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
