"""``flowlake pipeline run``: the registered stages over a window, under the lake's writer lock.

Outputs for a window are a function of everything ingested so far, and every
write replaces exactly the rows of the span it computed, so a re-run leaves
the lake as one run did. Late raw files and late events widen the span
(:mod:`flowlake.jobs.run.span`) to the earlier windows they affect. Each
publishing stage validates its output with the quality gates before it
writes; the gates are on unless the quality config turns them off.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from flowlake.jobs.bronze import ingest
from flowlake.jobs.bronze.rawfiles import KIND_EVENTS, KIND_FLOWS
from flowlake.jobs.config import InsightConfig, JobsConfig, QualityConfig, load_insight_config, load_quality_config
from flowlake.jobs.run import io
from flowlake.jobs.run.context import RunContext
from flowlake.jobs.run.lock import LakeLock
from flowlake.jobs.run.span import Span
from flowlake.jobs.run.stage_names import DEFAULT_STAGES, STAGE_NAMES
from flowlake.contracts import ACTION_UNASSIGN
from flowlake.jobs.silver.orphans import orphan_reach
from flowlake.jobs.silver.ownership import event_reach_ms, evidence_pad_ms
from flowlake.jobs.silver.tracker_lag import lookback_ms
from flowlake.lake import BRONZE_IP_EVENTS, INGESTED_FILES, IP_EVENT_HOLDINGS, RUNS, Lake
from flowlake.spark import configure_storage, require_s3
from flowlake.storage import is_s3
from flowlake.timeutil import HOUR_MS, floor_to, iso

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")


@dataclass
class RunReport:
    run_id: str
    span: Span
    flows: ingest.IngestResult
    events: ingest.IngestResult
    by_attribution: dict[str, int] | None  # None: the attribute stage did not run
    seconds: dict[str, float]
    stages: tuple[str, ...] = ()
    quality: list[str] = field(default_factory=list)

    @property
    def attributed_rows(self) -> int:
        return sum((self.by_attribution or {}).values())

    def summary(self) -> str:
        lines = [f"run {self.run_id}: window [{iso(self.span.start_ms)}, {iso(self.span.end_ms)}), "
                 f"recomputed from {iso(self.span.from_ms)}"]
        if "ingest" in self.stages:
            lines += [self.flows.summary(), self.events.summary()]
        if self.by_attribution is not None:
            total = max(self.attributed_rows, 1)
            shares = ", ".join(f"{k} {v} ({100 * v / total:.2f}%)" for k, v in sorted(self.by_attribution.items()))
            lines.append(f"{self.attributed_rows} attributed record(s): {shares}")
        lines.append("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items()))
        return "\n".join([*lines, *self.quality])


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def parse_stages(text: str | None) -> tuple[str, ...]:
    """``ingest,ownership`` -> the stages in pipeline order; a clear error for unknown names."""
    if not text:
        return DEFAULT_STAGES
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in STAGE_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown stage(s) {unknown or text!r}: choose from {', '.join(STAGE_NAMES)}")
    return tuple(n for n in STAGE_NAMES if n in names)


def ingest_results_from_log(ctx: RunContext) -> tuple[ingest.IngestResult, ingest.IngestResult]:
    """What the ingest stage of this run id did, from the processed-files log (stages run apart)."""
    rows = ctx.read(INGESTED_FILES).where(F.col("run_id") == ctx.run_id).collect()
    out = []
    for kind in (KIND_FLOWS, KIND_EVENTS):
        mine = [r for r in rows if r["kind"] == kind]
        ok = [r for r in mine if r["status"] == ingest.STATUS_INGESTED]
        mins = [r["min_time_ms"] for r in ok if r["min_time_ms"] is not None]
        out.append(ingest.IngestResult(
            kind=kind, files_seen=len(mine), files_ingested=len(ok), rows_ingested=sum(r["rows"] or 0 for r in ok),
            quarantined=[{"source_file": r["source_file"], "reason": r["reason"], "quarantine_path": None}
                         for r in mine if r["status"] == ingest.STATUS_QUARANTINED],
            min_time_ms=min(mins) if mins else None))
    return out[0], out[1]


def orphan_reach_ms(ctx: RunContext) -> int | None:
    """Where the earliest range an unknown holder's unassign may cut began (:mod:`flowlake.jobs.silver.orphans`),
    among the unassigns this run's ownership meets: those of its window and what its margins reach past it,
    and those it ingested late. None: no such unassign."""
    params, floor_ms = ctx.config.attribution, _floor_ms(ctx)
    within = lookback_ms(params)
    reach_end = ctx.end_ms + event_reach_ms(params)
    events = ctx.read(BRONZE_IP_EVENTS)
    mine = (ctx.read(INGESTED_FILES).where((F.col("run_id") == ctx.run_id) & (F.col("kind") == KIND_EVENTS))
            .select("source_file", F.lit(True).alias("_mine")))
    unassigns = (events.where((F.col("action") == ACTION_UNASSIGN) & (F.col("event_ms") >= floor_ms)
                              & (F.col("event_ms") < reach_end))
                 .join(F.broadcast(mine), "source_file", "left")
                 .where((F.col("event_ms") >= ctx.start_ms) | F.col("_mine").isNotNull())).localCheckpoint()
    if not unassigns.take(1):
        return None
    ips = unassigns.select("ip").distinct()
    known = events.where((F.col("event_ms") >= floor_ms - within) & (F.col("event_ms") < reach_end)).join(
        ips, "ip", "left_semi")
    return orphan_reach(unassigns, known, ctx.read(IP_EVENT_HOLDINGS).join(ips, "ip", "left_semi"),
                        seen_within_ms=within, cap_ms=params.lag_margin_cap_ms).agg(F.min("reach_ms")).first()[0]


def _floor_ms(ctx: RunContext) -> int:
    return ctx.start_ms - ctx.config.ingest.late_arrival_lookback_hours * HOUR_MS


def plan_span(ctx: RunContext, *, late_ms: list[int | None]) -> Span:
    """The run's span: the window, reaching back to the earliest late data this run ingested when an
    earlier run (within the late-arrival lookback) already published that time."""
    start_ms = ctx.start_ms
    floor_ms = _floor_ms(ctx)
    from_ms = start_ms
    late = [t for t in late_ms if t is not None and t < start_ms]
    if late:
        candidate = max(floor_ms, floor_to(min(late), HOUR_MS))
        earliest = (ctx.read(RUNS).where((F.col("end_ms") > candidate) & (F.col("start_ms") < start_ms))
                    .agg(F.min("start_ms")).first()[0])
        if earliest is not None:
            from_ms = min(start_ms, max(candidate, floor_to(earliest, HOUR_MS)))
    return Span(start_ms=start_ms, end_ms=ctx.end_ms, from_ms=from_ms, pad_ms=evidence_pad_ms(ctx.config.attribution))


def run(spark: SparkSession, *, raw_root: str, lake_root: str, start_ms: int, end_ms: int,
        config: JobsConfig, quality: QualityConfig | None = None, insight: InsightConfig | None = None,
        now_ms: int | None = None, stages: tuple[str, ...] = DEFAULT_STAGES, run_id: str | None = None,
        echo: Callable[[str], None] = lambda _line: None) -> RunReport:
    """Run ``stages`` over [start, end); see the module doc.

    ``quality`` defaults to conf/quality.yaml (gates on); pass
    ``load_quality_config(enabled=False)`` to turn them off. ``insight``
    defaults to conf/insight.yaml. Stages run apart (the Airflow DAG) share one
    ``run_id``. A second concurrent run fails with LakeLockedError.
    """
    Span(start_ms=start_ms, end_ms=end_ms, from_ms=start_ms)  # validates the window before anything runs
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}: choose from {', '.join(STAGE_NAMES)}")
    run_id = run_id or new_run_id()
    if not RUN_ID_RE.match(run_id):
        raise ValueError(f"run id {run_id!r} must be 1-128 of A-Z a-z 0-9 . _ : + - (it names folders)")
    if is_s3(raw_root) or is_s3(lake_root):
        configure_storage(spark, storage=config.storage)
        require_s3(spark)
    ctx = RunContext(spark=spark, lake=Lake(lake_root), raw_root=raw_root, start_ms=start_ms, end_ms=end_ms,
                     run_id=run_id, config=config, quality=quality or load_quality_config(),
                     insight=insight or load_insight_config(), now_ms=now_ms, echo=echo)
    with LakeLock(lake_root, owner=run_id):
        return _run_locked(ctx, stages)


def _spark_jobs(ctx: RunContext) -> int:
    """Spark jobs started in this session so far (job ids count up): a stage's fixed cost shows as its jobs."""
    ids = ctx.spark.sparkContext.statusTracker().getJobIdsForGroup(None)
    return max(ids) + 1 if ids else 0


