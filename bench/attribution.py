"""Attribution benchmark: flowlake's Spark attribution vs DuckDB's ASOF JOIN, same data, same work.

    .venv/bin/python bench/attribution.py [--records 1000000,10000000] [--workdir /tmp/flowlake-bench]

For each size it simulates a fleet (cached in the workdir), builds the
ownership ranges once with flowlake's ownership job and writes them to
Parquet (the shared input; its time is reported apart), then times, on the
same cores, the same work on both sides:
  * spark:  read the ranges, flowlake.jobs.silver.attribute.transform (the
            ownership timeline, change points with CIDR classes, both as-of
            lookups, all output columns), written to Parquet;
  * duckdb: read the same ranges, the same timeline and change points in SQL
            (the same CIDR classifier as a Python UDF), ties at one (ip, ts_ms)
            broken the same way, both lookups as ASOF LEFT JOINs, written to Parquet.
Both read the same flows Parquet file. The two outputs are then compared row
by row (untimed); the bench exits 1 when they differ. It prints flows/s for
each and the ratio duckdb/spark (lower is better for flowlake; 1.0 = as fast
as DuckDB), plus the ownership build time and the linearity of Spark's cost
across sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

try:
    import duckdb
except ModuleNotFoundError as err:  # the baseline is a dev extra
    raise SystemExit(f"{err}: the benchmarks need the dev extras, `bash scripts/setup.sh --all` installs them") from err
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
    """Ownership ranges once (shared input of both engines), then Spark's timed attribution."""
    import shutil

    from flowlake.jobs.config import load_jobs_config
    from flowlake.jobs.silver import attribute, ownership

    params = load_jobs_config().attribution
    flows = spark.read.parquet(str(base / "flows.parquet"))
    events = spark.read.parquet(str(base / "events.parquet"))
    n = flows.count()
    t = time.perf_counter()
    ranges, _ = ownership.transform(flows, events, params=params)
    ranges.write.mode("overwrite").parquet(str(base / "ranges.parquet"))
    t_own = time.perf_counter() - t
    n_ranges = spark.read.parquet(str(base / "ranges.parquet")).count()

    out = base / "out_spark.parquet"
    shutil.rmtree(out, ignore_errors=True)
    # timed: read the ranges, build the change points, both as-of lookups, write every output row
    t = time.perf_counter()
    ranges = spark.read.parquet(str(base / "ranges.parquet"))
    attribute.transform(flows, ranges, params=params).write.parquet(str(out))
    t_attr = time.perf_counter() - t
    return {"records": n, "ranges": n_ranges, "ownership_s": t_own, "spark_attribute_s": t_attr}


