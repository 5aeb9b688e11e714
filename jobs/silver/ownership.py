"""silver/ip_ownership: who held each IP address when, from heartbeats and from tracker events.

Heartbeats. Every raw record says: workload W on instance I held ``local_ip``
at ``first_start_ms`` (the start of the record's earliest connection, which
that side established). Evidence points of one owner for one IP that follow
each other within ``heartbeat_max_gap_ms`` form a run, and the run's range is
[first point - tolerance, last point + tolerance) where tolerance is
``handshake_tolerance_ms`` (the other side of a connection sees its start a
few ms off). The interval bounds of a record are not used: they are looser
than the evidence. Where ranges of two owners of one IP overlap, nobody is
proven: the overlap is removed from both and reported as a conflict.

Events. Per IP, in event-time order (never arrival order), with duplicates
removed: an assign starts a holding by (workload, instance_id); the next
assign to another holder, or an unassign of this holder (same instance_id,
or none given), ends it. The tracker's event_ms lags the true change; the lag
margin (a high quantile of that lag, learned per UTC hour from holdings whose
sidecar shows when they really began: :mod:`flowlake.jobs.silver.tracker_lag`) is taken off a
range only where another workload could have taken the address (see
:mod:`flowlake.jobs.silver.event_ranges`). An event range is never trusted
where a heartbeat shows another workload on the address: it is cut there.
A holder whose own sidecar reports on the address has every flow it took part
in in its heartbeats: its event range after its last heartbeat there is doubt
(``guard: silent sidecar``); holes between its heartbeat runs (late or lost
files) keep the event range.

Doubt. Where a range was removed for doubt (heartbeat conflict, lag margin,
guards), the reason is kept as a doubt range, so that attribution can say why
a record is unattributed.
"""

from __future__ import annotations

from typing import NamedTuple

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowlake.jobs.config import AttributionParams
from flowlake.lake import IP_OWNERSHIP, OWNERSHIP_CONFLICTS, OWNERSHIP_DOUBTS
from flowlake.jobs.silver.doubts import NOTE_CONFLICT, disjoint_doubts, silent_sidecar
from flowlake.jobs.silver.heartbeats import heartbeat_evidence, heartbeat_runs
from flowlake.jobs.silver.event_ranges import EVENT_RANGE_COLUMNS, KIND_DOUBT, KIND_RANGE, Margins, event_rows_df
from flowlake.jobs.silver.ranges import OPEN_END, covering, elementary_segments, merge_adjacent
from flowlake.jobs.silver.successor import date_by_successor, date_unknown_holder

SOURCE_HEARTBEAT = "heartbeat"
SOURCE_EVENT = "event"

OWNERSHIP_COLUMNS = [
    "ip", "workload", "valid_from_ms", "valid_to_ms", "source",
    "instance_id", "kind", "region", "availability_zone",
]
OWNERSHIP_DDL = IP_OWNERSHIP.ddl
CONFLICT_DDL = OWNERSHIP_CONFLICTS.ddl
DOUBT_DDL = OWNERSHIP_DOUBTS.ddl  # silver/ip_ownership_doubts (see flowlake.jobs.silver.doubts)


def evidence_pad_ms(params: AttributionParams) -> int:
    """How far outside a window heartbeat evidence still matters to ranges inside it."""
    return params.heartbeat_max_gap_ms + 2 * params.handshake_tolerance_ms


def event_reach_ms(params: AttributionParams) -> int:
    """How far past a window's end an event can still cut a range inside it: the evidence pad plus the
    largest margin a run may learn."""
    return evidence_pad_ms(params) + max(params.event_lag_margin_ms, params.lag_margin_cap_ms)


# --------------------------------------------------------------------------- heartbeats

