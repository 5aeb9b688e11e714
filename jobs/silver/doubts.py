"""Doubt ranges: where an ownership range was removed for doubt, and why (silver/ip_ownership_doubts)."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowlake.jobs.silver.event_ranges import NOTE_LAG_MARGIN, NOTE_STALE_RANGE
from flowlake.jobs.silver.ranges import OPEN_END, covering, elementary_segments, merge_adjacent
from flowlake.lake import OWNERSHIP_DOUBTS

DOUBT_DDL = OWNERSHIP_DOUBTS.ddl
NOTE_CONFLICT = "conflict"
NOTE_SILENT_SIDECAR = "guard: silent sidecar"
# where doubts of several kinds overlap, the first of this list names the time
DOUBT_PRIORITY = [NOTE_CONFLICT, NOTE_SILENT_SIDECAR, NOTE_STALE_RANGE, NOTE_LAG_MARGIN]


def disjoint_doubts(doubts: DataFrame) -> DataFrame:
    """Doubt ranges (ip, valid_from_ms, valid_to_ms nullable, reason) made disjoint per ip by DOUBT_PRIORITY."""
    d = doubts.withColumn("valid_to_ms", F.coalesce("valid_to_ms", F.lit(OPEN_END)))
    segs = elementary_segments(d, key="ip", start="valid_from_ms", end="valid_to_ms")
    cov = covering(segs, d, key="ip", start="valid_from_ms", end="valid_to_ms")
    rank = F.array_position(F.array(*[F.lit(n) for n in DOUBT_PRIORITY]), F.col("reason"))
    best = cov.groupBy("ip", "seg_from", "seg_to").agg(F.min_by("reason", rank).alias("reason"))
    merged = merge_adjacent(best, key="ip", same=["reason"])
    return merged.select("ip", F.col("valid_from").alias("valid_from_ms"),
                         F.when(F.col("valid_to") != OPEN_END, F.col("valid_to")).alias("valid_to_ms"), "reason")


def silent_sidecar(ranges: DataFrame, runs: DataFrame, *,
                   silent_since: DataFrame | None = None) -> tuple[DataFrame, DataFrame]:
    """(kept, silent) for the ``guard: silent sidecar``: event ranges (with ip, workload, instance_id) of
    holders whose own sidecar reports on the ip, cut at their last heartbeat there (holes between heartbeat
    runs are late or lost files, not a gone holder), and the silence after it as doubt rows (ip,
    valid_from_ms, valid_to_ms, reason).

    ``silent_since`` (ip, since_ms): the silences earlier runs published still open at this run's start
    (their ``guard: silent sidecar`` doubts). The holder of a range that began by ``since_ms`` went quiet
    then, though this run's evidence, a pad beyond its span, may no longer show its sidecar: without this,
    an hourly run would take it for a holder without one and keep its range, where one run over both
    hours finds the silence."""
    holder = ["ip", "workload", "instance_id"]
    marked = ranges.join(runs.groupBy(*holder).agg(F.max("valid_to_ms").alias("_hb_last")), holder, "left")
    if silent_since is not None:
        since = silent_since.select(F.col("ip").alias("_sip"), F.col("since_ms").alias("_since"))
        marked = (marked.join(F.broadcast(since), (F.col("ip") == F.col("_sip"))
                              & (F.col("valid_from_ms") <= F.col("_since")), "left")
                  .withColumn("_hb_last", F.greatest("_hb_last", "_since")).drop("_sip", "_since"))
    last, to = F.col("_hb_last"), F.coalesce("valid_to_ms", F.lit(OPEN_END))
    silent = marked.where(last.isNotNull() & (to > last)).select(
        "ip", F.greatest("valid_from_ms", last).alias("valid_from_ms"), "valid_to_ms",
        F.lit(NOTE_SILENT_SIDECAR).alias("reason"))
    kept = marked.where(last.isNull() | (last > F.col("valid_from_ms"))).withColumn(
        "valid_to_ms", F.when(last.isNull() | (to <= last), F.col("valid_to_ms")).otherwise(last))
    return kept.drop("_hb_last"), silent
