"""Gold aggregates beyond app dependencies (rollups, segmentation, forecasts, cross-zone cost).

``run_gold`` is called by the pipeline after gold/app_dependencies, for the
whole hours [h0_ms, h1_ms) a run recomputed. Each aggregate is a pure
transform in its own module; this function only reads and writes tables.
"""

from __future__ import annotations

from pyspark.sql import SparkSession

from flowlake.jobs import lake as lk
from flowlake.jobs.config import JobsConfig


def run_gold(spark: SparkSession, lake: lk.Lake, *, h0_ms: int, h1_ms: int, config: JobsConfig) -> dict[str, float]:
    """Write the gold tables for the hours [h0_ms, h1_ms); returns seconds per table."""
    return {}
