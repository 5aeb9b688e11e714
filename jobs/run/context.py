"""What every stage of one run shares: the session, the lake, the span, the configs, the gate, the clock."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession

from flowlake.jobs.config import InsightConfig, JobsConfig, QualityConfig
from flowlake.jobs.quality.checks import Check
from flowlake.jobs.run import io
from flowlake.jobs.run.span import Span
from flowlake.lake import Lake, Table

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    spark: SparkSession
    lake: Lake
    raw_root: str
    start_ms: int
    end_ms: int
    run_id: str
    config: JobsConfig
    quality: QualityConfig
    insight: InsightConfig
    now_ms: int | None = None
    echo: Callable[[str], None] = print
    span: Span | None = None  # set once, after ingest (late data widens it)
    results: dict = field(default_factory=dict)  # what stages hand later ones (e.g. ingest results)
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # rows each stage published
    quality_lines: list[str] = field(default_factory=list)

    @property
    def the_span(self) -> Span:
        if self.span is None:
            raise RuntimeError("the run's span is not planned yet: plan it after ingest")
        return self.span

    def read(self, table: Table) -> DataFrame:
        return io.read(self.spark, self.lake, table)

    def read_span(self, table: Table, bounds: tuple[int, int] | None = None) -> DataFrame:
        """The table's rows of this run's span (or of ``bounds`` on its span column)."""
        return self.read(table).where(self.the_span.where(table, bounds))

    def publish(self, df: DataFrame, table: Table, *, predicate: str | None = None,
                optimize_write: bool | None = None) -> None:
        """Replace the table's rows of this span (or of ``predicate``) with ``df`` (``optimize_write``: see
        :func:`~flowlake.jobs.run.io.append`)."""
        io.replace_where(df, self.lake, table, predicate=predicate or self.the_span.predicate(table),
                         optimize_write=optimize_write)

    def gate(self, stage: str, make_checks: Callable[[], list[Check]]) -> None:
        """Validate before publishing: raise QualityGateError (publishing nothing) on a blocking failure."""
        if not self.quality.enabled:
            return
        from flowlake.jobs.quality.gate import gate

        started = time.monotonic()
        report = gate(make_checks(), config=self.quality, run_id=self.run_id, stage=stage, lake_root=self.lake.root)
        self.seconds[f"gate_{stage}"] = self.seconds.get(f"gate_{stage}", 0.0) + time.monotonic() - started
        warnings = report.warnings
        self.quality_lines.append(
            f"quality {stage}: {len(report.results)} check(s), {len(warnings)} warning(s)"
            + (": " + ", ".join(w.name for w in warnings) if warnings else "") + f" ({report.path})")
