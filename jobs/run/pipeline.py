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

from flowlake.jobs.bronze import ingest
from flowlake.jobs.config import InsightConfig, JobsConfig, QualityConfig, load_insight_config, load_quality_config
from flowlake.jobs.run import runs
from flowlake.jobs.run.context import RunContext
from flowlake.jobs.run.lock import LakeLock
from flowlake.jobs.run.plan import drop_plan, plan, plan_span
from flowlake.jobs.run.span import Span
from flowlake.jobs.run.stage_names import DEFAULT_STAGES, STAGE_NAMES
from flowlake.lake import Lake
from flowlake.spark import configure_storage, require_s3
from flowlake.storage import is_s3
from flowlake.timeutil import iso

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
            ctx.span, ctx.results["ingest"] = plan(ctx)
        ctx.echo(f"{name}: started")
        began, jobs_before = time.monotonic(), _spark_jobs(ctx)
        stage.run(ctx)
        if name == "ingest":  # what this run id ingested may have changed: a plan kept before is stale
            drop_plan(ctx.lake, ctx.run_id)
        ctx.seconds[name] = time.monotonic() - began
        rows = f", {ctx.counts[name]} row(s)" if name in ctx.counts else ""
        ctx.echo(f"{name}: done in {ctx.seconds[name]:.1f} s{rows}, {_spark_jobs(ctx) - jobs_before} Spark job(s)")
    if ctx.span is None:  # an ingest alone: the window widened for its late files (not kept; a later stage plans)
        flows, events = ctx.results["ingest"]
        ctx.span = plan_span(ctx, late_ms=[flows.min_time_ms, events.min_time_ms])
    flows, events = ctx.results["ingest"]
    report = RunReport(ctx.run_id, ctx.span, flows, events, ctx.results.get("by_attribution"), ctx.seconds,
                       stages, ctx.quality_lines)
    if stages != ("maintain",):  # maintenance alone changes no table of the window: no row, no Spark query
        runs.record(ctx, stages=stages, started_ms=started_ms, finished_ms=int(time.time() * 1000))
    return report
