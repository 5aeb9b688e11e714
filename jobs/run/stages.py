"""The stage registry: each stage reads (Lake, Span), applies pure transforms, gates, publishes.

Stages run in the order of :data:`STAGES`; ``flowlake pipeline run --stages``,
backfill and the Airflow DAG all take them from here. A stage reads only what
the earlier stages (of this run or of earlier runs) published: attribution
reads the published ``silver/ip_ownership``, gold reads silver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import functions as F

from flowlake.jobs.bronze import completeness, ingest
from flowlake.jobs.bronze.rawfiles import KIND_EVENTS, KIND_FLOWS
from flowlake.jobs.quality import suites
from flowlake.jobs.run import io
from flowlake.jobs.run.checks import bronze_checks
from flowlake.jobs.run.context import RunContext
from flowlake.jobs.run.gold_stage import gold_stage
from flowlake.jobs.run.maintain import maintain_stage
from flowlake.jobs.run.ownership_stage import ownership_stage
from flowlake.jobs.run.stage_names import STAGE_NAMES
from flowlake.jobs.silver import attribute, guards
from flowlake.jobs.silver.ownership import SOURCE_HEARTBEAT
from flowlake.jobs.silver.ranges import OPEN_END, touching
from flowlake.jobs.silver.tracker_lag import lookback_ms
from flowlake.lake import BRONZE_FLOWS, FLOWS_ATTRIBUTED, IP_OWNERSHIP, OWNERSHIP_DOUBTS, PORTS_SEEN


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[RunContext], None]
    needs_span: bool = True


def ingest_stage(ctx: RunContext) -> None:
    """New raw flow and event files into bronze (each file once; bad ones quarantined)."""
    lookback = ctx.config.ingest.late_arrival_lookback_hours
    flow_keys = ingest.new_flow_keys(ctx.spark, raw_root=ctx.raw_root, lake=ctx.lake, start_ms=ctx.start_ms,
                                     end_ms=ctx.end_ms, lookback_hours=lookback)
    ctx.echo(f"  ingest: {len(flow_keys)} new flow file(s)")
    flows = ingest.ingest(ctx.spark, kind=KIND_FLOWS, raw_root=ctx.raw_root, lake=ctx.lake, keys=flow_keys,
                          run_id=ctx.run_id, now_ms=ctx.now_ms,
                          max_future_skew_ms=ctx.config.ingest.max_future_skew_ms)
    # per instance and hour: files, seq gaps, drops, restarts (from the files' capture metadata)
    completeness.update(ctx.spark, raw_root=ctx.raw_root, lake=ctx.lake, keys=flow_keys)
    event_keys = ingest.new_event_keys(ctx.spark, raw_root=ctx.raw_root, lake=ctx.lake)
    events = ingest.ingest(ctx.spark, kind=KIND_EVENTS, raw_root=ctx.raw_root, lake=ctx.lake, keys=event_keys,
                           run_id=ctx.run_id, now_ms=ctx.now_ms)
    ctx.results["ingest"] = (flows, events)
    ctx.counts["ingest"] = flows.rows_ingested + events.rows_ingested


def attribute_stage(ctx: RunContext) -> None:
    """Every bronze record of the span attributed against the published ownership."""
    span = ctx.the_span
    if io.exists(ctx.spark, ctx.lake, FLOWS_ATTRIBUTED) and not ctx.read_span(BRONZE_FLOWS, span.hours).take(1):
        return _quiet_hours(ctx)
    flows = ctx.read_span(BRONZE_FLOWS)
    stored = ctx.read(IP_OWNERSHIP)
    owned = stored.where((F.col("valid_from_ms") < span.end_ms + span.pad_ms)
                         & (F.coalesce("valid_to_ms", F.lit(OPEN_END)) > span.from_ms))
    doubts = ctx.read(OWNERSHIP_DOUBTS).where((F.col("valid_from_ms") < span.end_ms + span.pad_ms)
                                              & (F.coalesce("valid_to_ms", F.lit(OPEN_END)) > span.from_ms))
    # the guards learn each record hour's profile from that hour and the lookback before it: the span's
    # hours from bronze (peers named by the published heartbeat ranges), the lookback as earlier runs kept
    # it in silver/ports_seen
    heartbeats = touching(stored.where(F.col("source") == SOURCE_HEARTBEAT),
                          from_ms=span.hour_from_ms - guards.PEER_REACH_MS, to_ms=span.hour_to_ms)
    seen = guards.ports_seen(ctx.read_span(BRONZE_FLOWS, span.hours), heartbeats).localCheckpoint()
    kept = ctx.read_span(PORTS_SEEN, (span.hour_from_ms - lookback_ms(ctx.config.attribution), span.hour_from_ms))
    attributed = attribute.transform(flows, owned, params=ctx.config.attribution, known_ips=stored.select("ip"),
                                     doubts=doubts, seen=kept.unionByName(seen)).persist()
    # computed here (the gate's seconds are then its checks' alone), and before anything is published: a
    # write to a table the rows were read from (ports_seen) makes Spark recompute them at their next use
    by_attribution = {r[0]: r[1] for r in attributed.groupBy("remote_attribution").count().collect()}
    ctx.gate("attribute", lambda: suites.silver_suite(attributed, flows,
                                                      min_attributed_share=ctx.quality.min_attributed_share))
    # the rows come out of the attribution's shuffle in a few partitions already: binning them again
    # (Delta's optimized write) shuffled every row a second time (the save at 10M records: 96 s with it,
    # 79 s without; 38 s also without the sort by dt, flowlake/spark.py)
    ctx.publish(attributed, FLOWS_ATTRIBUTED, optimize_write=False)
    ctx.publish(seen, PORTS_SEEN)
    ctx.results["by_attribution"] = by_attribution
    ctx.counts["attribute"] = sum(by_attribution.values())
    attributed.unpersist()


def _quiet_hours(ctx: RunContext) -> None:
    """No record in the span's hours (a quiet hour): no lookup, no port profile to learn. What the full path
    would publish, empty rows, still replaces the span, and the gate checks them, at a fraction of its cost."""
    attributed, flows = ctx.read(FLOWS_ATTRIBUTED).limit(0), ctx.read(BRONZE_FLOWS).limit(0)
    ctx.gate("attribute", lambda: suites.silver_suite(attributed, flows,
                                                      min_attributed_share=ctx.quality.min_attributed_share))
    ctx.publish(attributed, FLOWS_ATTRIBUTED)
    ctx.publish(ctx.read(PORTS_SEEN).limit(0), PORTS_SEEN)
    ctx.results["by_attribution"] = {}
    ctx.counts["attribute"] = 0


def quality_stage(ctx: RunContext) -> None:
    """Re-check what the earlier stages published for the span (the DAG's gate before gold)."""
    span = ctx.the_span

    def checks():
        bronze = ctx.read_span(BRONZE_FLOWS)
        owned = touching(ctx.read(IP_OWNERSHIP), from_ms=span.from_ms, to_ms=span.end_ms)
        silver = ctx.read_span(FLOWS_ATTRIBUTED)
        return (bronze_checks(ctx, bronze) + suites.ownership_suite(owned)
                + suites.silver_suite(silver, bronze, min_attributed_share=ctx.quality.min_attributed_share))

    if not ctx.quality.enabled:
        ctx.echo("  quality: the gates are turned off (conf/quality.yaml enabled: false): nothing checked")
    ctx.gate("quality", checks)


STAGES: tuple[Stage, ...] = (
    Stage("ingest", ingest_stage, needs_span=False),
    Stage("ownership", ownership_stage),
    Stage("attribute", attribute_stage),
    Stage("quality", quality_stage),
    Stage("gold", gold_stage),
    Stage("maintain", maintain_stage),
)
assert tuple(s.name for s in STAGES) == STAGE_NAMES, "jobs/run/stage_names.py and the registry disagree"
BY_NAME = {s.name: s for s in STAGES}
