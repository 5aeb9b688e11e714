"""gold_forecast: Prophet forecasts with a backtest, and an honest 'insufficient history' state.

Bound stated in docs/insight.md: on an hourly series with a daily cycle (+-50 %),
a weekend dip, growth and 5 % noise, the held-out-week MAPE stays under 10 %.
"""

from __future__ import annotations

import numpy as np
import pytest

from flowlake.jobs.gold import forecast as gf
from flowlake.jobs.config import ForecastParams
from tests.gold.helpers import HOUR, T0

PARAMS = ForecastParams(uncertainty_samples=100)
MAPE_BOUND = 0.10


def seasonal(days: int, *, seed: int = 0, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Hourly traffic: daily cycle peaking at 20:00 UTC, 15 % weekend dip, 2 %/day growth, noise."""
    hours = T0 + np.arange(days * 24, dtype="int64") * HOUR
    h = (hours // HOUR) % 24
    weekday = ((hours // (24 * HOUR)) + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
    level = 1e9 * (1 + 0.5 * np.cos(2 * np.pi * (h - 20) / 24)) * np.where(weekday >= 5, 0.85, 1.0)
    level *= 1.02 ** (np.arange(len(hours)) / 24)
    rng = np.random.default_rng(seed)
    return hours, level * (1 + rng.normal(0, noise, len(hours)))


def test_seasonal_series_backtest_mape_within_bound_and_week_ahead_forecast():
    hours, values = seasonal(21)
    res = gf.forecast_series(hours, values, params=PARAMS)
    assert res.status == gf.STATUS_OK
    assert res.backtest_hours == 168
    assert res.backtest_mape < MAPE_BOUND
    assert res.backtest_interval_coverage > 0.7
    fc = res.forecast
    assert len(fc) == 168 and fc.hour_start_ms.iloc[0] == hours[-1] + HOUR
    assert (fc.yhat_lower <= fc.yhat).all() and (fc.yhat <= fc.yhat_upper).all()
    # the forecast keeps the daily cycle: 20:00 UTC is above 08:00 UTC on the same weekday
    hour_of_day = (fc.hour_start_ms // HOUR) % 24
    assert fc.yhat[hour_of_day == 20].mean() > 1.5 * fc.yhat[hour_of_day == 8].mean()


def test_seasonal_naive_repeats_the_last_week_or_day_of_the_training_hours():
    train = np.arange(200.0)
    assert (gf.seasonal_naive(train, 200) == np.concatenate([train[32:], train[32:64]])).all()
    assert (gf.seasonal_naive(train[:100], 30) == np.concatenate([train[76:100], train[76:82]])).all()


def test_backtest_reports_the_seasonal_naive_baseline_on_the_same_hours():
    """A 2 %/day trend over a week: the model (which fits it) beats last week repeated, and the
    summary says by how much; on the series that breaks, both fail."""
    hours, values = seasonal(21)
    res = gf.forecast_series(hours, values, params=PARAMS)
    assert res.backtest_naive_mape == pytest.approx(gf.mape(values[-168:], values[-336:-168]))
    assert res.backtest_naive_mape > 0.1 > res.backtest_mape


def test_backtest_detects_a_bad_fit_on_a_series_that_breaks():
    hours, values = seasonal(21)
    values[-168:] *= 3  # traffic triples in the held-out week: the backtest must say so
    res = gf.forecast_series(hours, values, params=PARAMS)
    assert res.backtest_mape > 0.5


def test_short_history_is_insufficient_not_a_fake_forecast():
    hours, values = seasonal(2)
    res = gf.forecast_series(hours, values, params=PARAMS)
    assert res.status == gf.STATUS_INSUFFICIENT
    assert res.forecast.empty and res.backtest_mape is None
    assert "needs at least 96" in res.message and res.history_hours == 48


def test_medium_history_backtests_on_whole_days_shorter_than_a_week():
    hours, values = seasonal(6)  # 144 h: 72 h minimum training leaves 72 h (3 days) held out
    res = gf.forecast_series(hours, values, params=PARAMS)
    assert (res.status, res.backtest_hours) == (gf.STATUS_OK, 72)


def test_missing_hours_are_zero_traffic_not_dropped():
    hours, values = seasonal(5)
    keep = np.ones(len(hours), bool)
    keep[30:40] = False
    res = gf.forecast_series(hours[keep], values[keep], params=PARAMS)
    assert res.history_hours == 120


def test_mape_ignores_zero_actuals():
    assert gf.mape(np.array([0.0, 100.0]), np.array([5.0, 110.0])) == pytest.approx(0.1)
    assert gf.mape(np.array([0.0]), np.array([1.0])) is None


def test_transform_forecasts_pairs_and_top_edges_only(spark):
    hours, values = seasonal(5, noise=0.02)
    rows = []
    for kind, link, scale in [("az_pair", "a -> b", 1.0), ("app_edge", "x -> y", 1.0), ("app_edge", "x -> z", 0.1)]:
        rows += [(kind, link, int(h), int(v * scale), float(v * scale / 3600)) for h, v in zip(hours, values)]
    rows.append(("region_pair", "r1 -> r2", int(hours[-1]), 10, 0.01))  # one hour only
    link_hourly = spark.createDataFrame(
        rows, "link_kind string, link string, hour_start_ms bigint, bytes_total bigint, p95_bytes_per_s double")
    params = ForecastParams(uncertainty_samples=50, top_app_edges=1)
    fc, summary = gf.transform(link_hourly, params=params, until_ms=int(hours[-1]) + HOUR)
    status = {(r.link, r.metric): r.status for r in summary.collect()}
    assert status == {("a -> b", "bytes_total"): "ok", ("a -> b", "p95_bytes_per_s"): "ok",
                      ("x -> y", "bytes_total"): "ok", ("x -> y", "p95_bytes_per_s"): "ok",
                      ("r1 -> r2", "bytes_total"): "insufficient_history",
                      ("r1 -> r2", "p95_bytes_per_s"): "insufficient_history"}
    assert fc.count() == 4 * 168
    assert fc.where("link = 'r1 -> r2'").count() == 0


LINK_DDL = "link_kind string, link string, hour_start_ms bigint, bytes_total bigint, p95_bytes_per_s double"
DAY = 24 * HOUR


def test_fit_until_is_the_last_utc_midnight_once_the_lake_has_an_hour_before_it(spark):
    # T0 is a midnight; the lake's latest hour is 03:00 of the next day
    older = spark.createDataFrame([("az_pair", "a -> b", T0 + 22 * HOUR, 1, 1.0),
                                   ("az_pair", "a -> b", T0 + DAY + 3 * HOUR, 1, 1.0)], LINK_DDL)
    assert gf.fit_until(older, until_ms=T0 + DAY + 4 * HOUR) == T0 + DAY
    # exactly at a midnight: that midnight (the last whole day is the one just ended)
    assert gf.fit_until(older, until_ms=T0 + DAY) == T0 + DAY
    # a lake younger than its first midnight: every hour it has, refitted each run
    young = spark.createDataFrame([("az_pair", "a -> b", T0 + DAY + h * HOUR, 1, 1.0) for h in range(3)], LINK_DDL)
    assert gf.fit_until(young, until_ms=T0 + DAY + 3 * HOUR) == T0 + DAY + 3 * HOUR


def test_is_current_only_for_the_same_boundary_when_no_hour_before_it_was_recomputed(spark):
    midnight = T0 + DAY
    summary = spark.createDataFrame([("az_pair", "a -> b", "bytes_total", "ok", midnight)],
                                    "link_kind string, link string, metric string, status string, fit_until_ms bigint")
    assert gf.is_current(summary, fit_until_ms=midnight, recomputed_from_ms=midnight + 5 * HOUR)
    assert gf.is_current(summary, fit_until_ms=midnight, recomputed_from_ms=midnight)
    # late data: this run recomputed an hour the published fit used
    assert not gf.is_current(summary, fit_until_ms=midnight, recomputed_from_ms=midnight - HOUR)
    # a new day ended since the published fit
    assert not gf.is_current(summary, fit_until_ms=midnight + DAY, recomputed_from_ms=midnight + DAY)
    # nothing published yet, or a summary written before fit_until_ms was recorded
    assert not gf.is_current(None, fit_until_ms=midnight, recomputed_from_ms=midnight)
    assert not gf.is_current(summary.drop("fit_until_ms"), fit_until_ms=midnight, recomputed_from_ms=midnight)


def test_summary_records_the_boundary_it_was_fitted_on(spark):
    link_hourly = spark.createDataFrame([("az_pair", "a -> b", T0 + h * HOUR, 5, 1.0) for h in range(30)], LINK_DDL)
    fc, summary = gf.transform(link_hourly, params=PARAMS, until_ms=T0 + DAY)
    rows = summary.collect()
    assert {r.fit_until_ms for r in rows} == {T0 + DAY}
    # only the hours before the boundary are history
    assert {r.history_to_ms for r in rows} == {T0 + DAY} and {r.history_hours for r in rows} == {24}
