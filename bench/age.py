"""Lake-age benchmark: one hourly run on lakes with 1, 7 and 30 days of history.

    .venv/bin/python bench/age.py [--days 1,7,30] [--records-per-day 20000] [--data /tmp/flowlake-bench-age]

It simulates ONE low-volume fleet over max(days) days plus one hour, ending at
T0 + 1 h, and keeps it under --data (reused when present). For each N in
--days it builds a lake with N days of history by backfill, in one Spark
session (local[2]), through ``flowlake.jobs.run.backfill`` with one-day chunks
(the same code as ``flowlake pipeline backfill --chunk 1d``) over
[T0 - N days, T0), reading a raw folder of hard links that holds only the flow
files of those days and every event file published before T0 (the tracker's
record of the holdings those days begin with). Then it links in
the hour [T0, T0 + 1 h) (its flow files, and the event files published from
T0 on) and times ONE hourly run over it, with the quality gates on. Every lake
therefore gets the same new input in the timed hour; only its history differs.

Printed: each lake's backfill time, the timed run's per-stage seconds, and
the ratio of the oldest lake's stage time to the youngest's (the aim of issue
9: day 30 within 1.2x of day 1).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import time
from pathlib import Path

from flowlake.timeutil import DAY_MS, HOUR_MS, iso, parse_utc

T0 = "2025-07-02T00:00:00Z"  # the end of every lake's history; the timed hour starts here
TOP_STAGES = ("ingest", "ownership", "attribute", "quality", "gold", "maintain")
_DT = re.compile(r"/dt=(\d{4}-\d{2}-\d{2})/(?:hr=(\d{2})/)?")


def ensure_data(data: Path, *, days: int, records_per_day: int, seed: int, fleet_scale: float | None,
                batch_intervals: int | None, profile: str | None = None) -> Path:
    """The simulated fleet over [T0 - days, T0 + 1 h), reused when a previous run completed it."""
    from flowlake.config import load_config
    from flowlake.sim.core import simulate
    from flowlake.sim.params import SimParams

    tag = f"{records_per_day}-x{fleet_scale}-b{batch_intervals}-s{seed}" + (f"-{profile}" if profile else "")
    for done in sorted(data.glob(f"sim-*d-{tag}/SIMULATED")):  # a longer one covers it (same T0)
        meta = json.loads(done.read_text())
        if meta["hours"] >= 24 * days + 1:
            print(f"reusing simulated data in {done.parent / 'raw'} ({meta['hours']} h to T0 + 1 h)", flush=True)
            return done.parent / "raw"
    raw = data / f"sim-{days}d-{tag}" / "raw"
    done = raw.parent / "SIMULATED"
    if raw.exists():
        shutil.rmtree(raw)
    hours = 24 * days + 1
    start = iso(parse_utc(T0) - days * DAY_MS)
    records = round(records_per_day * hours / 24)
    began = time.monotonic()
    fleet = {k: v for k, v in {"fleet_scale": fleet_scale, "batch_intervals": batch_intervals,
                               "profile": profile}.items() if v is not None}  # None: the profile's value
    params = load_config(SimParams, start=start, hours=float(hours), records=records, seed=seed, **fleet)
    simulate(out=str(raw), params=params, progress=False)
    done.write_text(json.dumps({"start": start, "hours": hours, "records": records, "seed": seed,
                                "fleet_scale": params.fleet_scale, "batch_intervals": params.batch_intervals,
                                "profile": params.profile}))
    print(f"simulated {records:,} records over {hours} h from {start} into {raw} "
          f"in {time.monotonic() - began:.0f} s", flush=True)
    return raw


def file_time_ms(rel: str) -> int | None:
    """The time a raw file's key files it under: dt (+ hr for flow files), or None for other files."""
    m = _DT.search("/" + rel)
    if not m:
        return None
    return parse_utc(f"{m.group(1)}T{m.group(2) or '00'}:00:00Z")


