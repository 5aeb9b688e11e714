"""The gold stage: app dependencies and the insight tables for the whole hours a run recomputed.

Each aggregate is a pure transform in :mod:`flowlake.jobs.gold`; this module only reads and writes:

* hourly tables (app_dependencies, traffic_hourly, link_hourly, policy_breaches): the span's hours;
* daily tables (traffic_daily, crosszone_cost): the whole UTC days those hours touch,
  recomputed from the hourly tables;
* whole-lake tables (segments, segment_quality, allow_rules, path_validation,
  capacity_forecast, capacity_forecast_summary): small, rewritten from the latest
  ``lookback`` of the lake (ending at the latest hour in gold/app_dependencies,
  whatever window the run had), so re-running any window gives the same result.
  A run that leaves that window's hours as they were (an hour with no traffic)
  leaves the segments as they are (:func:`segments.is_current`).
  The forecasts end at the last UTC midnight (:func:`forecast.fit_until`): they are
  refitted by the first run past a midnight, or by a run that recomputed hours before it.
"""

from __future__ import annotations

from pyspark.sql import functions as F

from flowlake.jobs.gold import crosszone, dependencies, forecast, rollups, segments
from flowlake.jobs.quality import suites
from flowlake.jobs.run import io
from flowlake.jobs.run.context import RunContext
from flowlake.lake import (
    ALLOW_RULES, APP_DEPENDENCIES, CAPACITY_FORECAST, CAPACITY_FORECAST_SUMMARY, CROSSZONE_COST, FLOWS_ATTRIBUTED,
    LINK_HOURLY, PATH_VALIDATION, POLICY_BREACHES, SEGMENT_QUALITY, SEGMENTS, TRAFFIC_DAILY, TRAFFIC_HOURLY,
)
from flowlake.timeutil import DAY_MS, HOUR_MS, iso


def gold_stage(ctx: RunContext) -> None:
    """gold/app_dependencies (gated), then the insight tables; seconds per table in ``ctx.seconds``."""
    span = ctx.the_span
    silver = ctx.read_span(FLOWS_ATTRIBUTED, span.hours)
    deps = dependencies.transform(silver).persist()
    ctx.counts["gold"] = deps.count()  # computed here: the gate's seconds are then its checks' alone
    ctx.gate("gold", lambda: suites.gold_suite(deps, silver, end_ms=span.end_ms,
                                               freshness_max_lag_ms=ctx.quality.freshness_max_lag_ms))
    ctx.publish(deps, APP_DEPENDENCIES)
    deps.unpersist()
    insight_tables(ctx)


def insight_tables(ctx: RunContext) -> None:
    """Write the insight tables enabled in conf/insight.yaml for the span's hours."""
    import time

    span, insight = ctx.the_span, ctx.insight
    enabled = set(insight.tables)
    deps = ctx.read(APP_DEPENDENCIES)
    clock = [time.monotonic()]

    def lap(name: str) -> None:
        now = time.monotonic()
        ctx.seconds[f"gold_{name}"] = now - clock[0]
        clock[0] = now

    if "rollups" in enabled or "forecast" in enabled:
        # one pass over the span's silver rows feeds both hourly tables (few rows: pairs x intervals)
        pairs = rollups.pair_intervals(ctx.read_span(FLOWS_ATTRIBUTED, span.hours)).localCheckpoint()
        ctx.publish(rollups.link_hourly_of(pairs), LINK_HOURLY)
        if "rollups" in enabled:
            ctx.publish(rollups.traffic_hourly_of(pairs), TRAFFIC_HOURLY)
            hourly = ctx.read(TRAFFIC_HOURLY).where(span.where(TRAFFIC_HOURLY, span.days))
            ctx.publish(rollups.traffic_daily(hourly), TRAFFIC_DAILY)
        lap("rollups")

    if "crosszone" in enabled:
        ctx.publish(crosszone.transform(deps.where(span.where(APP_DEPENDENCIES, span.days)), prices=insight.prices),
                    CROSSZONE_COST)
        lap("crosszone")

    if "policy" in enabled:
        ctx.publish(segments.breaches(deps.where(span.where(APP_DEPENDENCIES)), rules=insight.policies,
                                      default_action=insight.default_action), POLICY_BREACHES)
        lap("policy")

    latest = deps.agg(F.max("hour_start_ms")).first()[0]
    if latest is None:
        return
    until = latest + HOUR_MS

    if "segments" in enabled:
        seg = insight.segmentation
        since = until - seg.lookback_days * DAY_MS
        published = ctx.read(SEGMENT_QUALITY) if io.exists(ctx.spark, ctx.lake, SEGMENT_QUALITY) else None
        if not segments.is_current(published, from_ms=since, to_ms=until, weight=seg.weight,
                                   recomputed_from_ms=span.from_ms):
            previous = ctx.read(SEGMENTS)
            found, quality = segments.transform(deps, previous, params=seg, from_ms=since, to_ms=until)
            found = found.localCheckpoint()  # materialised before the previous table is overwritten
            io.overwrite(found, ctx.lake, SEGMENTS)
            io.overwrite(quality, ctx.lake, SEGMENT_QUALITY)
            io.overwrite(segments.allow_rules(deps.where(span.where(APP_DEPENDENCIES, (since, until))), found),
                         ctx.lake, ALLOW_RULES)
            io.overwrite(segments.path_validation(deps, paths=insight.declared_paths, from_ms=since, to_ms=until),
                         ctx.lake, PATH_VALIDATION)
        lap("segments")

    if "forecast" in enabled:
        link_hourly = ctx.read(LINK_HOURLY)
        fit_until = forecast.fit_until(link_hourly, until_ms=until)
        published = ctx.read(CAPACITY_FORECAST_SUMMARY) if io.exists(ctx.spark, ctx.lake, CAPACITY_FORECAST_SUMMARY) else None
        if not forecast.is_current(published, fit_until_ms=fit_until, recomputed_from_ms=span.from_ms):
            fc, summary = forecast.transform(link_hourly, params=insight.forecast, until_ms=fit_until)
            io.overwrite(fc, ctx.lake, CAPACITY_FORECAST)
            io.overwrite(summary, ctx.lake, CAPACITY_FORECAST_SUMMARY)
            ctx.echo(f"  gold: capacity forecasts fitted on the hours before {iso(fit_until)}")
        lap("forecast")


def rebuild_insight(ctx: RunContext) -> None:
    """Recompute every insight table over all hours in gold/app_dependencies (e.g. after a conf change)."""
    from flowlake.jobs.run.span import Span

    lo, hi = ctx.read(APP_DEPENDENCIES).agg(F.min("hour_start_ms"), F.max("hour_start_ms")).first()
    if lo is None:
        raise ValueError(f"gold/app_dependencies under {ctx.lake.root} is empty: run `flowlake pipeline run` first")
    ctx.span = Span(start_ms=lo, end_ms=hi + HOUR_MS, from_ms=lo)
    insight_tables(ctx)
