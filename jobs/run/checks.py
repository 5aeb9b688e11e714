"""The bronze checks the ownership and quality gates share: the span's bronze and this run's ingest."""

from __future__ import annotations

from pyspark.sql import functions as F

from flowlake.jobs.bronze import ingest
from flowlake.jobs.bronze.rawfiles import KIND_FLOWS
from flowlake.jobs.quality import suites
from flowlake.jobs.run.context import RunContext
from flowlake.lake import BRONZE_FLOWS, CAPTURE_COMPLETENESS, INGESTED_FILES


def _rows_ingested_by_run(ctx: RunContext):
    """Bronze rows from the files this run ingested (read from the days those files cover only)."""
    files = (ctx.read(INGESTED_FILES)
             .where((F.col("run_id") == ctx.run_id) & (F.col("kind") == KIND_FLOWS)
                    & (F.col("status") == ingest.STATUS_INGESTED))
             .select("source_file", "min_time_ms", "max_time_ms")).localCheckpoint()
    lo, hi = files.agg(F.min("min_time_ms"), F.max("max_time_ms")).first()
    if lo is None:
        return ctx.read(BRONZE_FLOWS).limit(0)
    return (ctx.read_span(BRONZE_FLOWS, (lo, hi + 1))
            .join(F.broadcast(files.select("source_file")), on="source_file", how="left_semi"))


def bronze_checks(ctx: RunContext, window):
    """The bronze suite over ``window`` (the span's bronze rows) and the capture completeness of its hours."""
    span = ctx.the_span
    capture = ctx.read(CAPTURE_COMPLETENESS).where(
        (F.col("hour_start_ms") >= span.hour_from_ms) & (F.col("hour_start_ms") < span.hour_to_ms))
    return suites.bronze_suite(window, _rows_ingested_by_run(ctx), start_ms=span.start_ms, end_ms=span.end_ms,
                               lateness_ms=ctx.quality.lateness_ms) + suites.completeness_suite(capture)
