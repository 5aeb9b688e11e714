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


def splice(published: DataFrame, computed: DataFrame, *, key: Sequence[str], same: Sequence[str],
           from_ms: int, to_ms: int, open_end: bool) -> DataFrame:
    """The rows that replace ``published`` once [from_ms, to_ms) has been recomputed as ``computed``.

    ``published`` holds the stored rows that overlap or touch [from, to].
    Their parts before ``from_ms`` are kept, ``computed`` (clipped to the span)
    fills it, and touching rows that agree on ``key`` + ``same`` merge into
    one, so the table does not depend on how time was cut into runs.

    ``open_end``: nothing after ``to_ms`` is published yet. Then a stored
    row's open tail past ``to_ms`` was an earlier run's "still held" and is
    replaced by what this run computed, and a computed row that reaches past
    ``to_ms`` is published open (null ``valid_to_ms``). Otherwise (re-running
    an older window) the stored parts after ``to_ms`` are later runs' results
    and are kept, and a computed row ends at ``to_ms`` and merges with the
    stored row that continues it. Rows of one ``key`` must not overlap.
    Columns: ``key``, ``same``, valid_from_ms, valid_to_ms.
    """
    to = F.coalesce("valid_to_ms", F.lit(OPEN_END))
    keep = [*key, *same]
    stored = published.select(*keep, F.col("valid_from_ms").alias("seg_from"), to.alias("seg_to"))
    before = stored.where(F.col("seg_from") < from_ms).withColumn("seg_to", F.least("seg_to", F.lit(from_ms)))
    after = stored.where(F.col("seg_to") > to_ms).withColumn("seg_from", F.greatest("seg_from", F.lit(to_ms)))
    reaches_past = to > to_ms
    inside = computed.where((F.col("valid_from_ms") < to_ms) & (to > from_ms)).select(
        *keep,
        F.greatest("valid_from_ms", F.lit(from_ms)).alias("seg_from"),
        F.when(reaches_past, F.lit(OPEN_END if open_end else to_ms)).otherwise(to).alias("seg_to"),
    )
    pieces = before.unionByName(inside) if open_end else before.unionByName(after).unionByName(inside)
    pieces = pieces.withColumn("_key", F.to_json(F.struct(*key)))
    merged = merge_adjacent(pieces, key="_key", same=keep)
    return merged.select(
        *keep, F.col("valid_from").alias("valid_from_ms"),
        F.when(F.col("valid_to") != OPEN_END, F.col("valid_to")).alias("valid_to_ms"),
    )


def touching(rows: DataFrame, *, from_ms: int, to_ms: int) -> DataFrame:
    """Stored range rows that overlap or touch [from_ms, to_ms] (what :func:`splice` replaces)."""
    return rows.where(touching_predicate(from_ms=from_ms, to_ms=to_ms))


def touching_predicate(*, from_ms: int, to_ms: int) -> str:
    """SQL form of :func:`touching`'s filter, for the replaceWhere that publishes a splice."""
    return f"valid_from_ms <= {to_ms} AND (valid_to_ms IS NULL OR valid_to_ms >= {from_ms})"