def _run_locked(ctx: RunContext, stages: tuple[str, ...]) -> RunReport:
    from flowlake.jobs.run.stages import BY_NAME

    started_ms = int(time.time() * 1000)
    for name in stages:
        stage = BY_NAME[name]
        if stage.needs_span and ctx.span is None:
            flows, events = ctx.results.get("ingest") or ingest_results_from_log(ctx)
            ctx.results["ingest"] = (flows, events)
            ctx.span = plan_span(ctx, late_ms=[flows.min_time_ms, events.min_time_ms, orphan_reach_ms(ctx)])
        ctx.echo(f"{name}: started")
        began, jobs_before = time.monotonic(), _spark_jobs(ctx)
        stage.run(ctx)
        ctx.seconds[name] = time.monotonic() - began
        rows = f", {ctx.counts[name]} row(s)" if name in ctx.counts else ""
        ctx.echo(f"{name}: done in {ctx.seconds[name]:.1f} s{rows}, {_spark_jobs(ctx) - jobs_before} Spark job(s)")
    if ctx.span is None:
        flows, events = ctx.results["ingest"]
        ctx.span = plan_span(ctx, late_ms=[flows.min_time_ms, events.min_time_ms])
    flows, events = ctx.results.get("ingest") or ingest_results_from_log(ctx)
    report = RunReport(ctx.run_id, ctx.span, flows, events, ctx.results.get("by_attribution"), ctx.seconds,
                       stages, ctx.quality_lines)
    if "gold" in stages:  # the last stage: the window is complete (backfill skips it from now on)
        span = ctx.span
        row = (ctx.run_id, span.start_ms, span.end_ms, span.from_ms, flows.files_ingested, flows.rows_ingested,
               events.files_ingested, len(flows.quarantined) + len(events.quarantined),
               report.attributed_rows if report.by_attribution is not None else None,
               started_ms, int(time.time() * 1000))
        io.append(ctx.spark.createDataFrame([row], RUNS.ddl), ctx.lake, RUNS)
    return report
