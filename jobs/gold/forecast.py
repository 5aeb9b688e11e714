"""gold/capacity_forecast and gold/capacity_forecast_summary: 7-day hourly link forecasts.

For every az pair, every region pair and the ``top_app_edges`` heaviest app edges of
the last week, two hourly series from gold/link_hourly (``bytes_total`` and
``p95_bytes_per_s``) are forecast ``horizon_hours`` ahead with Prophet (daily and
weekly seasonality, trend, prediction intervals of ``interval_width``).

Each series is first backtested: the model is fitted without the last
``backtest_hours`` (a week; less when the history is short, never under
``min_backtest_hours``), and its MAPE and interval coverage on that held-out tail
are recorded beside the forecast (refitted on the whole history). A series with
fewer than ``min_history_hours + min_backtest_hours`` hours gets the status
``insufficient_history`` and no forecast rows.

Forecasts are fitted on whole UTC days (:func:`fit_until`): once a day, not on every
hourly run, and the same whatever windows the lake was built in.

The selected series are a small aggregate (links x hours) collected to the driver
to run Prophet; the flows themselves are never collected.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from flowlake.jobs.config import ForecastParams
from flowlake.timeutil import DAY_MS, HOUR_MS

METRICS = ("bytes_total", "p95_bytes_per_s")
STATUS_OK = "ok"
STATUS_INSUFFICIENT = "insufficient_history"
FORECAST_DDL = ("link_kind string, link string, metric string, hour_start_ms bigint, yhat double, "
                "yhat_lower double, yhat_upper double")
SUMMARY_DDL = ("link_kind string, link string, metric string, status string, history_hours int, "
               "history_from_ms bigint, history_to_ms bigint, backtest_hours int, backtest_mape double, "
               "backtest_interval_coverage double, horizon_hours int, interval_width double, message string, "
               "backtest_naive_mape double, fit_until_ms bigint")
WEEK_H, DAY_H = 168, 24  # seasonal naive: the last week of the training hours repeated (or the last day)


@dataclass
class SeriesForecast:
    status: str
    history_hours: int
    backtest_hours: int
    backtest_mape: float | None
    backtest_interval_coverage: float | None
    forecast: pd.DataFrame  # hour_start_ms, yhat, yhat_lower, yhat_upper (empty unless ok)
    message: str
    backtest_naive_mape: float | None = None  # the seasonal naive forecast's MAPE on the same held-out hours


def _quiet() -> None:
    """Prophet's INFO lines and its import-time 'Importing plotly failed' ERROR (we draw with
    matplotlib, never plotly) stay off the terminal; real warnings still show."""
    for name in ("cmdstanpy", "prophet"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)


def _fit_predict(train: pd.DataFrame, future_ms: np.ndarray, *, params: ForecastParams) -> pd.DataFrame:
    _quiet()  # before the import: prophet.plot logs at import time
    from prophet import Prophet

    model = Prophet(daily_seasonality=True, weekly_seasonality=True, yearly_seasonality=False,
                    seasonality_mode=params.seasonality_mode, interval_width=params.interval_width, uncertainty_samples=params.uncertainty_samples)
    model.fit(train)
    pred = model.predict(pd.DataFrame({"ds": pd.to_datetime(future_ms, unit="ms")}))
    return pd.DataFrame({
        "hour_start_ms": future_ms.astype("int64"),
        "yhat": np.clip(pred["yhat"].to_numpy(), 0, None),
        "yhat_lower": np.clip(pred["yhat_lower"].to_numpy(), 0, None),
        "yhat_upper": np.clip(pred["yhat_upper"].to_numpy(), 0, None),
    })


def mape(actual: np.ndarray, predicted: np.ndarray) -> float | None:
    """Mean absolute percentage error over the points whose actual value is positive."""
    keep = actual > 0
    if not keep.any():
        return None
    return float(np.mean(np.abs(predicted[keep] - actual[keep]) / actual[keep]))


def forecast_series(hours_ms: np.ndarray, values: np.ndarray, *, params: ForecastParams) -> SeriesForecast:
    """Backtest and forecast one hourly series (hours need not be contiguous: gaps are zero traffic)."""
    empty = pd.DataFrame(columns=["hour_start_ms", "yhat", "yhat_lower", "yhat_upper"])
    if len(hours_ms) == 0:
        return SeriesForecast(STATUS_INSUFFICIENT, 0, 0, None, None, empty, "no history")
    first, last = int(hours_ms.min()), int(hours_ms.max())
    grid = np.arange(first, last + HOUR_MS, HOUR_MS, dtype="int64")
    series = pd.Series(values, index=hours_ms).groupby(level=0).sum().reindex(grid, fill_value=0.0)
    n = len(grid)
    need = params.min_history_hours + params.min_backtest_hours
    if n < need:
        return SeriesForecast(STATUS_INSUFFICIENT, n, 0, None, None, empty,
                              f"{n} hour(s) of history; a forecast needs at least {need}")
    holdout = min(params.backtest_hours, ((n - params.min_history_hours) // 24) * 24)
    holdout = max(holdout, params.min_backtest_hours)
    frame = pd.DataFrame({"ds": pd.to_datetime(grid, unit="ms"), "y": series.to_numpy(dtype="float64")})
    back = _fit_predict(frame.iloc[: n - holdout], grid[n - holdout:], params=params)
    actual = frame["y"].to_numpy()[n - holdout:]
    err = mape(actual, back["yhat"].to_numpy())
    naive = mape(actual, seasonal_naive(frame["y"].to_numpy()[: n - holdout], holdout))
    inside = (actual >= back["yhat_lower"].to_numpy()) & (actual <= back["yhat_upper"].to_numpy())
    future = np.arange(last + HOUR_MS, last + HOUR_MS * (params.horizon_hours + 1), HOUR_MS, dtype="int64")
    fc = _fit_predict(frame, future, params=params)
    return SeriesForecast(STATUS_OK, n, holdout, err, float(inside.mean()), fc,
                          f"backtest on the last {holdout} h of {n} h", naive)


def seasonal_naive(train: np.ndarray, hours: int) -> np.ndarray:
    """The baseline a forecast must beat: the training series' last week repeated over ``hours``
    (its last day when it holds less than a week)."""
    season = WEEK_H if len(train) >= WEEK_H else DAY_H
    return np.resize(train[-season:], hours)


def select_series(link_hourly: DataFrame, *, params: ForecastParams, until_ms: int) -> DataFrame:
    """The rows of the links to forecast: all az and region pairs, the heaviest app edges of the last week."""
    since = until_ms - params.history_days * 24 * HOUR_MS
    recent = link_hourly.where((F.col("hour_start_ms") >= since) & (F.col("hour_start_ms") < until_ms))
    week = recent.where(F.col("hour_start_ms") >= until_ms - 168 * HOUR_MS).where(
        F.col("link_kind") == "app_edge").groupBy("link").agg(F.sum("bytes_total").alias("b"))
    rank = F.row_number().over(Window.orderBy(F.col("b").desc(), F.col("link")))
    top = week.withColumn("r", rank).where(F.col("r") <= params.top_app_edges).select("link",
                                                                                       F.lit(True).alias("_top"))
    return recent.join(top, "link", "left").where(
        (F.col("link_kind") != "app_edge") | F.col("_top").isNotNull()
    ).select("link_kind", "link", "hour_start_ms", *METRICS)


def fit_until(link_hourly: DataFrame, *, until_ms: int) -> int:
    """Where the forecasts' history ends: the last UTC midnight at or before ``until_ms``
    (the lake's latest hour + 1), so they are refitted once a day; a lake that has no hour
    before that midnight yet (younger than its first day) uses every hour up to ``until_ms``."""
    midnight = until_ms - until_ms % DAY_MS
    if link_hourly.where(F.col("hour_start_ms") < midnight).limit(1).count() == 0:
        return until_ms
    return midnight


def is_current(summary: DataFrame | None, *, fit_until_ms: int, recomputed_from_ms: int) -> bool:
    """Whether the published forecasts need no refit: they were fitted on the hours before
    ``fit_until_ms`` and this run recomputed no hour before it (so those hours did not change).
    A summary from before ``fit_until_ms`` was recorded (or none) is never current."""
    if summary is None or "fit_until_ms" not in summary.columns or recomputed_from_ms < fit_until_ms:
        return False
    return summary.agg(F.max("fit_until_ms")).first()[0] == fit_until_ms


def transform(link_hourly: DataFrame, *, params: ForecastParams, until_ms: int) -> tuple[DataFrame, DataFrame]:
    """(gold/capacity_forecast, gold/capacity_forecast_summary) from gold/link_hourly before ``until_ms``."""
    spark: SparkSession = link_hourly.sparkSession
    rows = select_series(link_hourly, params=params, until_ms=until_ms).toPandas()  # small: links x hours
    forecasts, summaries = [], []
    for (kind, link), group in rows.groupby(["link_kind", "link"], sort=True):
        for metric in METRICS:
            res = forecast_series(group["hour_start_ms"].to_numpy("int64"),
                                  group[metric].astype("float64").to_numpy(), params=params)
            first = int(group["hour_start_ms"].min())
            summaries.append((kind, link, metric, res.status, res.history_hours, first,
                              first + res.history_hours * HOUR_MS, res.backtest_hours, res.backtest_mape,
                              res.backtest_interval_coverage, params.horizon_hours if res.status == STATUS_OK else 0,
                              params.interval_width, res.message, res.backtest_naive_mape, until_ms))
            for r in res.forecast.itertuples(index=False):
                forecasts.append((kind, link, metric, int(r.hour_start_ms), float(r.yhat), float(r.yhat_lower),
                                  float(r.yhat_upper)))
    return spark.createDataFrame(forecasts, FORECAST_DDL), spark.createDataFrame(summaries, SUMMARY_DDL)
