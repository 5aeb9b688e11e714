"""Unknown holders' unassigns: how far back a run must recompute when it meets one.

An unassign at ``u`` of an instance with no event on the address within
``seen_within_ms`` before (its assign was lost) while another holder's range is
open cuts that range back towards its start (the double loss of
:mod:`flowlake.jobs.silver.event_ranges`). Earlier runs published that range
whole, so the run that meets the unassign recomputes from the open range's
start, as for late data, and hour-by-hour runs agree with one run.

The open range began no earlier than its assign's ``event_ms`` less the
largest lag margin (``cap_ms``). With no assign of another instance within the
window, the holding may be older: the reach is ``u - seen_within_ms`` (the
planner bounds it by the late-arrival lookback). An assign followed by its own
unassign before ``u`` left nothing open: no reach.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowlake.contracts import ACTION_ASSIGN, ACTION_UNASSIGN

def orphan_reach(unassigns: DataFrame, known: DataFrame, holdings: DataFrame, *, seen_within_ms: int,
                 cap_ms: int) -> DataFrame:
    """(ip, event_ms, reach_ms) of the ``unassigns`` (contract event columns) whose instance had no event in
    ``known`` (the events of their addresses over the window before them) and held no published holding
    (EVENT_RANGE_DDL) open at the unassign or ended within the window before it (a long holding's own end,
    or a cut holder's lagging unassign), and that may cut an open range:
    ``reach_ms`` is where that range could begin. A superset of what the event rows will cut: reaching
    back further than needed costs time, never a result."""
    u = (unassigns.where((F.col("action") == ACTION_UNASSIGN) & F.col("instance_id").isNotNull())
         .select("ip", F.col("instance_id").alias("u_inst"), F.col("event_ms").alias("u_ms")).distinct())
    held = holdings.select(F.col("ip").alias("h_ip"), F.col("instance_id").alias("h_inst"), "valid_from_ms",
                           "valid_to_ms")
    covering = ((F.col("h_ip") == F.col("ip")) & (F.col("h_inst") == F.col("u_inst"))
                & (F.col("valid_from_ms") < F.col("u_ms"))
                & (F.col("valid_to_ms").isNull() | (F.col("valid_to_ms") >= F.col("u_ms") - seen_within_ms)))
    u = u.join(held, on=covering, how="left_anti")
    k = known.select("ip", F.col("instance_id").alias("k_inst"), F.col("event_ms").alias("k_ms"),
                     F.col("action").alias("k_action"))
    before = (F.col("k_ms") >= F.col("u_ms") - seen_within_ms) & (F.col("k_ms") < F.col("u_ms"))
    other_assign = (F.col("k_action") == ACTION_ASSIGN) & ~F.col("k_inst").eqNullSafe(F.col("u_inst"))
    cand = (u.join(k, on="ip", how="left").where(F.col("k_ms").isNull() | before)
            .groupBy("ip", "u_inst", "u_ms")
            .agg(F.max(F.coalesce(F.col("k_inst") == F.col("u_inst"), F.lit(False))).alias("_seen"),
                 F.max(F.when(other_assign, F.struct(F.col("k_ms").alias("ms"), F.col("k_inst").alias("inst"))))
                 .alias("_last"))
            .where(~F.col("_seen")))
    released = cand.join(k, on="ip").where(
        F.col("_last").isNotNull() & (F.col("k_action") == ACTION_UNASSIGN)
        & (F.col("k_ms") >= F.col("_last.ms")) & (F.col("k_ms") < F.col("u_ms"))
        & (F.col("k_inst").isNull() | (F.col("k_inst") == F.col("_last.inst"))))
    return (cand.join(released.select("ip", "u_inst", "u_ms").distinct(), ["ip", "u_inst", "u_ms"], "left_anti")
            .select("ip", F.col("u_ms").alias("event_ms"),
                    F.coalesce(F.col("_last.ms") - cap_ms, F.col("u_ms") - seen_within_ms).alias("reach_ms")))
