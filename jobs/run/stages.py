"""The stage registry: each stage reads (Lake, Span), applies pure transforms, gates, publishes.

Stages run in the order of :data:`STAGES`; ``flowlake pipeline run --stages``,
backfill and the Airflow DAG all take them from here. A stage reads only what
the earlier stages (of this run or of earlier runs) published: attribution
reads the published ``silver/ip_ownership``, gold reads silver.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import functions as F

from flowlake.jobs.bronze import completeness, ingest
from flowlake.jobs.bronze.rawfiles import KIND_EVENTS, KIND_FLOWS
from flowlake.jobs.quality import suites
from flowlake.jobs.run import io
from flowlake.jobs.run.context import RunContext
from flowlake.jobs.run.gold_stage import gold_stage
from flowlake.jobs.run.maintain import maintain_stage
from flowlake.jobs.run.stage_names import STAGE_NAMES
from flowlake.contracts import ACTION_UNASSIGN, IP_EVENT_SCHEMA
from flowlake.jobs.silver import attribute, guards, ownership
from flowlake.jobs.silver.doubts import NOTE_SILENT_SIDECAR
from flowlake.jobs.silver.ownership import SOURCE_HEARTBEAT
from flowlake.jobs.silver.event_ranges import event_rows_df
from flowlake.jobs.silver.seed import holdings_as_assigns, seen_before
from flowlake.jobs.silver.ranges import OPEN_END, splice, touching, touching_predicate
from flowlake.jobs.silver.tracker_lag import (
    hourly_lag_from_pairs, lag_summary, learn_reads, lookback_ms, margins, pair_reads, pairs_by_hour,
)
from flowlake.timeutil import HOUR_MS
from flowlake.lake import (
    BRONZE_FLOWS, BRONZE_IP_EVENTS, CAPTURE_COMPLETENESS, FLOWS_ATTRIBUTED, INGESTED_FILES, IP_EVENT_HOLDINGS, IP_OWNERSHIP,
    OWNERSHIP_CONFLICTS, OWNERSHIP_DOUBTS, PORTS_SEEN, RUNS, TRACKER_LAG, TRACKER_LAG_PAIRS,
)

OWNER_KEY = ["ip", "source"]
OWNER_COLUMNS = ["workload", "instance_id", "kind", "region", "availability_zone"]


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


def _rows_ingested_by_run(ctx: RunContext):
    """Bronze rows from the files this run ingested (read from the days those files cover only)."""
    files = (ctx.read(INGESTED_FILES)
             .where((F.col("run_id") == ctx.run_id) & (F.col("kind") == KIND_FLOWS)
                    & (F.col("status") == ingest.STATUS_INGESTED))
             .select("source_file", "min_time_ms", "max_time_ms")).localCheckpoint()
    lo, hi = files.agg(F.min("min_time_ms"), F.max("max_time_ms")).first()
    if lo is None:
        return ctx.read(BRONZE_FLOWS).limit(0)
    return (ctx.read_span(BRONZE_FLOWS, (lo, hi + 1))
            .join(F.broadcast(files.select("source_file")), on="source_file", how="left_semi"))


def _bronze_checks(ctx: RunContext, window):
    span = ctx.the_span
    capture = ctx.read(CAPTURE_COMPLETENESS).where(
        (F.col("hour_start_ms") >= span.hour_from_ms) & (F.col("hour_start_ms") < span.hour_to_ms))
    return suites.bronze_suite(window, _rows_ingested_by_run(ctx), start_ms=span.start_ms, end_ms=span.end_ms,
                               lateness_ms=ctx.quality.lateness_ms) + suites.completeness_suite(capture)


def ownership_stage(ctx: RunContext) -> None:
    """Ownership ranges of the span, spliced into the published ranges (open holdings stay open).

    Reads only the span: heartbeat evidence within the padded span, the events from the span's start
    (up to what reaches into it through the lag margin), and the tracker holdings open at the span's
    start as earlier runs published them (``silver/ip_event_holdings``), not every event ingested.
    The lag margin and the stale-range bound are learned per UTC hour from a fixed lookback
    (``learn_lookback_hours``, :func:`~flowlake.jobs.silver.tracker_lag.learn_reads`), so they do not
    depend on how time was cut into runs: the lag pairs of the span's hours come from bronze and are
    kept in ``silver/tracker_lag_pairs``, those of the lookback before it are read from there (the
    holding lifetimes from the lookback's events); ``_meta/tracker_lag`` gets the span's hours."""
    span, params = ctx.the_span, ctx.config.attribution
    evidence = ctx.read_span(BRONZE_FLOWS, span.evidence)
    # events up to what reaches into the span through the largest margin a run may learn
    reach_ms = max(params.event_lag_margin_ms, params.lag_margin_cap_ms)
    all_events = ctx.read(BRONZE_IP_EVENTS).select(*IP_EVENT_SCHEMA.names)
    events = all_events.where(F.col("event_ms") < span.end_ms + span.pad_ms + reach_ms)
    # an earlier run published the holdings open at the span's start: start from them; else (a new
    # lake, or after a gap in the runs) read every earlier event once
    runs = ctx.read(RUNS)
    seeded = events
    if runs.where((F.col("start_ms") < span.from_ms) & (F.col("end_ms") >= span.from_ms)).limit(1).count():
        events = events.where(F.col("event_ms") >= span.from_ms)
        holdings = ctx.read(IP_EVENT_HOLDINGS)
        # what was seen before matters only to the unassigns replayed: the addresses that have some
        unassigned = events.where(F.col("action") == ACTION_UNASSIGN).select("ip").distinct()
        seen = seen_before(all_events, holdings, at_ms=span.from_ms, within_ms=lookback_ms(params))
        seeded = events.unionByName(holdings_as_assigns(holdings, at_ms=span.from_ms)).unionByName(
            seen.join(F.broadcast(unassigned), "ip", "left_semi"))
    # margins per hour, each from its own lookback window: the lag pairs of the span's hours from bronze
    # (records with first_start_ms in [lo, hi) have interval_start_ms in [lo - 1h, hi): an interval is
    # shorter than an hour), those of the lookback before them as earlier runs kept them
    fresh = pair_reads(hour_from_ms=span.hour_from_ms, hour_to_ms=span.hour_to_ms, params=params)
    new_pairs = pairs_by_hour(
        ctx.read_span(BRONZE_FLOWS, (fresh.flows[0] - HOUR_MS, fresh.flows[1])),
        all_events.where((F.col("event_ms") >= fresh.events[0]) & (F.col("event_ms") < fresh.events[1])),
        params=params, hour_from_ms=span.hour_from_ms, hour_to_ms=span.hour_to_ms).localCheckpoint()
    reads = learn_reads(from_ms=span.from_ms, end_ms=span.end_ms, params=params)
    kept = ctx.read_span(TRACKER_LAG_PAIRS, (reads.hours[0] - lookback_ms(params), span.hour_from_ms))
    learn_events = all_events.where((F.col("event_ms") >= reads.events[0]) & (F.col("event_ms") < reads.events[1]))
    hourly = hourly_lag_from_pairs(kept.unionByName(new_pairs), learn_events, params=params, hours=reads.hours)
    shown = [hourly[h] for h in reads.hours if h >= span.hour_from_ms]
    ctx.echo("  ownership: " + lag_summary(shown))
    held = event_rows_df(seeded, lag_margin_ms=params.event_lag_margin_ms, stale_after_ms=None,
                         margins=margins(hourly, params=params), seen_within_ms=lookback_ms(params)).localCheckpoint()
    # silences earlier runs found, still open at the span's start: its evidence may no longer show the sidecar
    silent_since = ctx.read(OWNERSHIP_DOUBTS).where(
        (F.col("reason") == NOTE_SILENT_SIDECAR) & (F.col("valid_from_ms") < span.from_ms)
        & (F.coalesce("valid_to_ms", F.lit(OPEN_END)) > span.from_ms)
    ).select("ip", F.col("valid_from_ms").alias("since_ms"))
    ranges, conflicts, doubts, holdings = ownership.build_from_rows(evidence, held, params=params,
                                                                    silent_since=silent_since)
    # nothing published beyond this window: holdings reaching past its end stay open
    open_end = runs.where(F.col("end_ms") > span.end_ms).limit(1).count() == 0
    spliced = {}
    for table, computed, key, same in ((IP_OWNERSHIP, ranges, OWNER_KEY, OWNER_COLUMNS),
                                       (OWNERSHIP_CONFLICTS, conflicts, ["ip"], ["owners"]),
                                       (OWNERSHIP_DOUBTS, doubts, ["ip"], ["reason"]),
                                       (IP_EVENT_HOLDINGS, holdings, ["ip"], OWNER_COLUMNS)):
        stored = ctx.read(table)
        rows = splice(touching(stored, from_ms=span.from_ms, to_ms=span.end_ms), computed, key=key, same=same,
                      from_ms=span.from_ms, to_ms=span.end_ms, open_end=open_end)
        spliced[table] = rows.select(*stored.columns).localCheckpoint()
    owned = spliced[IP_OWNERSHIP]
    ctx.gate("ownership", lambda: _bronze_checks(ctx, ctx.read_span(BRONZE_FLOWS)) + suites.ownership_suite(owned))
    for table, rows in spliced.items():
        ctx.publish(rows, table, predicate=touching_predicate(from_ms=span.from_ms, to_ms=span.end_ms))
    ctx.counts["ownership"] = owned.count()
    computed_at = ctx.now_ms if ctx.now_ms is not None else int(time.time() * 1000)
    cols = [c.split()[0] for c in TRACKER_LAG.ddl.split(", ")]
    meta = [tuple({**t.row(), "run_id": ctx.run_id, "computed_at_ms": computed_at}[c] for c in cols)
            for t in shown if t.hour_start_ms < span.hour_to_ms]
    ctx.publish(ctx.spark.createDataFrame(meta, TRACKER_LAG.ddl), TRACKER_LAG)
    ctx.publish(new_pairs, TRACKER_LAG_PAIRS)


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
    rows = attributed.count()  # computed here: the gate's seconds are then its checks' alone
    ctx.gate("attribute", lambda: suites.silver_suite(attributed, flows,
                                                      min_attributed_share=ctx.quality.min_attributed_share))
    ctx.publish(attributed, FLOWS_ATTRIBUTED)
    ctx.publish(seen, PORTS_SEEN)
    ctx.results["by_attribution"] = {r[0]: r[1] for r in attributed.groupBy("remote_attribution").count().collect()}
    ctx.counts["attribute"] = rows
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
        return (_bronze_checks(ctx, bronze) + suites.ownership_suite(owned)
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
