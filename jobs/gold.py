"""Gold aggregates beyond app dependencies (rollups, segmentation, forecasts, cross-zone cost).

``run_gold`` is called by the pipeline after gold/app_dependencies, for the
whole hours [h0_ms, h1_ms) a run recomputed. Each aggregate is a pure
transform in its own module (gold_rollups, gold_crosszone, gold_segments,
gold_forecast); this module only reads and writes tables:

* hourly tables (traffic_hourly, link_hourly, policy_breaches): replaceWhere over [h0, h1);
* daily tables (traffic_daily, crosszone_cost): replaceWhere over the whole UTC days
  [h0, h1) touches, recomputed from the hourly tables;
* whole-lake tables (segments, segment_quality, allow_rules, path_validation,
  capacity_forecast, capacity_forecast_summary): small, fully rewritten from the
  latest ``lookback`` of the lake (ending at the latest hour in gold/app_dependencies,
  whatever window the run had), so re-running any window gives the same result.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from flowlake.jobs import gold_crosszone, gold_forecast, gold_rollups, gold_segments
from flowlake.jobs import lake as lk
from flowlake.jobs.config import JobsConfig
from flowlake.jobs.insight_config import InsightConfig, load_insight_config

log = logging.getLogger(__name__)
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

TABLES = {
    "traffic_hourly": "gold/traffic_hourly",
    "traffic_daily": "gold/traffic_daily",
    "link_hourly": "gold/link_hourly",
    "crosszone_cost": "gold/crosszone_cost",
    "segments": "gold/segments",
    "segment_quality": "gold/segment_quality",
    "allow_rules": "gold/allow_rules",
    "policy_breaches": "gold/policy_breaches",
    "path_validation": "gold/path_validation",
    "capacity_forecast": "gold/capacity_forecast",
    "capacity_forecast_summary": "gold/capacity_forecast_summary",
}


def table(lake: lk.Lake, name: str) -> str:
    """Spark path of one insight table (names in ``TABLES``)."""
    return lake.table(TABLES[name])


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).date().isoformat()


def _overwrite(df: DataFrame, path: str) -> None:
    df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(path)


def _hours(df: DataFrame, h0: int, h1: int) -> DataFrame:
    return df.where((F.col("hour_start_ms") >= h0) & (F.col("hour_start_ms") < h1))


def run_gold(spark: SparkSession, lake: lk.Lake, *, h0_ms: int, h1_ms: int, config: JobsConfig,
             insight: InsightConfig | None = None) -> dict[str, float]:
    """Write the gold tables for the hours [h0_ms, h1_ms); returns seconds per table."""
    insight = insight or load_insight_config()
    seconds: dict[str, float] = {}
    clock = [time.monotonic()]

    def lap(name: str) -> None:
        now = time.monotonic()
        seconds[f"gold_{name}"] = now - clock[0]
        clock[0] = now

    hour_pred = f"hour_start_ms >= {h0_ms} AND hour_start_ms < {h1_ms}"
    d0_ms, d1_ms = (h0_ms // DAY_MS) * DAY_MS, -(-h1_ms // DAY_MS) * DAY_MS
    day_pred = f"day >= '{_day(d0_ms)}' AND day < '{_day(d1_ms)}'"
    deps = lk.read(spark, lake.app_dependencies)
    enabled = set(insight.tables)

    if "rollups" in enabled or "forecast" in enabled:
        silver = lk.read(spark, lake.flows_attributed).where(
            (F.col("dt") >= F.lit(_day(h0_ms)).cast("date")) & (F.col("dt") <= F.lit(_day(h1_ms - 1)).cast("date"))
            & (F.col("interval_start_ms") >= h0_ms) & (F.col("interval_start_ms") < h1_ms))
        lk.replace_where(gold_rollups.link_hourly(silver), table(lake, "link_hourly"), predicate=hour_pred)
        if "rollups" in enabled:
            lk.replace_where(gold_rollups.traffic_hourly(silver), table(lake, "traffic_hourly"), predicate=hour_pred)
            hourly = _hours(lk.read(spark, table(lake, "traffic_hourly")), d0_ms, d1_ms)
            lk.replace_where(gold_rollups.traffic_daily(hourly), table(lake, "traffic_daily"), predicate=day_pred)
        lap("rollups")

    if "crosszone" in enabled:
        lk.replace_where(gold_crosszone.transform(_hours(deps, d0_ms, d1_ms), prices=insight.prices),
                         table(lake, "crosszone_cost"), predicate=day_pred)
        lap("crosszone")

    if "policy" in enabled:
        lk.replace_where(gold_segments.breaches(_hours(deps, h0_ms, h1_ms), rules=insight.policies,
                                                default_action=insight.default_action),
                         table(lake, "policy_breaches"), predicate=hour_pred)
        lap("policy")

    latest = deps.agg(F.max("hour_start_ms")).first()[0]
    if latest is None:
        return seconds
    until = latest + HOUR_MS

    if "segments" in enabled:
        seg = insight.segmentation
        since = until - seg.lookback_days * DAY_MS
        previous = lk.read(spark, table(lake, "segments"), ddl=gold_segments.SEGMENTS_DDL)
        segments, quality = gold_segments.transform(deps, previous, params=seg, from_ms=since, to_ms=until)
        segments = segments.cache()
        segments.count()  # materialise before the previous table is overwritten
        _overwrite(segments, table(lake, "segments"))
        _overwrite(quality, table(lake, "segment_quality"))
        _overwrite(gold_segments.allow_rules(_hours(deps, since, until), segments), table(lake, "allow_rules"))
        _overwrite(gold_segments.path_validation(deps, paths=insight.declared_paths, from_ms=since, to_ms=until),
                   table(lake, "path_validation"))
        segments.unpersist()
        lap("segments")

    if "forecast" in enabled:
        fc, summary = gold_forecast.transform(lk.read(spark, table(lake, "link_hourly")),
                                              params=insight.forecast, until_ms=until)
        _overwrite(fc, table(lake, "capacity_forecast"))
        _overwrite(summary, table(lake, "capacity_forecast_summary"))
        lap("forecast")
    return seconds


def rebuild(spark: SparkSession, lake: lk.Lake, *, config: JobsConfig,
            insight: InsightConfig | None = None) -> dict[str, float]:
    """Recompute every insight table over all hours in gold/app_dependencies (e.g. after a conf change)."""
    lo, hi = lk.read(spark, lake.app_dependencies).agg(F.min("hour_start_ms"), F.max("hour_start_ms")).first()
    if lo is None:
        raise ValueError(f"gold/app_dependencies under {lake.root} is empty: run `flowlake pipeline run` first")
    return run_gold(spark, lake, h0_ms=lo, h1_ms=hi + HOUR_MS, config=config, insight=insight)
