"""What an hourly run costs when no new data came: consecutive quiet hours after a lake's last run.

    .venv/bin/python bench/quiet_hours.py --raw /tmp/demo-h/raw --lake /tmp/demo-h/lake [--hours 3]
        [--spark-conf '{"spark.sql.codegen.wholeStage": "false"}']

Copies the lake (the original is left as it is), then runs the pipeline over the
``--hours`` whole hours after the last window in ``_meta/runs``, one after the
other in ONE Spark session (local[*], the CLI's settings). The first run pays the
process's warm-up (JVM, code generation, Delta's first snapshot, Great
Expectations' import), as each cron or Airflow run does; the later ones show the
per-run cost of a warm driver. Printed per run: wall seconds and the stage and
gate seconds of its report. Made for a lake of ``bash scripts/demo.sh --days 14``.

A profile, not a benchmark against a baseline: a quiet hour's work is the Delta
commit protocol's and the gates', which DuckDB has no equivalent of.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw", required=True, help="the lake's raw root")
    ap.add_argument("--lake", required=True, help="a lake some runs wrote (copied, not changed)")
    ap.add_argument("--hours", type=int, default=3)
    ap.add_argument("--spark-conf", default="{}", help="extra Spark settings, a JSON object")
    args = ap.parse_args()

    import deltalake

    from flowlake.jobs.config import load_jobs_config
    from flowlake.jobs.run.pipeline import run
    from flowlake.spark import get_spark
    from flowlake.timeutil import HOUR_MS, iso

    work = Path(tempfile.mkdtemp(prefix="flowlake-quiet-"))
    lake = work / "lake"
    shutil.copytree(args.lake, lake)
    last = int(deltalake.DeltaTable(str(lake / "_meta" / "runs")).to_pandas()["end_ms"].max())
    spark = get_spark(app_name="quiet-hours", extra_conf=json.loads(args.spark_conf))
    try:
        for i in range(args.hours):
            start = last + i * HOUR_MS
            began = time.monotonic()
            report = run(spark, raw_root=args.raw, lake_root=str(lake), start_ms=start, end_ms=start + HOUR_MS,
                         config=load_jobs_config())
            seconds = {k: round(v, 1) for k, v in report.seconds.items()}
            print(f"run {i + 1} [{iso(start)}, +1h): wall {time.monotonic() - began:.1f} s, "
                  f"records {report.attributed_rows}, seconds {seconds}", flush=True)
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
