"""Attribution benchmark: flowlake's Spark attribution vs DuckDB's ASOF JOIN, same data, same run.

    .venv/bin/python bench/attribution.py [--records 1000000,10000000] [--workdir /tmp/flowlake-bench]

For each size it simulates a fleet (cached in the workdir), builds the
ownership ranges with flowlake's ownership job, then times, on the same
2 cores:
  * spark:  flowlake.jobs.silver.attribute.transform (CIDR classes, both as-of
            lookups, all output columns), materialised with the noop sink;
  * duckdb: the same two lookups as DuckDB ASOF LEFT JOINs against the same
            change points (precomputed by flowlake, so DuckDB gets them for
            free), reading the same flows Parquet file, materialised into a table.
It prints flows/s for each and the ratio duckdb/spark (lower is better for
flowlake; 1.0 = as fast as DuckDB), plus ownership build time and the
linearity of Spark's cost across sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq


def prepare(workdir: Path, records: int) -> Path:
    """Simulate `records` raw records once and compact them into one Parquet file for both engines."""
    from flowlake.config import load_config
    from flowlake.sim.core import simulate
    from flowlake.sim.params import SimParams

    base = workdir / f"r{records}"
    flows = base / "flows.parquet"
    if flows.exists():
        return base
    params = load_config(SimParams, hours=2.0, records=records, seed=5)
    simulate(out=str(base / "raw"), params=params, progress=True, overwrite=True)
    table = ds.dataset(str(base / "raw/flows/v1"), format="parquet").to_table()
    pq.write_table(table, flows, compression="zstd", row_group_size=1_000_000)
    ev = base / "raw/ip_events/v1"
    parts = [ds.dataset(str(ev), format="parquet", exclude_invalid_files=True).to_table()]
    import gzip

    import pyarrow as pa
    import pyarrow.json as pajson

    from flowlake.contracts import IP_EVENT_SCHEMA

    for path in sorted(ev.rglob("*.jsonl.gz")):
        with gzip.open(path, "rb") as f:
            parts.append(pajson.read_json(pa.BufferReader(f.read()), parse_options=pajson.ParseOptions(
                explicit_schema=IP_EVENT_SCHEMA)))
    events = pa.concat_tables([p.select(IP_EVENT_SCHEMA.names).cast(IP_EVENT_SCHEMA) for p in parts
                               if p.num_rows and set(IP_EVENT_SCHEMA.names) <= set(p.column_names)])
    pq.write_table(events, base / "events.parquet")
    return base


def run_spark(spark, base: Path) -> dict:
    from pyspark.sql import functions as F

    from flowlake.jobs.silver import attribute
    from flowlake.jobs.silver import ownership
    from flowlake.jobs.config import load_jobs_config

    params = load_jobs_config().attribution
    flows = spark.read.parquet(str(base / "flows.parquet"))
    events = spark.read.parquet(str(base / "events.parquet"))
    n = flows.count()
    t = time.perf_counter()
    ranges, _ = ownership.transform(flows, events, params=params)
    ranges = ranges.persist()
    n_ranges = ranges.count()
    t_own = time.perf_counter() - t
    points = attribute.lookup_points(ranges, flows.select("remote_ip"), params=params)
    points.write.mode("overwrite").parquet(str(base / "points.parquet"))

    t = time.perf_counter()
    attribute.transform(flows, ranges, params=params).write.format("noop").mode("overwrite").save()
    t_attr = time.perf_counter() - t
    ranges.unpersist()
    return {"records": n, "ranges": n_ranges, "ownership_s": t_own, "spark_attribute_s": t_attr,
            "points": spark.read.parquet(str(base / "points.parquet")).where(F.lit(True)).count()}


def run_duckdb(base: Path, threads: int) -> dict:
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    # bounded memory (it spills): at 10M rows an unbounded run was OOM-killed at 12 GB
    con.execute("SET memory_limit = '6GB'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET temp_directory = '{base / 'duckdb_tmp'}'")
    # Both engines start from the same Parquet files and materialise every output row.
    con.execute(f"CREATE TABLE points AS SELECT * FROM read_parquet('{base / 'points.parquet'}/*.parquet')")
    con.execute(f"CREATE VIEW flows AS SELECT * FROM read_parquet('{base / 'flows.parquet'}')")
    t = time.perf_counter()
    con.execute("""
        CREATE TEMP TABLE attributed AS
        SELECT f.*,
               coalesce(f.local_workload, CASE WHEN l.source IN ('heartbeat', 'event') THEN l.workload END)
                   AS local_workload_resolved,
               r.workload AS remote_workload,
               coalesce(CASE WHEN r.workload IS NOT NULL THEN r.source END, 'unattributed') AS remote_attribution,
               CASE WHEN r.source IN ('heartbeat', 'event') THEN r.availability_zone END AS remote_availability_zone
        FROM flows f
        ASOF LEFT JOIN points r ON f.remote_ip = r.ip AND f.first_start_ms >= r.ts_ms
        ASOF LEFT JOIN points l ON f.local_ip = l.ip AND f.first_start_ms >= l.ts_ms
    """)
    elapsed = time.perf_counter() - t
    n = con.execute("SELECT count(*) FROM attributed").fetchone()[0]
    return {"duckdb_records": n, "duckdb_attribute_s": elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", default="1000000,10000000", help="comma-separated sizes")
    ap.add_argument("--workdir", default="/tmp/flowlake-bench")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    from flowlake.spark import get_spark

    spark = get_spark(app_name="flowlake-bench", master=f"local[{args.threads}]", shuffle_partitions=args.threads * 2)
    results = []
    for size in [int(s) for s in args.records.split(",")]:
        base = prepare(Path(args.workdir), size)
        r = run_spark(spark, base)
        print(f"{r['records']:>11,} flows | spark {r['records'] / r['spark_attribute_s']:>12,.0f}/s "
              f"({r['spark_attribute_s']:.1f}s) | ownership {r['ownership_s']:.1f}s", flush=True)
        r |= run_duckdb(base, args.threads)
        r["spark_flows_per_s"] = r["records"] / r["spark_attribute_s"]
        r["duckdb_flows_per_s"] = r["duckdb_records"] / r["duckdb_attribute_s"]
        r["ratio_duckdb_over_spark"] = r["duckdb_flows_per_s"] / r["spark_flows_per_s"]
        results.append(r)
        print(f"{r['records']:>11,} flows | spark {r['spark_flows_per_s']:>12,.0f}/s ({r['spark_attribute_s']:.1f}s) | "
              f"duckdb {r['duckdb_flows_per_s']:>12,.0f}/s ({r['duckdb_attribute_s']:.1f}s) | "
              f"ratio {r['ratio_duckdb_over_spark']:.2f}x | ownership {r['ownership_s']:.1f}s, "
              f"{r['ranges']:,} ranges", flush=True)
    if len(results) > 1:
        a, b = results[0], results[-1]
        growth = (b["spark_attribute_s"] / a["spark_attribute_s"]) / (b["records"] / a["records"])
        print(f"spark cost growth per record from {a['records']:,} to {b['records']:,}: {growth:.2f} (1.0 = linear)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
