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
