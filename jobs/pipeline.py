"""``flowlake pipeline run``: ingest -> ownership -> attribute -> dependencies over a window.

Each stage's transform is pure; this module reads and writes the Delta tables.
The outputs for a window are a function of everything ingested so far, and
every write replaces exactly the rows of the span it computed, so a re-run
leaves the lake as one run did. Late raw files and late events widen the span
recomputed (within the late-arrival lookback), which corrects older windows.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from flowlake.jobs import attribute, dependencies, gold, ingest, ownership
from flowlake.jobs import lake as lk
from flowlake.jobs.config import JobsConfig
from flowlake.jobs.ownership import OWNERSHIP_DDL, CONFLICT_DDL, evidence_pad_ms

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


def run(spark: SparkSession, *, raw_root: str, lake_root: str, start_ms: int, end_ms: int,
        config: JobsConfig, now_ms: int | None = None) -> RunReport:
    """Run the whole pipeline over [start, end); see the module doc."""
    if end_ms <= start_ms:
        raise ValueError(f"--end must be after --start (got start={start_ms}, end={end_ms} ms)")
    started = int(time.time() * 1000)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
    lake = lk.Lake(lake_root)
    p, ip = config.attribution, config.ingest
    seconds: dict[str, float] = {}
    clock = [time.monotonic()]

    def lap(stage: str) -> None:
        now = time.monotonic()
        seconds[stage] = now - clock[0]
        clock[0] = now

    # 1. ingest
    flow_keys = ingest.new_flow_keys(spark, raw_root=raw_root, lake=lake, start_ms=start_ms, end_ms=end_ms,
                                     lookback_hours=ip.late_arrival_lookback_hours)
    flows_res = ingest.ingest(spark, kind=ingest.KIND_FLOWS, raw_root=raw_root, lake=lake, keys=flow_keys,
                              run_id=run_id, now_ms=now_ms, max_future_skew_ms=ip.max_future_skew_ms)
    lap("ingest_flows")
    event_keys = ingest.new_event_keys(spark, raw_root=raw_root, lake=lake)
    events_res = ingest.ingest(spark, kind=ingest.KIND_EVENTS, raw_root=raw_root, lake=lake, keys=event_keys,
                               run_id=run_id, now_ms=now_ms)
    lap("ingest_events")

    # late data widens the span recomputed to the earlier windows it affects
    a = recompute_from(spark, lake, start_ms=start_ms,
                       late_ms=[flows_res.min_time_ms, events_res.min_time_ms],
                       floor_ms=start_ms - ip.late_arrival_lookback_hours * HOUR_MS)
    pad = evidence_pad_ms(p)

    # 2. ownership (evidence from the span padded by the heartbeat gap; all known events)
    evidence = bronze_window(spark, lake, start_ms=a - pad, end_ms=end_ms + pad)
    events = lk.read(spark, lake.bronze_ip_events, ddl=ingest_events_ddl())
    ranges, conflicts = ownership.transform(evidence, events, params=p)
    ranges = ranges.persist()
    lk.replace_where(clip_ranges(ranges, start_ms=a, end_ms=end_ms), lake.ip_ownership,
                     predicate=f"valid_from_ms >= {a} AND valid_from_ms < {end_ms}")
    lk.replace_where(clip_ranges(conflicts, start_ms=a, end_ms=end_ms), lake.ownership_conflicts,
                     predicate=f"valid_from_ms >= {a} AND valid_from_ms < {end_ms}")

    lap("ownership")

    # 3. attribution of the span's records
    flows = bronze_window(spark, lake, start_ms=a, end_ms=end_ms)
    attributed = attribute.transform(flows, ranges, params=p, broadcast=True)
    lk.replace_where(attributed, lake.flows_attributed,
                     predicate=f"interval_start_ms >= {a} AND interval_start_ms < {end_ms}", partition_by=["dt"])
    ranges.unpersist()
    lap("attribute")

    # 4. hourly dependencies over the whole hours the span touches
    h0, h1 = (a // HOUR_MS) * HOUR_MS, -(-end_ms // HOUR_MS) * HOUR_MS
    silver = lk.read(spark, lake.flows_attributed).where(
        (F.col("interval_start_ms") >= h0) & (F.col("interval_start_ms") < h1))
    lk.replace_where(dependencies.transform(silver), lake.app_dependencies,
                     predicate=f"hour_start_ms >= {h0} AND hour_start_ms < {h1}")
    lap("dependencies")
    seconds.update(gold.run_gold(spark, lake, h0_ms=h0, h1_ms=h1, config=config))
    clock[0] = time.monotonic()

    counts = {r[0]: r[1] for r in lk.read(spark, lake.flows_attributed)
              .where((F.col("interval_start_ms") >= a) & (F.col("interval_start_ms") < end_ms))
              .groupBy("remote_attribution").count().collect()}
    report = RunReport(run_id, start_ms, end_ms, a, flows_res, events_res, sum(counts.values()), counts, seconds)
    run_row = (run_id, start_ms, end_ms, a, flows_res.files_ingested, flows_res.rows_ingested,
               events_res.files_ingested, len(flows_res.quarantined) + len(events_res.quarantined),
               report.attributed_rows, started, int(time.time() * 1000))
    lk.append(spark.createDataFrame([run_row], RUNS_DDL), lake.runs)
    return report


def ingest_events_ddl() -> str:
    from flowlake.contracts import IP_EVENT_DDL

    return IP_EVENT_DDL + ", source_file string"


__all__ = ["run", "parse_utc", "RunReport", "OWNERSHIP_DDL", "CONFLICT_DDL"]