# The same work as flowlake.jobs.silver.attribute.transform, in DuckDB SQL: the ownership
# timeline (heartbeat over event, adjacent equal segments merged), the change points (an
# owner's start, its end, "no owner" before all time for every known address, the CIDR class
# for addresses no range names), ties at one (ip, ts_ms) broken as flowlake breaks them
# (an owner's start before an end marker, then source ascending), both as-of lookups.
DUCKDB_ATTRIBUTE = """
COPY (
WITH r AS (
    SELECT ip, workload, source, kind, availability_zone, valid_from_ms,
           coalesce(valid_to_ms, {open_end}) AS valid_to_ms
    FROM read_parquet('{ranges}/*.parquet')),
bounds AS (SELECT DISTINCT ip, b FROM (SELECT ip, valid_from_ms AS b FROM r UNION ALL SELECT ip, valid_to_ms FROM r)),
segs AS (
    SELECT * FROM (SELECT ip, b AS seg_from, lead(b) OVER (PARTITION BY ip ORDER BY b) AS seg_to FROM bounds)
    WHERE seg_to IS NOT NULL),
best AS (
    SELECT s.ip, s.seg_from, s.seg_to,
           arg_min(struct_pack(workload := r.workload, source := r.source, kind := r.kind,
                               availability_zone := r.availability_zone),
                   CASE r.source WHEN 'heartbeat' THEN 0 WHEN 'event' THEN 1 END) AS o
    FROM segs s JOIN r ON s.ip = r.ip AND r.valid_from_ms <= s.seg_from AND r.valid_to_ms >= s.seg_to
    GROUP BY s.ip, s.seg_from, s.seg_to),
flat AS (SELECT ip, seg_from, seg_to, o.workload, o.source, o.kind, o.availability_zone FROM best),
flagged AS (
    SELECT *, CASE WHEN lag(seg_to) OVER w IS NULL OR lag(seg_to) OVER w <> seg_from
                     OR workload IS DISTINCT FROM lag(workload) OVER w
                     OR source IS DISTINCT FROM lag(source) OVER w
                     OR kind IS DISTINCT FROM lag(kind) OVER w
                     OR availability_zone IS DISTINCT FROM lag(availability_zone) OVER w
                   THEN 1 ELSE 0 END AS starts
    FROM flat WINDOW w AS (PARTITION BY ip ORDER BY seg_from)),
grouped AS (SELECT *, sum(starts) OVER (PARTITION BY ip ORDER BY seg_from) AS grp FROM flagged),
timeline AS (
    SELECT ip, workload, source, kind, availability_zone, min(seg_from) AS valid_from, max(seg_to) AS valid_to
    FROM grouped GROUP BY ip, grp, workload, source, kind, availability_zone),
known AS (SELECT DISTINCT ip FROM r),
unknown AS (
    SELECT ip, cidr_class(ip) AS cls FROM (SELECT DISTINCT remote_ip AS ip FROM flows) u
    WHERE NOT EXISTS (SELECT 1 FROM known k WHERE k.ip = u.ip)),
points_all AS (
    SELECT ip, valid_from AS ts_ms, workload, source, kind, availability_zone FROM timeline
    UNION ALL
    SELECT ip, valid_to, NULL, 'unattributed', NULL, NULL FROM timeline WHERE valid_to < {open_end}
    UNION ALL
    SELECT ip, {before_all}, NULL, 'unattributed', NULL, NULL FROM known
    UNION ALL
    SELECT ip, {before_all}, cls, CASE WHEN cls IS NOT NULL THEN 'cidr' ELSE 'unattributed' END,
           CASE WHEN cls IS NOT NULL THEN 'external' END, NULL FROM unknown),
points AS (
    SELECT * EXCLUDE (rank) FROM (
        SELECT *, row_number() OVER (PARTITION BY ip, ts_ms ORDER BY workload IS NULL, source) AS rank
        FROM points_all)
    WHERE rank = 1)
SELECT f.*,
       coalesce(f.local_workload, CASE WHEN l.source IN ('heartbeat', 'event') THEN l.workload END)
           AS local_workload_resolved,
       CASE WHEN r.workload IS NOT NULL AND r.source IN ('heartbeat', 'event', 'cidr') THEN r.workload END
           AS remote_workload,
       CASE WHEN r.workload IS NOT NULL AND r.source IN ('heartbeat', 'event', 'cidr') THEN r.source
            ELSE 'unattributed' END AS remote_attribution,
       CASE WHEN r.source IN ('heartbeat', 'event') THEN r.availability_zone END AS remote_availability_zone,
       CASE WHEN r.workload IS NOT NULL AND r.source IN ('heartbeat', 'event', 'cidr') THEN r.kind END
           AS remote_kind
FROM flows f
ASOF LEFT JOIN points r ON f.remote_ip = r.ip AND f.first_start_ms >= r.ts_ms
ASOF LEFT JOIN points l ON f.local_ip = l.ip AND f.first_start_ms >= l.ts_ms
) TO '{out}' (FORMAT parquet)
"""


def _duckdb(base: Path, threads: int) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    # bounded memory (it spills): at 10M rows an unbounded run was OOM-killed at 12 GB
    con.execute("SET memory_limit = '6GB'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET temp_directory = '{base / 'duckdb_tmp'}'")
    return con


