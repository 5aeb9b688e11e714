"""Interval algebra on small per-IP range tables (ownership ranges, not flows).

Ranges are half-open [from, to); an open end (null ``to``) is handled as
OPEN_END so that every range can be compared.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

OPEN_END = 2**63 - 1  # stands for "still owned" (null valid_to) inside computations
BEFORE_ALL = -(2**63)  # a change point before any real time


def elementary_segments(ranges: DataFrame, *, key: str, start: str, end: str) -> DataFrame:
    """Split each key's time line at every range bound.

    Returns (key, seg_from, seg_to) for consecutive bounds: every range is an
    exact union of segments, and inside one segment the set of covering
    ranges does not change.
    """
    bounds = ranges.select(key, F.col(start).alias("b")).union(ranges.select(key, F.col(end).alias("b"))).distinct()
    w = Window.partitionBy(key).orderBy("b")
    return (
        bounds.withColumn("seg_to", F.lead("b").over(w))
        .where(F.col("seg_to").isNotNull())
        .select(key, F.col("b").alias("seg_from"), "seg_to")
    )


def covering(segments: DataFrame, ranges: DataFrame, *, key: str, start: str, end: str) -> DataFrame:
    """Pairs (segment, range) where the range covers the segment."""
    s, r = segments.alias("s"), ranges.alias("r")
    return s.join(
        r,
        on=(F.col(f"s.{key}") == F.col(f"r.{key}"))
        & (F.col(f"r.{start}") <= F.col("s.seg_from"))
        & (F.col(f"r.{end}") >= F.col("s.seg_to")),
        how="inner",
    ).select("s.*", *[F.col(f"r.{c}") for c in ranges.columns if c != key])


def merge_adjacent(segments: DataFrame, *, key: str, same: Sequence[str]) -> DataFrame:
    """Gaps-and-islands: merge consecutive segments of one key that touch and agree on ``same``.

    Input has (key, seg_from, seg_to, *same); output (key, *same, valid_from, valid_to).
    """
    w = Window.partitionBy(key).orderBy("seg_from")
    changed = F.lit(False)
    for col in same:
        changed = changed | ~F.col(col).eqNullSafe(F.lag(col).over(w))
    starts_group = F.lag("seg_to").over(w).isNull() | (F.lag("seg_to").over(w) != F.col("seg_from")) | changed
    grouped = segments.withColumn("_grp", F.sum(starts_group.cast("int")).over(w))
    return grouped.groupBy(key, "_grp", *same).agg(
        F.min("seg_from").alias("valid_from"), F.max("seg_to").alias("valid_to")
    ).drop("_grp")
