"""Pipeline benchmark: flowlake's pipeline end to end vs a DuckDB reference, same raw files, one command.

    .venv/bin/python bench/pipeline.py [--records 1000000,10000000,30000000] [--data /tmp/flowlake-bench-pipeline]

For each size it simulates a fleet over 2 hours (kept under --data and reused
when present), then times, on the same raw files:

  * flowlake: ``flowlake.jobs.run.pipeline.run`` over the window into a fresh
    lake (one Spark session, local[2], conf/jobs.yaml, quality gates on as in
    production): ingest, ownership, attribute, gold (and maintain when due).
    Per-stage seconds come from the run report; the gates' seconds
    (``gate_<stage>``) are part of their stage's seconds.
  * duckdb: a simplified re-implementation in one process (memory-bounded):
    read every raw flow file and every event file, heartbeat ownership ranges,
    event ranges, heartbeat over event, an ASOF join of every record's
    remote_ip and local_ip at first_start_ms, and a zstd Parquet write of every
    attributed record (see REFERENCE_RULES).

It prints both times, their ratios (the whole run, and only ingest +
ownership + attribute, the part the reference also does), records/s, and the
share of records whose remote attribution agrees between the two.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import time
from pathlib import Path

try:
    import duckdb
except ModuleNotFoundError as err:  # the baseline is a dev extra
    raise SystemExit(f"{err}: the benchmarks need the dev extras, `bash scripts/setup.sh --all` installs them") from err

START = "2025-06-02T00:00:00Z"
HOURS = 2

REFERENCE_RULES = """\
DuckDB reference rules (a simplified re-implementation, not flowlake's algorithm):
  - heartbeats: distinct (local_ip, local_workload, instance_id, first_start_ms) of records with a
    local_workload; per ip in time order a run continues while the owner (workload, instance) is the
    same and the gap to the previous point is <= heartbeat_max_gap_ms; a run covers
    [first - handshake_tolerance_ms, last + handshake_tolerance_ms); where runs of different owners
    overlap nobody owns the address (the overlap is removed from both);
  - events: deduplicated on (ip, action, event_ms, workload, instance_id), per ip in event-time order
    (unassign before assign at one instant, then published_ms); an assign starts a holding unless the
    previous event was an assign of the same holder; the next event of any kind (assign or unassign,
    whoever it names) ends it at its event_ms - event_lag_margin_ms; no next event: still held;
  - heartbeat over event where both cover a time; event ranges are NOT cut where a heartbeat of
    another workload shows (flowlake cuts them); no CIDR classes (an address no range covers is
    unattributed; flowlake names external addresses by CIDR class: such records are compared as
    'no owner' on both sides); no late-data, quarantine or gold work.
So agreement below 100% at the edges (conflicts, CIDR classes, lag margins, out-of-order unassigns)
is expected."""


def ensure_data(data: Path, records: int, *, seed: int) -> Path:
    """The simulated raw files for ``records`` (reused when a previous run completed them)."""
    from flowlake.config import load_config
    from flowlake.sim.core import simulate
    from flowlake.sim.params import SimParams

    raw = data / f"r{records}" / "raw"
    done = raw.parent / "SIMULATED"
    if done.exists():
        print(f"reusing simulated data in {raw}", flush=True)
        return raw
    if raw.exists():
        shutil.rmtree(raw)
    began = time.monotonic()
    params = load_config(SimParams, start=START, hours=float(HOURS), records=records, seed=seed)
    simulate(out=str(raw), params=params, progress=False)
    done.write_text(json.dumps({"records": records, "seed": seed, "start": START, "hours": HOURS}))
    print(f"simulated {records:,} records into {raw} in {time.monotonic() - began:.0f} s", flush=True)
    return raw


# --------------------------------------------------------------------------- flowlake

TOP_STAGES = ("ingest", "ownership", "attribute", "quality", "gold", "maintain")


def run_flowlake(spark, raw: Path, lake: Path) -> dict:
    from flowlake.jobs.config import load_jobs_config, load_quality_config
    from flowlake.jobs.run.pipeline import run
    from flowlake.timeutil import HOUR_MS, parse_utc

    if lake.exists():
        shutil.rmtree(lake)
    start_ms = parse_utc(START)
    quality = load_quality_config()
    if not quality.enabled:
        raise SystemExit("conf/quality.yaml (or FLOWLAKE_QUALITY__ENABLED) turns the gates off: the benchmark "
                         "measures the pipeline as in production, with gates on")
    began = time.monotonic()
    report = run(spark, raw_root=str(raw), lake_root=str(lake), start_ms=start_ms, end_ms=start_ms + HOURS * HOUR_MS,
                 config=load_jobs_config(), quality=quality, echo=lambda line: print("  flowlake " + line, flush=True))
    wall = time.monotonic() - began
    sec = dict(report.seconds)
    stages = {k: v for k, v in sec.items() if k in TOP_STAGES}
    gates = {k: v for k, v in sec.items() if k.startswith("gate_")}
    return {"wall_s": wall, "stage_s": sum(stages.values()), "stages": stages, "gates": gates,
            "gold_tables": {k: v for k, v in sec.items() if k.startswith("gold_")},
            "records": report.attributed_rows, "rows_ingested": report.flows.rows_ingested,
            "by_attribution": report.by_attribution,
            "comparable_s": sum(stages.get(k, 0.0) for k in ("ingest", "ownership", "attribute"))}


def export_flowlake_attribution(spark, lake: Path, out: Path) -> None:
    """Untimed: the record keys and remote attribution of silver/flows_attributed, for the agreement check."""
    from flowlake.contracts import RECORD_KEY

    if out.exists():
        shutil.rmtree(out)
    (spark.read.format("delta").load(str(lake / "silver/flows_attributed"))
     .select(*RECORD_KEY, "first_start_ms", "remote_workload", "remote_attribution")
     .write.parquet(str(out)))


# --------------------------------------------------------------------------- duckdb

def _sql_list(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def run_duckdb(raw: Path, out: Path, tmp: Path, *, threads: int, memory: str, params) -> dict:
    """The reference (REFERENCE_RULES), timed from reading the raw files to the end of the Parquet write."""
    from flowlake.contracts import IP_EVENT_SCHEMA
    from flowlake.timeutil import HOUR_MS, parse_utc

    start_ms = parse_utc(START)
    end_ms = start_ms + HOURS * HOUR_MS
    flow_files = sorted(glob.glob(str(raw / "flows/v1/**/*.parquet"), recursive=True))
    ev_parquet = sorted(glob.glob(str(raw / "ip_events/v1/**/*.parquet"), recursive=True))
    ev_json = sorted(glob.glob(str(raw / "ip_events/v1/**/*.jsonl.gz"), recursive=True))
    if not flow_files:
        raise SystemExit(f"no raw flow files under {raw}/flows/v1: simulate first or pick another --data")
    ev_cols = [f.name for f in IP_EVENT_SCHEMA]
    duck_types = {"int64": "BIGINT", "string": "VARCHAR"}
    json_cols = "{" + ", ".join(f"'{f.name}': '{duck_types[str(f.type)]}'" for f in IP_EVENT_SCHEMA) + "}"
    ev_sources = []
    if ev_parquet:
        ev_sources.append(f"SELECT {', '.join(ev_cols)} FROM read_parquet({_sql_list(ev_parquet)}, "
                          "hive_partitioning = false, union_by_name = true)")
    if ev_json:
        ev_sources.append(f"SELECT {', '.join(ev_cols)} FROM read_json({_sql_list(ev_json)}, "
                          f"format = 'newline_delimited', columns = {json_cols}, hive_partitioning = false)")
    if not ev_sources:
        ev_sources.append("SELECT " + ", ".join(f"NULL::{duck_types[str(f.type)]} AS {f.name}"
                                                 for f in IP_EVENT_SCHEMA) + " WHERE false")
    gap, tol, margin = params.heartbeat_max_gap_ms, params.handshake_tolerance_ms, params.event_lag_margin_ms

    if out.exists():
        out.unlink()
    tmp.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute(f"SET memory_limit = '{memory}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")
    con.execute(f"SET temp_directory = '{tmp}'")
    steps: dict[str, float] = {}

    def step(name: str, sql: str) -> None:
        t = time.monotonic()
        con.execute(sql)
        steps[name] = steps.get(name, 0.0) + time.monotonic() - t

    began = time.monotonic()
    step("read", f"""
        CREATE TEMP TABLE flows AS
        SELECT * FROM read_parquet({_sql_list(flow_files)}, hive_partitioning = false, union_by_name = true)
        WHERE interval_start_ms >= {start_ms} AND interval_start_ms < {end_ms}""")
    step("read", f"""
        CREATE TEMP TABLE events AS
        SELECT DISTINCT ON (ip, action, event_ms, workload, instance_id) *
        FROM ({' UNION ALL '.join(ev_sources)})""")
    # heartbeat runs, per ip in time order
    step("ownership", f"""
        CREATE TEMP TABLE hb_runs AS
        WITH pts AS (
            SELECT local_ip AS ip, local_workload AS workload, instance_id, first_start_ms AS t,
                   any_value(availability_zone) AS az
            FROM flows WHERE local_workload IS NOT NULL GROUP BY ALL),
        marked AS (
            SELECT *, CASE WHEN lag(workload) OVER w IS DISTINCT FROM workload
                             OR lag(instance_id) OVER w IS DISTINCT FROM instance_id
                             OR t - lag(t) OVER w > {gap} THEN 1 ELSE 0 END AS new_run
            FROM pts WINDOW w AS (PARTITION BY ip ORDER BY t, workload, instance_id)),
        numbered AS (
            SELECT *, sum(new_run) OVER (PARTITION BY ip ORDER BY t, workload, instance_id
                                         ROWS UNBOUNDED PRECEDING) AS run
            FROM marked)
        SELECT ip, run, workload, instance_id, min(t) - {tol} AS valid_from, max(t) + {tol} AS valid_to,
               any_value(az) AS az, row_number() OVER () AS run_id
        FROM numbered GROUP BY ip, run, workload, instance_id""")
    # a sweep over run bounds: where exactly one run covers a time, its owner holds the address
    step("ownership", """
        CREATE TEMP TABLE hb_points AS
        WITH deltas AS (
            SELECT ip, ts, sum(d) AS d, sum(c) AS c FROM (
                SELECT ip, valid_from AS ts, 1 AS d, run_id AS c FROM hb_runs
                UNION ALL SELECT ip, valid_to AS ts, -1 AS d, -run_id AS c FROM hb_runs) GROUP BY ip, ts),
        swept AS (
            SELECT ip, ts, sum(d) OVER w AS n, sum(c) OVER w AS owner_run FROM deltas
            WINDOW w AS (PARTITION BY ip ORDER BY ts ROWS UNBOUNDED PRECEDING))
        SELECT s.ip, s.ts, r.workload, r.az
        FROM swept s LEFT JOIN hb_runs r ON s.n = 1 AND r.run_id = s.owner_run""")
    # event holdings, per ip in event-time order
    step("ownership", f"""
        CREATE TEMP TABLE ev_ranges AS
        WITH ordered AS (
            SELECT *, lag(action) OVER w AS p_action, lag(workload) OVER w AS p_workload,
                   lag(instance_id) OVER w AS p_instance, lead(event_ms) OVER w AS next_ms
            FROM events
            WINDOW w AS (PARTITION BY ip ORDER BY event_ms, CASE WHEN action = 'unassign' THEN 0 ELSE 1 END,
                         published_ms)),
        starts AS (
            SELECT * FROM ordered
            WHERE action = 'assign' AND workload IS NOT NULL
              AND NOT (p_action IS NOT DISTINCT FROM 'assign' AND p_workload IS NOT DISTINCT FROM workload
                       AND p_instance IS NOT DISTINCT FROM instance_id))
        SELECT ip, workload, availability_zone AS az, event_ms AS valid_from, next_ms - {margin} AS valid_to
        FROM starts WHERE next_ms IS NULL OR next_ms - {margin} > event_ms""")
    step("ownership", """
        CREATE TEMP TABLE ev_points AS
        SELECT ip, ts, arg_max(workload, workload IS NOT NULL) AS workload, arg_max(az, workload IS NOT NULL) AS az
        FROM (SELECT ip, valid_from AS ts, workload, az FROM ev_ranges
              UNION ALL SELECT ip, valid_to AS ts, NULL, NULL FROM ev_ranges WHERE valid_to IS NOT NULL)
        GROUP BY ip, ts""")
    # one timeline: heartbeat over event at every change point of either
    step("ownership", """
        CREATE TEMP TABLE timeline AS
        WITH ts AS (SELECT ip, ts FROM hb_points UNION SELECT ip, ts FROM ev_points)
        SELECT ts.ip, ts.ts,
               CASE WHEN h.workload IS NOT NULL THEN h.workload ELSE e.workload END AS workload,
               CASE WHEN h.workload IS NOT NULL THEN 'heartbeat' WHEN e.workload IS NOT NULL THEN 'event' END
                   AS source,
               CASE WHEN h.workload IS NOT NULL THEN h.az ELSE e.az END AS az
        FROM ts ASOF LEFT JOIN hb_points h ON ts.ip = h.ip AND ts.ts >= h.ts
                ASOF LEFT JOIN ev_points e ON ts.ip = e.ip AND ts.ts >= e.ts""")
    step("attribute_write", f"""
        COPY (
            SELECT f.*,
                   coalesce(f.local_workload, l.workload) AS local_workload_resolved,
                   r.workload AS remote_workload,
                   coalesce(r.source, 'unattributed') AS remote_attribution,
                   r.az AS remote_availability_zone
            FROM flows f
            ASOF LEFT JOIN timeline r ON f.remote_ip = r.ip AND f.first_start_ms >= r.ts
            ASOF LEFT JOIN timeline l ON f.local_ip = l.ip AND f.first_start_ms >= l.ts
        ) TO '{out}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 1000000)""")
    wall = time.monotonic() - began
    records = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
    counts = dict(con.execute(f"SELECT remote_attribution, count(*) FROM read_parquet('{out}') GROUP BY 1").fetchall())
    n_files = len(flow_files) + len(ev_parquet) + len(ev_json)
    con.close()
    return {"wall_s": wall, "steps": steps, "records": records, "by_attribution": counts, "files": n_files}


def agreement(flowlake_export: Path, duck_out: Path, *, memory: str, threads: int) -> dict:
    """Share of records (joined on the contract's record key) whose remote owner agrees."""
    from flowlake.contracts import RECORD_KEY

    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute(f"SET memory_limit = '{memory}'")
    keys = " AND ".join(f"f.{k} = d.{k}" for k in RECORD_KEY)
    row = con.execute(f"""
        WITH f AS (SELECT * FROM read_parquet('{flowlake_export}/*.parquet')),
             d AS (SELECT * FROM read_parquet('{duck_out}'))
        SELECT count(*) AS joined,
               count(*) FILTER (WHERE
                   CASE WHEN f.remote_attribution IN ('heartbeat', 'event') THEN f.remote_workload END
                   IS NOT DISTINCT FROM d.remote_workload) AS agree,
               count(*) FILTER (WHERE f.remote_attribution IN ('heartbeat', 'event')
                                AND f.remote_attribution = d.remote_attribution
                                AND f.remote_workload = d.remote_workload) AS agree_same_source
        FROM f JOIN d ON {keys}""").fetchone()
    by = con.execute(f"""
        WITH f AS (SELECT * FROM read_parquet('{flowlake_export}/*.parquet')),
             d AS (SELECT * FROM read_parquet('{duck_out}'))
        SELECT f.remote_attribution, count(*),
               count(*) FILTER (WHERE CASE WHEN f.remote_attribution IN ('heartbeat', 'event')
                                           THEN f.remote_workload END IS NOT DISTINCT FROM d.remote_workload)
        FROM f JOIN d ON {keys} GROUP BY 1 ORDER BY 1""").fetchall()
    con.close()
    joined, agree, same = row
    return {"joined": joined, "agree": agree, "agree_pct": 100.0 * agree / max(joined, 1),
            "agree_same_source": same, "by_flowlake_attribution": {k: (n, a) for k, n, a in by}}


# --------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", default="1000000", help="comma-separated sizes, e.g. 1000000,10000000,30000000")
    ap.add_argument("--data", default="/tmp/flowlake-bench-pipeline",
                    help="simulated raw files (reused when present), lakes and outputs")
    ap.add_argument("--threads", type=int, default=2, help="Spark local[N] and DuckDB threads")
    ap.add_argument("--duckdb-memory", default="4GB", help="DuckDB memory_limit (it spills beyond)")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    sizes = [int(s) for s in args.records.split(",") if s.strip()]
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)

    from flowlake.jobs.config import load_jobs_config
    from flowlake.spark import get_spark

    config = load_jobs_config()
    print(REFERENCE_RULES, flush=True)
    print(f"load: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f} "
          f"on {os.cpu_count()} cores", flush=True)
    raws = {n: ensure_data(data, n, seed=args.seed) for n in sizes}
    t = time.monotonic()
    spark = get_spark(app_name="flowlake-bench-pipeline", master=f"local[{args.threads}]",
                      shuffle_partitions=config.shuffle_partitions)
    print(f"spark session up in {time.monotonic() - t:.1f} s (not counted)", flush=True)
    results = []
    for n in sizes:
        base = raws[n].parent
        print(f"\n=== {n:,} records: {raws[n]}", flush=True)
        try:
            fl = run_flowlake(spark, raws[n], base / "lake")
        except Exception as err:  # e.g. a blocking quality gate: say so, still time the reference
            print(f"FLOWLAKE FAILED at {n:,} records: {type(err).__name__}: {str(err)[:400]}", flush=True)
            dk = run_duckdb(raws[n], base / "duckdb_attributed.parquet", base / "duckdb_tmp",
                            threads=args.threads, memory=args.duckdb_memory, params=config.attribution)
            print(f"duckdb reference alone: {dk['wall_s']:.1f} s, {dk['records']:,} records; no ratio", flush=True)
            continue
        export_flowlake_attribution(spark, base / "lake", base / "flowlake_attribution")
        dk = run_duckdb(raws[n], base / "duckdb_attributed.parquet", base / "duckdb_tmp",
                        threads=args.threads, memory=args.duckdb_memory, params=config.attribution)
        ag = agreement(base / "flowlake_attribution", base / "duckdb_attributed.parquet",
                       memory=args.duckdb_memory, threads=args.threads)
        r = {"records": n, "flowlake": fl, "duckdb": dk, "agreement": ag,
             "ratio_run": fl["wall_s"] / dk["wall_s"], "ratio_comparable": fl["comparable_s"] / dk["wall_s"],
             "gate_share_pct": 100.0 * sum(fl["gates"].values()) / max(fl["stage_s"], 1e-9),
             "load": os.getloadavg()}
        results.append(r)
        print("flowlake stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in fl["stages"].items()), flush=True)
        print("  gates (s, inside their stage): " + ", ".join(f"{k} {v:.1f}" for k, v in fl["gates"].items())
              + f"; gates' share of stage time {r['gate_share_pct']:.1f}%")
        print("  gold tables (s, inside gold): " + ", ".join(f"{k[5:]} {v:.1f}" for k, v in fl["gold_tables"].items()))
        print(f"  run {fl['wall_s']:.1f} s wall ({fl['stage_s']:.1f} s in stages), {fl['records']:,} records, "
              f"{fl['records'] / fl['wall_s']:,.0f} records/s; by attribution {fl['by_attribution']}")
        print(f"duckdb reference: {dk['wall_s']:.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in dk['steps'].items())}), "
              f"{dk['records']:,} records from {dk['files']:,} files, {dk['records'] / dk['wall_s']:,.0f} records/s; "
              f"by attribution {dk['by_attribution']}")
        same = "same" if dk["records"] == fl["records"] else "DIFFERENT"
        print(f"records: flowlake {fl['records']:,}, duckdb {dk['records']:,} ({same} count)")
        print(f"agreement on the remote owner: {ag['agree']:,} of {ag['joined']:,} joined records "
              f"({ag['agree_pct']:.2f}%); per flowlake attribution (records, agreeing): "
              f"{ag['by_flowlake_attribution']}")
        print(f"RATIO {n:,}: flowlake run {fl['wall_s']:.1f} s / duckdb {dk['wall_s']:.1f} s = {r['ratio_run']:.1f}x; "
              f"ingest+ownership+attribute only {fl['comparable_s']:.1f} s = {r['ratio_comparable']:.1f}x", flush=True)
    if len(results) > 1:
        a, b = results[-2], results[-1]
        growth = (b["flowlake"]["wall_s"] / a["flowlake"]["wall_s"]) / (b["records"] / a["records"])
        print(f"flowlake cost per record from {a['records']:,} to {b['records']:,}: x{growth:.2f} (1.0 = linear)")
    print(f"load: {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f} (a shared machine: "
          "figures are noisy)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    spark.stop()


if __name__ == "__main__":
    main()