def run_duckdb(base: Path, threads: int) -> dict:
    from flowlake.jobs.config import load_jobs_config
    from flowlake.jobs.silver.ips import cidr_classifier
    from flowlake.jobs.silver.ranges import BEFORE_ALL, OPEN_END

    con = _duckdb(base, threads)
    # the same classifier as Spark's (a Python UDF there too), applied per distinct unknown address
    con.create_function("cidr_class", cidr_classifier(load_jobs_config().attribution.cidr_classes),
                        ["VARCHAR"], "VARCHAR", side_effects=False)
    con.execute(f"CREATE VIEW flows AS SELECT * FROM read_parquet('{base / 'flows.parquet'}')")
    out = base / "out_duckdb.parquet"
    out.unlink(missing_ok=True)
    sql = DUCKDB_ATTRIBUTE.format(ranges=base / "ranges.parquet", out=out, open_end=OPEN_END,
                                  before_all=f"CAST('{BEFORE_ALL}' AS BIGINT)")
    t = time.perf_counter()
    con.execute(sql)
    elapsed = time.perf_counter() - t
    n = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
    return {"duckdb_records": n, "duckdb_attribute_s": elapsed}


def compare(base: Path, threads: int) -> dict:
    """Row-by-row comparison of the two outputs (a multiset difference both ways, nulls equal)."""
    con = _duckdb(base, threads)
    con.execute(f"CREATE VIEW s AS SELECT * FROM read_parquet('{base / 'out_spark.parquet'}/*.parquet')")
    con.execute(f"CREATE VIEW d AS SELECT * FROM read_parquet('{base / 'out_duckdb.parquet'}')")
    s_cols = [r[0] for r in con.execute("DESCRIBE s").fetchall()]
    d_cols = [r[0] for r in con.execute("DESCRIBE d").fetchall()]
    if sorted(s_cols) != sorted(d_cols):
        return {"equal": False, "why": f"columns differ: spark {s_cols} vs duckdb {d_cols}", "examples": []}
    cols = ", ".join(f'"{c}"' for c in s_cols)
    only_s = f"SELECT {cols} FROM s EXCEPT ALL SELECT {cols} FROM d"
    only_d = f"SELECT {cols} FROM d EXCEPT ALL SELECT {cols} FROM s"
    n_s = con.execute(f"SELECT count(*) FROM ({only_s})").fetchone()[0]
    n_d = con.execute(f"SELECT count(*) FROM ({only_d})").fetchone()[0]
    examples = [("spark only", r) for r in con.execute(f"{only_s} LIMIT 3").fetchall()]
    examples += [("duckdb only", r) for r in con.execute(f"{only_d} LIMIT 3").fetchall()]
    return {"equal": n_s == 0 and n_d == 0, "why": f"{n_s} row(s) only in spark's output, {n_d} only in duckdb's",
            "examples": examples, "columns": s_cols}


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
        same = compare(base, args.threads)
        r["outputs_equal"] = same["equal"]
        results.append(r)
        print(f"{r['records']:>11,} flows | spark {r['spark_flows_per_s']:>12,.0f}/s ({r['spark_attribute_s']:.1f}s) | "
              f"duckdb {r['duckdb_flows_per_s']:>12,.0f}/s ({r['duckdb_attribute_s']:.1f}s) | "
              f"ratio {r['ratio_duckdb_over_spark']:.2f}x | ownership {r['ownership_s']:.1f}s, "
              f"{r['ranges']:,} ranges", flush=True)
        if not same["equal"]:
            print(f"{r['records']:>11,} flows | OUTPUTS DIFFER: {same['why']}", file=sys.stderr)
            for side, row in same["examples"]:
                print(f"  {side}: {row}", file=sys.stderr)
        else:
            print(f"{r['records']:>11,} flows | outputs equal row by row ({r['records']:,} rows, "
                  f"{len(same['columns'])} columns)", flush=True)
    if len(results) > 1:
        a, b = results[0], results[-1]
        growth = (b["spark_attribute_s"] / a["spark_attribute_s"]) / (b["records"] / a["records"])
        print(f"spark cost growth per record from {a['records']:,} to {b['records']:,}: {growth:.2f} (1.0 = linear)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if not all(r["outputs_equal"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
