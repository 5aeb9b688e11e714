"""VACUUM's fixed cost per table at two file-listing parallelisms (a profile, not a baseline run).

    .venv/bin/python bench/vacuum_listing.py --lake LAKE --tables silver/flows_attributed,bronze/flows \\
        --parallelism 8,10000

VACUUM lists a table's folders in ``spark.sql.sources.parallelPartitionDiscovery.parallelism`` tasks;
flowlake sets it to the shuffle partitions (flowlake/spark.py), Spark's default is 10,000. Each table is
vacuumed at each setting in one session (retention 168 h, so nothing recent is deleted); the first
table's first VACUUM includes the JVM's warm-up.
"""
from __future__ import annotations

import argparse
import time

from delta.tables import DeltaTable

from flowlake.spark import get_spark, jvm_console_captured

RETAIN_HOURS = 168


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True)
    ap.add_argument("--tables", required=True, help="comma-separated table paths under the lake")
    ap.add_argument("--parallelism", default="8,10000", help="comma-separated settings to compare")
    args = ap.parse_args()
    spark = get_spark(app_name="bench-vacuum-listing")
    for par in args.parallelism.split(","):
        spark.conf.set("spark.sql.sources.parallelPartitionDiscovery.parallelism", par)
        for table in args.tables.split(","):
            began = time.monotonic()
            with jvm_console_captured(spark) as printed:
                DeltaTable.forPath(spark, f"{args.lake}/{table}").vacuum(RETAIN_HOURS)
            print(f"parallelism {par:>6} {table}: {time.monotonic() - began:5.1f} s ({' '.join(printed).strip()})",
                  flush=True)


if __name__ == "__main__":
    main()
