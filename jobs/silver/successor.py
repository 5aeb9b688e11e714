"""Lag-margin doubt dated by the next holder's own sidecar.

A lag-margin doubt ``[d0, d1)`` exists because the new holder B's assign lags
the real handover by up to the margin: any time in it may already be B's. When
B has a sidecar, every connection B takes part in is in B's own records, so B's
first heartbeat run on the address after ``d0`` (starting at ``f``, the
tolerance already taken off) dates B's earliest possible traffic there: nothing
on the address before ``f`` is B's. The old holder A, whose range the doubt was
cut from, then keeps ``[d0, min(f, d1))``, and only ``[f, d1)`` stays doubt
(where B's heartbeats take over anyway).

Only a run of B that starts within ``horizon_ms`` of ``d0`` counts (the
evidence pad a run reads beyond its span reaches that far), so a run learns
the same cut whatever span it computes. A run of B already open at ``d0``
dates nothing: B may have held the address all along. The rule trusts B's
sidecar to report every connection, as the silent-sidecar guard does; a
record lost for good from B's first minutes could then go to A.

A double loss (:mod:`flowlake.jobs.silver.event_ranges`) leaves doubt that
names the old holder A and the unknown holder X whose unassign proved it.
Where X's own sidecar reports on the address, X's first heartbeat run in the
doubt dates X's arrival the same way: A keeps the doubt up to it
(:func:`date_unknown_holder`). No horizon applies: the run that meets X's
unassign recomputes from A's range's start (:mod:`flowlake.jobs.silver.orphans`),
reading the heartbeats of all of it.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowlake.jobs.silver.event_ranges import KIND_DOUBT, KIND_RANGE, NOTE_LAG_MARGIN, NOTE_STALE_RANGE


def date_by_successor(rows: DataFrame, runs: DataFrame, *, horizon_ms: int) -> DataFrame:
    """Event rows (EVENT_ROWS_DDL) with each lag-margin doubt shortened to start at its next holder's first
    heartbeat run (``runs``: ip, workload, instance_id, valid_from_ms, valid_to_ms), the range it was cut
    from extended to meet it."""
    lag = rows.where((F.col("row_kind") == KIND_DOUBT) & (F.col("note") == NOTE_LAG_MARGIN)
                     & F.col("next_workload").isNotNull())
    r = runs.select(F.col("ip").alias("_ip"), F.col("workload").alias("_w"), F.col("instance_id").alias("_i"),
                    F.col("valid_from_ms").alias("_rf"), F.col("valid_to_ms").alias("_rt"))
    d0 = F.col("valid_from_ms")
    matched = lag.join(r, (F.col("ip") == F.col("_ip")) & (F.col("next_workload") == F.col("_w"))
                       & (F.col("next_instance_id").isNull() | (F.col("next_instance_id") == F.col("_i")))
                       & (F.col("_rt") > d0) & (F.col("_rf") < d0 + F.lit(horizon_ms)))
    dated = (matched.groupBy("ip", "valid_from_ms", "valid_to_ms").agg(F.min("_rf").alias("_f"))
             .select(F.col("ip").alias("_dip"), F.col("valid_from_ms").alias("_d0"),
                     F.least(F.greatest("_f", "valid_from_ms"), "valid_to_ms").alias("_dated"))
             .where(F.col("_dated") > F.col("_d0")))
    is_range, is_lag = F.col("row_kind") == KIND_RANGE, F.col("note") == NOTE_LAG_MARGIN
    # at most one range of an ip ends at d0 (ranges of an ip are disjoint), and event_rows names the next
    # holder only when the range it cut ends exactly there
    joined = rows.join(F.broadcast(dated), (F.col("ip") == F.col("_dip")) & (
        (is_range & (F.col("valid_to_ms") == F.col("_d0")))
        | ((F.col("row_kind") == KIND_DOUBT) & is_lag & (F.col("valid_from_ms") == F.col("_d0")))), "left")
    hit = F.col("_dated").isNotNull()
    out = (joined
           .withColumn("valid_to_ms", F.when(hit & is_range, F.col("_dated")).otherwise(F.col("valid_to_ms")))
           .withColumn("valid_from_ms", F.when(hit & ~is_range, F.col("_dated")).otherwise(F.col("valid_from_ms"))))
    return out.where(F.col("valid_to_ms").isNull() | (F.col("valid_to_ms") > F.col("valid_from_ms"))).select(
        *rows.columns)


def date_unknown_holder(rows: DataFrame, runs: DataFrame) -> DataFrame:
    """Event rows with each double-loss doubt (``guard: stale range`` naming its old holder and the unknown
    ``next_instance_id``) given back to the old holder up to the unknown holder's first heartbeat run in it,
    as a range of its own; the rest stays doubt."""
    named = ((F.col("row_kind") == KIND_DOUBT) & (F.col("note") == NOTE_STALE_RANGE)
             & F.col("workload").isNotNull() & F.col("next_instance_id").isNotNull())
    r = runs.select(F.col("ip").alias("_ip"), F.col("instance_id").alias("_i"), F.col("valid_from_ms").alias("_rf"),
                    F.col("valid_to_ms").alias("_rt"))
    d0, d1 = F.col("valid_from_ms"), F.col("valid_to_ms")
    firsts = (rows.where(named).join(r, (F.col("ip") == F.col("_ip")) & (F.col("next_instance_id") == F.col("_i"))
                                     & (F.col("_rt") > d0) & (F.col("_rf") < d1))
              .groupBy("ip", "valid_from_ms").agg(F.min("_rf").alias("_f")))
    joined = rows.join(F.broadcast(firsts), ["ip", "valid_from_ms"], "left").withColumn(
        "_dated", F.when(named & F.col("_f").isNotNull(), F.least(F.greatest("_f", d0), d1)))
    hit = F.col("_dated").isNotNull() & (F.col("_dated") > d0)
    given = joined.where(hit).select(*[
        F.col("_dated").alias(c) if c == "valid_to_ms" else F.lit(KIND_RANGE).alias(c) if c == "row_kind"
        else F.lit(None).cast("string").alias(c) if c in ("note", "next_workload", "next_instance_id") else F.col(c)
        for c in rows.columns])
    rest = joined.withColumn("valid_from_ms", F.when(hit, F.col("_dated")).otherwise(d0)).where(
        d1.isNull() | (d1 > F.col("valid_from_ms"))).select(*rows.columns)
    return rest.unionByName(given)
