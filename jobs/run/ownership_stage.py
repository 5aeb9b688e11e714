"""The ownership stage: who held each address in the span, spliced into what earlier runs published."""

from __future__ import annotations

import time

from pyspark.sql import functions as F

from flowlake.contracts import ACTION_UNASSIGN, IP_EVENT_SCHEMA
from flowlake.jobs.quality import suites
from flowlake.jobs.run import runs as runs_log
from flowlake.jobs.run.checks import bronze_checks
from flowlake.jobs.run.context import RunContext
from flowlake.jobs.silver import ownership
from flowlake.jobs.silver.doubts import NOTE_SILENT_SIDECAR
from flowlake.jobs.silver.event_ranges import event_rows_df
from flowlake.jobs.silver.ranges import OPEN_END, splice, touching, touching_predicate
from flowlake.jobs.silver.seed import holdings_as_assigns, seen_before
from flowlake.jobs.silver.tracker_lag import (
    hourly_lag_from_pairs, lag_summary, learn_reads, lookback_ms, margins, pair_reads, pairs_by_hour,
)
from flowlake.lake import (
    BRONZE_FLOWS, BRONZE_IP_EVENTS, IP_EVENT_HOLDINGS, IP_OWNERSHIP, OWNERSHIP_CONFLICTS, OWNERSHIP_DOUBTS,
    TRACKER_LAG, TRACKER_LAG_PAIRS,
)
from flowlake.timeutil import HOUR_MS

OWNER_KEY = ["ip", "source"]
OWNER_COLUMNS = ["workload", "instance_id", "kind", "region", "availability_zone"]


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
    all_events = ctx.read(BRONZE_IP_EVENTS).select(*IP_EVENT_SCHEMA.names)
    events = all_events.where(F.col("event_ms") < span.end_ms + ownership.event_reach_ms(params))
    # an earlier run published the holdings open at the span's start: start from them; else (a new
    # lake, or after a gap in the runs) read every earlier event once
    owned_before = runs_log.read(ctx.spark, ctx.lake).where(runs_log.finished("ownership"))
    seeded = events
    continued = owned_before.where((F.col("start_ms") < span.from_ms)
                                   & (F.col("end_ms") >= span.from_ms)).limit(1).count()
    if continued:
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
    if continued and _is_quiet(ctx, evidence=evidence, events=events):
        return _quiet(ctx, shown, new_pairs)
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
    open_end = owned_before.where(F.col("end_ms") > span.end_ms).limit(1).count() == 0
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
    ctx.gate("ownership", lambda: bronze_checks(ctx, ctx.read_span(BRONZE_FLOWS)) + suites.ownership_suite(owned))
    for table, rows in spliced.items():
        ctx.publish(rows, table, predicate=touching_predicate(from_ms=span.from_ms, to_ms=span.end_ms))
    ctx.counts["ownership"] = owned.count()
    _publish_lag(ctx, shown, new_pairs)


def _is_quiet(ctx: RunContext, *, evidence, events) -> bool:
    """The span is its window (nothing to recompute before it) and neither a heartbeat in the padded span
    nor an event from its start on may change a range (``evidence``, ``events``: what the stage read)."""
    return ctx.the_span.from_ms == ctx.the_span.start_ms and not evidence.take(1) and not events.take(1)


def _quiet(ctx: RunContext, shown: list, new_pairs) -> None:
    """No heartbeat in the padded span and no event from its start on, after a run that ended there (a
    quiet hour): the holdings and silences open at its start stay open, nothing is cut, so the spliced
    ownership, conflicts, doubts and holdings would be the stored rows. Only the hour's learned lag is
    new; the bronze checks still gate (a silent fleet is what the completeness suite reports)."""
    ctx.gate("ownership", lambda: bronze_checks(ctx, ctx.read_span(BRONZE_FLOWS)))
    _publish_lag(ctx, shown, new_pairs)
    ctx.counts["ownership"] = 0


def _publish_lag(ctx: RunContext, shown: list, new_pairs) -> None:
    """``_meta/tracker_lag`` rows of the span's hours, and the lag pairs learned from them."""
    computed_at = ctx.now_ms if ctx.now_ms is not None else int(time.time() * 1000)
    meta = [tuple({**t.row(), "run_id": ctx.run_id, "computed_at_ms": computed_at}[c] for c in TRACKER_LAG.columns)
            for t in shown if t.hour_start_ms < ctx.the_span.hour_to_ms]
    ctx.publish(ctx.spark.createDataFrame(meta, TRACKER_LAG.ddl), TRACKER_LAG)
    ctx.publish(new_pairs, TRACKER_LAG_PAIRS)
