"""``flowlake pipeline run``: ingest -> ownership -> attribute -> [quality] -> gold over a window.

Each stage's transform is pure; this module reads and writes the Delta tables.
The outputs for a window are a function of everything ingested so far, and
every write replaces exactly the rows of the span it computed, so a re-run
leaves the lake as one run did. Late raw files and late events widen the span
recomputed (within the late-arrival lookback), which corrects older windows.

Each publishing stage validates its output with the quality gates
(jobs/quality.py) before its replaceWhere: a blocking failure publishes
nothing of that stage. One writer per lake: the run holds jobs/lakelock.py's lock.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from flowlake.jobs import attribute, dependencies, gold, ingest, ownership
from flowlake.jobs import lake as lk
from flowlake.jobs.config import JobsConfig
from flowlake.jobs.lakelock import LakeLock
from flowlake.jobs.ownership import OWNERSHIP_DDL, CONFLICT_DDL, evidence_pad_ms
from flowlake.spark import configure_storage, require_s3
from flowlake.storage import is_s3

log = logging.getLogger(__name__)
HOUR_MS = 3_600_000
RUNS_DDL = (
    "run_id string, start_ms bigint, end_ms bigint, recomputed_from_ms bigint, flow_files bigint, "
    "flow_rows bigint, event_files bigint, quarantined_files bigint, attributed_rows bigint, "
    "started_at_ms bigint, finished_at_ms bigint"
)


def parse_utc(text: str) -> int:
    """ISO-8601 to epoch ms; a time without zone is taken as UTC, any other zone is converted."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp() * 1000)


@dataclass
class RunReport:
    run_id: str
    start_ms: int
    end_ms: int
    recomputed_from_ms: int
    flows: ingest.IngestResult
    events: ingest.IngestResult
    attributed_rows: int
    by_attribution: dict[str, int]
    seconds: dict[str, float]
    stages: tuple[str, ...] = ()
    quality: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def iso(ms: int) -> str:
            return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()

        total = max(self.attributed_rows, 1)
        shares = ", ".join(f"{k} {v} ({100 * v / total:.2f}%)" for k, v in sorted(self.by_attribution.items()))
        return "\n".join([
            f"run {self.run_id}: window [{iso(self.start_ms)}, {iso(self.end_ms)})",
            self.flows.summary(), self.events.summary(),
            f"recomputed from {iso(self.recomputed_from_ms)}: {self.attributed_rows} attributed record(s): {shares}",
            "stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items()),
            *self.quality,
        ])


def bronze_window(spark: SparkSession, lake: lk.Lake, *, start_ms: int, end_ms: int) -> DataFrame:
    """Bronze flow rows with interval_start_ms in [start, end) (dt-pruned)."""
    flows = lk.read(spark, lake.bronze_flows, ddl=None) if lk.exists(spark, lake.bronze_flows) else None
    if flows is None:
        raise FileNotFoundError(f"no bronze flows at {lake.bronze_flows}: nothing was ingested")
    d0 = datetime.fromtimestamp(start_ms / 1000, tz=timezone.utc).date().isoformat()
    d1 = datetime.fromtimestamp(end_ms / 1000, tz=timezone.utc).date().isoformat()
    return flows.where(
        (F.col("dt") >= F.lit(d0).cast("date")) & (F.col("dt") <= F.lit(d1).cast("date"))
        & (F.col("interval_start_ms") >= start_ms) & (F.col("interval_start_ms") < end_ms)
    )


def clip_ranges(ranges: DataFrame, *, start_ms: int, end_ms: int) -> DataFrame:
    """Ranges cut to [start, end): the table keeps one row per owner per processed span."""
    to = F.coalesce("valid_to_ms", F.lit(end_ms))
    return (
        ranges.where((F.col("valid_from_ms") < end_ms) & (to > start_ms))
        .withColumn("valid_from_ms", F.greatest("valid_from_ms", F.lit(start_ms)))
        .withColumn("valid_to_ms", F.least(to, F.lit(end_ms)))
    )


