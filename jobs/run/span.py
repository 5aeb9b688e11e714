"""The span a run computes: its window, widened once for late data, and every bound derived from it.

A run over the window [start, end) recomputes the records of [from, end),
where ``from`` <= start reaches back to the earliest late data it ingested
(within the late-arrival lookback, and only over windows already published).
Heartbeat evidence is read ``pad`` beyond both ends. Hourly tables are
replaced over the whole hours the span touches, daily tables over its whole
days. For each table the span gives both the read filter and the replaceWhere
predicate, from the one column the catalog names (``Table.span_column``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F

from flowlake.lake import DAY, HOUR_START, INTERVAL_START, VALID_FROM, Table
from flowlake.timeutil import DAY_MS, HOUR_MS, ceil_to, day_of, floor_to


@dataclass(frozen=True)
class Span:
    """The bounds of one run (all epoch ms, ends exclusive)."""

    start_ms: int  # the window asked for
    end_ms: int
    from_ms: int  # recompute start: start_ms, or earlier for late data
    pad_ms: int = 0  # heartbeat evidence read beyond both ends

    def __post_init__(self) -> None:
        if self.end_ms <= self.start_ms:
            raise ValueError(f"--end must be after --start (got start={self.start_ms}, end={self.end_ms} ms)")
        if self.from_ms > self.start_ms:
            raise ValueError(f"the recompute start {self.from_ms} lies after the window start {self.start_ms}")

    @property
    def hour_from_ms(self) -> int:
        return floor_to(self.from_ms, HOUR_MS)

    @property
    def hour_to_ms(self) -> int:
        return ceil_to(self.end_ms, HOUR_MS)

    @property
    def day_from_ms(self) -> int:
        return floor_to(self.hour_from_ms, DAY_MS)

    @property
    def day_to_ms(self) -> int:
        return ceil_to(self.hour_to_ms, DAY_MS)

    @property
    def evidence(self) -> tuple[int, int]:
        """Records whose interval start lies here can be evidence of ownership within the span."""
        return self.from_ms - self.pad_ms, self.end_ms + self.pad_ms

    def bounds(self, table: Table) -> tuple[int, int]:
        """[lo, hi) in ms of the table's span column that this run replaces."""
        column = table.span_column
        if column in (INTERVAL_START, VALID_FROM):
            return self.from_ms, self.end_ms
        if column == HOUR_START:
            return self.hour_from_ms, self.hour_to_ms
        if column == DAY:
            return self.day_from_ms, self.day_to_ms
        raise ValueError(f"{table.name} is rewritten whole: it has no span column")

    def predicate(self, table: Table) -> str:
        """The replaceWhere predicate for the table's rows of this span."""
        lo, hi = self.bounds(table)
        if table.span_column == DAY:
            return f"{DAY} >= '{day_of(lo)}' AND {DAY} < '{day_of(hi)}'"
        return f"{table.span_column} >= {lo} AND {table.span_column} < {hi}"

    def where(self, table: Table, bounds: tuple[int, int] | None = None) -> Column:
        """Read filter for the table's rows within ``bounds`` (default: what this run replaces).

        Tables partitioned by ``dt`` also get a ``dt`` filter so Delta prunes files."""
        lo, hi = bounds if bounds is not None else self.bounds(table)
        column = table.span_column
        if column == DAY:
            return (F.col(DAY) >= F.lit(day_of(lo)).cast("date")) & (F.col(DAY) < F.lit(day_of(hi)).cast("date"))
        cond = (F.col(column) >= lo) & (F.col(column) < hi)
        if "dt" in table.partition_by:
            cond = cond & (F.col("dt") >= F.lit(day_of(lo)).cast("date")) & (
                F.col("dt") <= F.lit(day_of(max(hi - 1, lo))).cast("date"))
        return cond

    @property
    def hours(self) -> tuple[int, int]:
        return self.hour_from_ms, self.hour_to_ms

    @property
    def days(self) -> tuple[int, int]:
        return self.day_from_ms, self.day_to_ms