def link_files(src: Path, dst: Path, *, from_ms: int, to_ms: int, kinds: tuple[str, ...] = ("flows", "ip_events")) -> int:
    """Hard-link the raw files of ``kinds`` filed in [from, to) from ``src`` into ``dst``; returns how many."""
    n = 0
    for sub in kinds:
        for path in (src / sub).rglob("*"):
            if not path.is_file():
                continue
            rel = str(path.relative_to(src))
            t = file_time_ms(rel)
            if t is None or not (from_ms <= t < to_ms):
                continue
            target = dst / rel
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
            n += 1
    return n


def lake_files(lake: Path) -> int:
    return sum(1 for p in lake.rglob("*.parquet") if p.is_file())


def build_and_time(spark, sim_raw: Path, base: Path, *, days: int, quality, maintain_once: bool = False,
                   chunk_days: int = 1) -> dict:
    from flowlake.jobs.config import load_jobs_config
    from flowlake.jobs.run.backfill import backfill
    from flowlake.jobs.run.maintain import maintain
    from flowlake.jobs.run.pipeline import run
    from flowlake.lake import Lake

    t0 = parse_utc(T0)
    lake, raw = base / "lake", base / "raw"
    for p in (lake, raw):
        if p.exists():
            shutil.rmtree(p)
    config = load_jobs_config()
    # the lake's history: N days of flow files, and every event file published before T0 (the tracker's
    # record of the holdings those days begin with; without it a young lake's first day is mostly
    # "no evidence" and fails its attribute gate)
    linked = link_files(sim_raw, raw, from_ms=t0 - days * DAY_MS, to_ms=t0, kinds=("flows",))
    linked += link_files(sim_raw, raw, from_ms=0, to_ms=t0, kinds=("ip_events",))
    print(f"--- {days} day(s) of history: {linked:,} raw files linked; backfill "
          f"[{iso(t0 - days * DAY_MS)}, {iso(t0)}) in {chunk_days}-day chunks", flush=True)
    began = time.monotonic()
    # maintain_once: no maintenance per backfilled day, one over the whole lake at the end (a lake as
    # compacted as a daily-maintained one, built without a VACUUM of every table per simulated day)
    history_config = config if not maintain_once else config.model_copy(update={
        "maintenance": config.maintenance.model_copy(update={"every_hours": 10 ** 6})})
    backfill(spark, raw_root=str(raw), lake_root=str(lake), start_ms=t0 - days * DAY_MS, end_ms=t0,
             step_ms=chunk_days * DAY_MS, config=history_config, quality=quality,
             echo=lambda line: print("  backfill " + line.splitlines()[0], flush=True) if line.startswith(
                 ("run ", "stopped")) else None)
    if maintain_once:
        maintain(spark, Lake(str(lake)), params=config.maintenance)
    backfill_s = time.monotonic() - began
    files_before = lake_files(lake)
    new = link_files(sim_raw, raw, from_ms=t0, to_ms=t0 + HOUR_MS)
    print(f"  backfill took {backfill_s:.0f} s; lake holds {files_before:,} parquet files; "
          f"{new} raw file(s) of the timed hour linked", flush=True)
    began = time.monotonic()
    report = run(spark, raw_root=str(raw), lake_root=str(lake), start_ms=t0, end_ms=t0 + HOUR_MS, config=config,
                 quality=quality, echo=lambda line: print("  hourly " + line, flush=True))
    wall = time.monotonic() - began
    stages = {k: v for k, v in report.seconds.items() if k in TOP_STAGES}
    return {"days": days, "backfill_s": backfill_s, "lake_parquet_files": files_before, "wall_s": wall,
            "stage_s": sum(stages.values()), "stages": stages, "seconds": dict(report.seconds),
            "rows_ingested": report.flows.rows_ingested, "events_ingested_files": report.events.files_ingested,
            "attributed": report.attributed_rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", default="1,7,30", help="comma-separated history lengths in days")
    ap.add_argument("--records-per-day", type=int, default=20_000)
    ap.add_argument("--data", default="/tmp/flowlake-bench-age", help="simulated fleet (reused) and the lakes")
    ap.add_argument("--threads", type=int, default=2, help="Spark local[N]")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--profile", default=None, choices=["default", "hostile", "history"],
                    help="simulator profile (history: 12 workloads, a file per instance-hour; its own fleet "
                         "scale and batching unless given)")
    ap.add_argument("--fleet-scale", type=float, default=None,
                    help="the simulator's replica multiplier (fewer instances: fewer raw files per day; "
                         "default 0.25, or the profile's)")
    ap.add_argument("--batch-intervals", type=int, default=None,
                    help="intervals per raw flow file (default 60 one-minute intervals: one file per "
                         "instance-hour, or the profile's)")
    ap.add_argument("--chunk-days", type=int, default=1,
                    help="backfill window in days (the tables do not depend on it, contracts §4)")
    ap.add_argument("--no-quality", action="store_true", help="gates off (default: on, as in production)")
    ap.add_argument("--maintain-once", action="store_true",
                    help="build each history without the daily maintenance, then maintain the whole lake once "
                         "(default: maintain after every backfilled day, as production does)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    days = sorted({int(d) for d in args.days.split(",") if d.strip()})
    if not days or days[0] < 1:
        raise SystemExit(f"--days must be positive whole days, got {args.days!r}")
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)

    from flowlake.jobs.config import load_jobs_config, load_quality_config
    from flowlake.spark import get_spark

    print(f"load: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores", flush=True)
    if args.profile is None:  # the fleet of the figures before --profile existed
        args.fleet_scale = 0.25 if args.fleet_scale is None else args.fleet_scale
        args.batch_intervals = 60 if args.batch_intervals is None else args.batch_intervals
    sim_raw = ensure_data(data, days=days[-1], records_per_day=args.records_per_day, seed=args.seed,
                          fleet_scale=args.fleet_scale, batch_intervals=args.batch_intervals, profile=args.profile)
    quality = load_quality_config(enabled=not args.no_quality)
    t = time.monotonic()
    spark = get_spark(app_name="flowlake-bench-age", master=f"local[{args.threads}]",
                      shuffle_partitions=load_jobs_config().shuffle_partitions)
    print(f"spark session up in {time.monotonic() - t:.1f} s (not counted)", flush=True)
    results = []
    for n in days:
        r = build_and_time(spark, sim_raw, data / f"lake-{n}d", days=n, quality=quality,
                           maintain_once=args.maintain_once, chunk_days=args.chunk_days)
        results.append(r)
        print(f"day {n:>2}: hourly run {r['wall_s']:.1f} s wall, {r['stage_s']:.1f} s in stages ("
              + ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items()) + f"); {r['rows_ingested']:,} new rows, "
              f"{r['attributed']:,} attributed; all timings: "
              + ", ".join(f"{k} {v:.1f}" for k, v in r["seconds"].items()), flush=True)
    print("\nlake age | backfill s | lake files | hourly run s (stages) | " + " | ".join(TOP_STAGES))
    for r in results:
        print(f"{r['days']:>5} d | {r['backfill_s']:>10.0f} | {r['lake_parquet_files']:>10,} | "
              f"{r['wall_s']:>8.1f} ({r['stage_s']:.1f}) | "
              + " | ".join(f"{r['stages'].get(k, 0.0):.1f}" for k in TOP_STAGES))
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(f"RATIO day {b['days']} / day {a['days']}: stage time {b['stage_s'] / a['stage_s']:.2f}x, "
              f"wall {b['wall_s'] / a['wall_s']:.2f}x (aim: 1.2x at day 30 / day 1)")
    print(f"load: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (a shared machine: figures are noisy)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    spark.stop()


if __name__ == "__main__":
    main()