def resolve_heartbeat_conflicts(runs: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Remove overlaps of different owners from heartbeat runs.

    Returns (ranges, conflicts): ranges have one owner each and do not overlap
    within an ip; conflicts are the spans where several owners claimed the ip.
    """
    segs = elementary_segments(runs, key="ip", start="valid_from_ms", end="valid_to_ms")
    cov = covering(segs, runs, key="ip", start="valid_from_ms", end="valid_to_ms")
    owner = F.concat_ws("/", "workload", "instance_id")
    per_seg = cov.groupBy("ip", "seg_from", "seg_to").agg(
        F.count_distinct(owner).alias("n_owners"),
        F.sort_array(F.collect_set(owner)).alias("owners"),
        F.first("workload").alias("workload"),
        F.first("instance_id").alias("instance_id"),
        F.first("region").alias("region"),
        F.first("availability_zone").alias("availability_zone"),
    )
    owned = merge_adjacent(
        per_seg.where("n_owners = 1"),
        key="ip",
        same=["workload", "instance_id", "region", "availability_zone"],
    )
    conflicts = merge_adjacent(per_seg.where("n_owners > 1").select("ip", "seg_from", "seg_to", "owners"),
                               key="ip", same=["owners"])
    ranges = owned.select(
        "ip", "workload",
        F.col("valid_from").alias("valid_from_ms"), F.col("valid_to").alias("valid_to_ms"),
        F.lit(SOURCE_HEARTBEAT).alias("source"), "instance_id",
        F.lit("instance").alias("kind"), "region", "availability_zone",
    )
    return ranges, conflicts.select(
        "ip", F.col("valid_from").alias("valid_from_ms"), F.col("valid_to").alias("valid_to_ms"), "owners"
    )


def cut_events_by_heartbeats(events: DataFrame, runs: DataFrame) -> DataFrame:
    """Trim each event range where a heartbeat run of another workload overlaps it.

    The range starts after any other-workload run covering its start and ends
    where the next other-workload run begins.
    """
    e = events.withColumn("_eid", F.monotonically_increasing_id()).withColumn(
        "_to", F.coalesce("valid_to_ms", F.lit(OPEN_END))
    )
    h = runs.select(
        F.col("ip").alias("h_ip"), F.col("workload").alias("h_workload"),
        F.col("valid_from_ms").alias("h_from"), F.col("valid_to_ms").alias("h_to"),
    )
    overlaps = e.join(
        h,
        on=(F.col("ip") == F.col("h_ip")) & (F.col("workload") != F.col("h_workload"))
        & (F.col("h_from") < F.col("_to")) & (F.col("h_to") > F.col("valid_from_ms")),
        how="inner",
    )
    cuts = overlaps.groupBy("_eid").agg(
        F.max(F.when(F.col("h_from") <= F.col("valid_from_ms"), F.col("h_to"))).alias("_new_from"),
        F.min(F.when(F.col("h_from") > F.col("valid_from_ms"), F.col("h_from"))).alias("_cut"),
    )
    cut = e.join(cuts, on="_eid", how="left")
    new_from = F.greatest("valid_from_ms", F.coalesce("_new_from", "valid_from_ms"))
    new_to = F.least("_to", F.coalesce("_cut", F.lit(OPEN_END)))
    return (
        cut.withColumn("valid_from_ms", new_from)
        .withColumn("_to", new_to)
        .where(F.col("valid_from_ms") < F.col("_to"))
        .withColumn("valid_to_ms", F.when(F.col("_to") == OPEN_END, None).otherwise(F.col("_to")))
        .drop("_eid", "_to", "_new_from", "_cut")
    )


# --------------------------------------------------------------------------- the job

class Ownership(NamedTuple):
    """What :func:`build` derives: ranges (OWNERSHIP_DDL), conflicts (CONFLICT_DDL), doubts (DOUBT_DDL), and the
    tracker's holdings (EVENT_RANGE_DDL: event ranges before the heartbeat cut, as a next run replays them)."""

    ranges: DataFrame
    conflicts: DataFrame
    doubts: DataFrame
    holdings: DataFrame


def build(flows: DataFrame, events: DataFrame, *, params: AttributionParams, lag_margin_ms: int | None = None,
          stale_after_ms: int | None = None, margins: Margins | None = None,
          silent_since: DataFrame | None = None) -> Ownership:
    """Ownership ranges, heartbeat conflicts and doubt ranges.

    ``flows`` are bronze rows (the heartbeats: give the window padded by
    :func:`evidence_pad_ms`); ``events`` are all known IP events (canonical ips).
    ``lag_margin_ms`` is one margin for every event (default the config's fallback), ``stale_after_ms`` the
    stale-range guard's lifetime bound (None: off); ``margins`` (per hour,
    :func:`~flowlake.jobs.silver.tracker_lag.margins`) overrides both.
    Heartbeat ranges do not overlap within an ip, nor do event ranges; a
    heartbeat and an event range may overlap only when they name the same workload.
    """
    margin = params.event_lag_margin_ms if lag_margin_ms is None else lag_margin_ms
    rows = event_rows_df(events, lag_margin_ms=margin, stale_after_ms=stale_after_ms, margins=margins)
    # few rows, read by ranges and doubts: computed once
    return build_from_rows(flows, rows.localCheckpoint(), params=params, silent_since=silent_since)


def build_from_rows(flows: DataFrame, rows: DataFrame, *, params: AttributionParams,
                    silent_since: DataFrame | None = None) -> Ownership:
    """:func:`build` from event rows already computed (EVENT_ROWS_DDL: the tracker's holdings before the
    heartbeat cut, and its doubts); ``silent_since``: see :func:`~flowlake.jobs.silver.doubts.silent_sidecar`."""
    # runs are few but come from every record: computed once (checkpointed: a persist() lived all session)
    runs = heartbeat_runs(heartbeat_evidence(flows, max_gap_ms=params.heartbeat_max_gap_ms),
                          params=params).localCheckpoint()
    # a lag-margin doubt ends where the next holder's own sidecar shows it: before that, it is the old holder's
    rows = date_unknown_holder(date_by_successor(rows, runs, horizon_ms=params.heartbeat_max_gap_ms),
                               runs).localCheckpoint()
    hb, conflicts = resolve_heartbeat_conflicts(runs)
    # a holder whose sidecar reports on the ip keeps its event range up to its last heartbeat there only
    kept, silent = silent_sidecar(rows.where(F.col("row_kind") == KIND_RANGE), runs, silent_since=silent_since)
    ev = cut_events_by_heartbeats(kept.select(*EVENT_RANGE_COLUMNS), runs).select(
        "ip", "workload", "valid_from_ms", "valid_to_ms", F.lit(SOURCE_EVENT).alias("source"),
        "instance_id", "kind", "region", "availability_zone",
    )
    doubts = disjoint_doubts(
        rows.where(F.col("row_kind") == KIND_DOUBT).select("ip", "valid_from_ms", "valid_to_ms",
                                                            F.col("note").alias("reason"))
        .unionByName(silent)
        .unionByName(conflicts.select("ip", "valid_from_ms", "valid_to_ms", F.lit(NOTE_CONFLICT).alias("reason")))
    )
    holdings = rows.where(F.col("row_kind") == KIND_RANGE).select(*EVENT_RANGE_COLUMNS)
    return Ownership(hb.select(*OWNERSHIP_COLUMNS).unionByName(ev.select(*OWNERSHIP_COLUMNS)), conflicts, doubts,
                     holdings)


def transform(flows: DataFrame, events: DataFrame, *, params: AttributionParams,
              lag_margin_ms: int | None = None) -> tuple[DataFrame, DataFrame]:
    """Ownership ranges (OWNERSHIP_DDL) and heartbeat conflicts (CONFLICT_DDL): :func:`build` without doubts."""
    built = build(flows, events, params=params, lag_margin_ms=lag_margin_ms)
    return built.ranges, built.conflicts