def recompute_from(spark: SparkSession, lake: lk.Lake, *, start_ms: int, late_ms: list[int | None],
                   floor_ms: int) -> int:
    """Start of the span to recompute: ``start_ms``, or earlier when newly ingested data is
    older than the window and an earlier run (within the lookback) already published that time."""
    late = [t for t in late_ms if t is not None and t < start_ms]
    if not late:
        return start_ms
    candidate = max(floor_ms, (min(late) // HOUR_MS) * HOUR_MS)
    earliest = (
        lk.read(spark, lake.runs, ddl=RUNS_DDL)
        .where((F.col("end_ms") > candidate) & (F.col("start_ms") < start_ms))
        .agg(F.min("start_ms")).first()[0]
    )
    return start_ms if earliest is None else min(start_ms, max(candidate, (earliest // HOUR_MS) * HOUR_MS))


STAGES = ("ingest", "ownership", "attribute", "quality", "gold")
# `pipeline run` without --stages: every stage but the separate re-check of published tables
# (each publishing stage already validates its own output before it writes).
DEFAULT_STAGES = ("ingest", "ownership", "attribute", "gold")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def parse_stages(text: str | None) -> tuple[str, ...]:
    """``ingest,ownership`` -> the stages in pipeline order; a clear error for unknown names."""
    if not text:
        return DEFAULT_STAGES
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in STAGES]
    if unknown or not names:
        raise ValueError(f"unknown stage(s) {unknown or text!r}: choose from {', '.join(STAGES)}")
    return tuple(n for n in STAGES if n in names)


@dataclass
class _Run:
    spark: SparkSession
    lake: lk.Lake
    raw_root: str
    lake_root: str
    start_ms: int
    end_ms: int
    config: JobsConfig
    quality: object | None  # QualityConfig, or None when the gates are off
    run_id: str
    reports: list[str]

    def gate(self, stage: str, make_checks) -> None:
        """Validate before publishing: raise QualityGateError (and publish nothing) on a blocking failure."""
        if self.quality is None:
            return
        from flowlake.jobs import quality as q

        report = q.gate(make_checks(), config=self.quality, run_id=self.run_id, stage=stage,
                        lake_root=self.lake_root)
        self.reports.append(f"quality {stage}: {len(report.results)} check(s) passed"
                            + (f", {len(report.warnings)} warning(s): " + ", ".join(w.name for w in report.warnings)
                               if report.warnings else "") + f" ({report.path})")


def results_from_log(spark: SparkSession, lake: lk.Lake, *, run_id: str) -> tuple[ingest.IngestResult, ...]:
    """What the ingest stage of ``run_id`` did, from the processed-files log (for later stages run apart)."""
    log_rows = lk.read(spark, lake.ingested_files, ddl=ingest.FILES_DDL).where(F.col("run_id") == run_id).collect()
    out = []
    for kind in (ingest.KIND_FLOWS, ingest.KIND_EVENTS):
        rows = [r for r in log_rows if r["kind"] == kind]
        ok = [r for r in rows if r["status"] == ingest.STATUS_INGESTED]
        mins = [r["min_time_ms"] for r in ok if r["min_time_ms"] is not None]
        out.append(ingest.IngestResult(
            kind=kind, files_seen=len(rows), files_ingested=len(ok), rows_ingested=sum(r["rows"] or 0 for r in ok),
            quarantined=[{"source_file": r["source_file"], "reason": r["reason"], "quarantine_path": "(see quarantine/files)"}
                         for r in rows if r["status"] == ingest.STATUS_QUARANTINED],
            min_time_ms=min(mins) if mins else None))
    return tuple(out)


def rows_ingested_by(spark: SparkSession, lake: lk.Lake, *, run_id: str) -> DataFrame:
    """Bronze flow rows from the files ``run_id`` ingested."""
    files = (lk.read(spark, lake.ingested_files, ddl=ingest.FILES_DDL)
             .where((F.col("run_id") == run_id) & (F.col("kind") == ingest.KIND_FLOWS)
                    & (F.col("status") == ingest.STATUS_INGESTED))
             .select("source_file").distinct())
    if not lk.exists(spark, lake.bronze_flows):
        return spark.createDataFrame([], ingest.RAW_FLOW_DDL + ", source_file string")
    return lk.read(spark, lake.bronze_flows).join(F.broadcast(files), on="source_file", how="left_semi")


def run(spark: SparkSession, *, raw_root: str, lake_root: str, start_ms: int, end_ms: int,
        config: JobsConfig, now_ms: int | None = None, stages: tuple[str, ...] = DEFAULT_STAGES,
        run_id: str | None = None, quality=None) -> RunReport:
    """Run the pipeline's ``stages`` over [start, end); see the module doc.

    ``quality`` is a :class:`flowlake.jobs.quality.QualityConfig` (None: gates off).
    Stages run apart (the Airflow DAG) share one ``run_id``. The lake's writer
    lock is held throughout: a second concurrent run fails with LakeLockedError.
    """
    if end_ms <= start_ms:
        raise ValueError(f"--end must be after --start (got start={start_ms}, end={end_ms} ms)")
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}: choose from {', '.join(STAGES)}")
    run_id = run_id or new_run_id()
    if not RUN_ID_RE.match(run_id):
        raise ValueError(f"run id {run_id!r} must be 1-128 of A-Z a-z 0-9 . _ : + - (it names folders)")
    if is_s3(raw_root) or is_s3(lake_root):
        configure_storage(spark)
        require_s3(spark)
    with LakeLock(lake_root, owner=run_id):
        return _run_locked(spark, raw_root=raw_root, lake_root=lake_root, start_ms=start_ms, end_ms=end_ms,
                           config=config, now_ms=now_ms, stages=stages, run_id=run_id, quality=quality)


def _run_locked(spark: SparkSession, *, raw_root: str, lake_root: str, start_ms: int, end_ms: int,
                config: JobsConfig, now_ms: int | None, stages: tuple[str, ...], run_id: str, quality) -> RunReport:
    started = int(time.time() * 1000)
    lake = lk.Lake(lake_root)
    ctx = _Run(spark, lake, raw_root, lake_root, start_ms, end_ms, config,
               quality if quality is not None and getattr(quality, "enabled", True) else None, run_id, [])
    p, ip = config.attribution, config.ingest
    seconds: dict[str, float] = {}
    clock = [time.monotonic()]

    def lap(stage: str) -> None:
        now = time.monotonic()
        seconds[stage] = now - clock[0]
        clock[0] = now

    # 1. ingest
    if "ingest" in stages:
        flow_keys = ingest.new_flow_keys(spark, raw_root=raw_root, lake=lake, start_ms=start_ms, end_ms=end_ms,
                                         lookback_hours=ip.late_arrival_lookback_hours)
        flows_res = ingest.ingest(spark, kind=ingest.KIND_FLOWS, raw_root=raw_root, lake=lake, keys=flow_keys,
                                  run_id=run_id, now_ms=now_ms, max_future_skew_ms=ip.max_future_skew_ms)
        lap("ingest_flows")
        event_keys = ingest.new_event_keys(spark, raw_root=raw_root, lake=lake)
        events_res = ingest.ingest(spark, kind=ingest.KIND_EVENTS, raw_root=raw_root, lake=lake, keys=event_keys,
                                   run_id=run_id, now_ms=now_ms)
        lap("ingest_events")
    else:
        flows_res, events_res = results_from_log(spark, lake, run_id=run_id)

    # late data widens the span recomputed to the earlier windows it affects
    a = recompute_from(spark, lake, start_ms=start_ms,
                       late_ms=[flows_res.min_time_ms, events_res.min_time_ms],
                       floor_ms=start_ms - ip.late_arrival_lookback_hours * HOUR_MS)
    pad = evidence_pad_ms(p)
    h0, h1 = (a // HOUR_MS) * HOUR_MS, -(-end_ms // HOUR_MS) * HOUR_MS
    q = ctx.quality

    def bronze_checks(window: DataFrame):
        from flowlake.jobs import quality as qm

        return qm.bronze_suite(window, rows_ingested_by(spark, lake, run_id=run_id), start_ms=start_ms,
                               end_ms=end_ms, lateness_ms=q.lateness_ms)

    ranges = None
    if "ownership" in stages or "attribute" in stages:
        # 2. ownership (evidence from the span padded by the heartbeat gap; all known events)
        evidence = bronze_window(spark, lake, start_ms=a - pad, end_ms=end_ms + pad)
        events = lk.read(spark, lake.bronze_ip_events, ddl=ingest_events_ddl())
        ranges, conflicts = ownership.transform(evidence, events, params=p)
        ranges = ranges.persist()
    if "ownership" in stages:
        clipped = clip_ranges(ranges, start_ms=a, end_ms=end_ms)

        def ownership_checks():
            from flowlake.jobs import quality as qm

            return bronze_checks(bronze_window(spark, lake, start_ms=a, end_ms=end_ms)) + qm.ownership_suite(clipped)

        ctx.gate("ownership", ownership_checks)
        lk.replace_where(clipped, lake.ip_ownership,
                         predicate=f"valid_from_ms >= {a} AND valid_from_ms < {end_ms}")
        lk.replace_where(clip_ranges(conflicts, start_ms=a, end_ms=end_ms), lake.ownership_conflicts,
                         predicate=f"valid_from_ms >= {a} AND valid_from_ms < {end_ms}")
        lap("ownership")

    if "attribute" in stages:
        # 3. attribution of the span's records
        flows = bronze_window(spark, lake, start_ms=a, end_ms=end_ms)
        attributed = attribute.transform(flows, ranges, params=p).persist()

        def silver_checks():
            from flowlake.jobs import quality as qm

            return qm.silver_suite(attributed, flows, min_attributed_share=q.min_attributed_share)

        ctx.gate("attribute", silver_checks)
        lk.replace_where(attributed, lake.flows_attributed,
                         predicate=f"interval_start_ms >= {a} AND interval_start_ms < {end_ms}", partition_by=["dt"])
        attributed.unpersist()
        lap("attribute")
    if ranges is not None:
        ranges.unpersist()

    if "quality" in stages:
        # the published bronze, ownership and silver of the span, checked again (the DAG's gate before gold)
        def published_checks():
            from flowlake.jobs import quality as qm

            owned = lk.read(spark, lake.ip_ownership, ddl=OWNERSHIP_DDL).where(
                (F.col("valid_from_ms") >= a) & (F.col("valid_from_ms") < end_ms))
            bronze = bronze_window(spark, lake, start_ms=a, end_ms=end_ms)
            silver = lk.read(spark, lake.flows_attributed).where(
                (F.col("interval_start_ms") >= a) & (F.col("interval_start_ms") < end_ms))
            return (bronze_checks(bronze) + qm.ownership_suite(owned)
                    + qm.silver_suite(silver, bronze, min_attributed_share=q.min_attributed_share))

        ctx.gate("quality", published_checks)
        lap("quality")

    if "gold" in stages:
        # 4. hourly dependencies over the whole hours the span touches
        silver = lk.read(spark, lake.flows_attributed).where(
            (F.col("interval_start_ms") >= h0) & (F.col("interval_start_ms") < h1))
        deps = dependencies.transform(silver).persist()

        def gold_checks():
            from flowlake.jobs import quality as qm

            return qm.gold_suite(deps, silver, end_ms=end_ms, freshness_max_lag_ms=q.freshness_max_lag_ms)

        ctx.gate("gold", gold_checks)
        lk.replace_where(deps, lake.app_dependencies,
                         predicate=f"hour_start_ms >= {h0} AND hour_start_ms < {h1}")
        deps.unpersist()
        lap("dependencies")
        seconds.update(gold.run_gold(spark, lake, h0_ms=h0, h1_ms=h1, config=config))
        clock[0] = time.monotonic()

    counts = {r[0]: r[1] for r in lk.read(spark, lake.flows_attributed, ddl="remote_attribution string, "
                                            "interval_start_ms bigint")
              .where((F.col("interval_start_ms") >= a) & (F.col("interval_start_ms") < end_ms))
              .groupBy("remote_attribution").count().collect()}
    report = RunReport(run_id, start_ms, end_ms, a, flows_res, events_res, sum(counts.values()), counts, seconds,
                       stages, ctx.reports)
    if "gold" in stages:  # the last stage: the window is complete (backfill skips it from now on)
        run_row = (run_id, start_ms, end_ms, a, flows_res.files_ingested, flows_res.rows_ingested,
                   events_res.files_ingested, len(flows_res.quarantined) + len(events_res.quarantined),
                   report.attributed_rows, started, int(time.time() * 1000))
        lk.append(spark.createDataFrame([run_row], RUNS_DDL), lake.runs)
    return report


def ingest_events_ddl() -> str:
    from flowlake.contracts import IP_EVENT_DDL

    return IP_EVENT_DDL + ", source_file string"


__all__ = ["run", "parse_utc", "parse_stages", "STAGES", "RunReport", "OWNERSHIP_DDL", "CONFLICT_DDL"]
