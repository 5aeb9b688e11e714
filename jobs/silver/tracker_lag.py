"""How late the tracker is, learned per UTC hour from a fixed lookback of sidecar-proven holding starts.

For addresses held by workloads with a sidecar, the first heartbeat shows when
a holding really began; the tracker's assign for the same holding shows when it
said so. A high quantile of that lag, within a floor and a cap, is the margin
event ranges are cut by (:mod:`flowlake.jobs.silver.event_ranges`); with too
few pairs the config's ``event_lag_margin_ms`` is used.

Window invariance: everything learned for the UTC hour ``H`` comes from the data
of ``[H - learn_lookback_hours, H + 1h)`` only, so a run over many hours and
hourly runs over the same hours learn the same values (given the same data).
Each lag pair is a function of the data around its own assign (see
:func:`lag_pairs`) and counts in hour ``H`` if it is known (all its data seen)
within that window; each holding lifetime counts if its assign and its own
unassign lie in it. Lifetimes longer than the lookback cannot be seen, so a
holding assigned in the window and still open at its end counts as "at least
this old": when more of those outlive the lifetime quantile than the quantile
allows, the window cannot bound lifetimes and the hour has no bound (see
:func:`lifetime_bound`).
The ownership stage publishes one row per hour in ``_meta/tracker_lag``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowlake.contracts import ACTION_ASSIGN, ACTION_UNASSIGN
from flowlake.jobs.config import AttributionParams
from flowlake.jobs.silver.event_ranges import Margins, text_or_none, dedup_events, per_ip_bucket
from flowlake.timeutil import HOUR_MS, floor_to

MARGIN_FLEET = "fleet"
MARGIN_FALLBACK = "fallback"
HOUR_DDL = "hour_start_ms bigint"


def lookback_ms(params: AttributionParams) -> int:
    return params.learn_lookback_hours * HOUR_MS


@dataclass(frozen=True)
class LearnReads:
    """What a run over [from_ms, end_ms) learns: the hours it needs margins for, and the bronze it reads."""

    hours: list[int]  # hour starts (epoch ms), ascending
    flows: tuple[int, int]  # [lo, hi) on first_start_ms of the heartbeats lag pairs use
    events: tuple[int, int]  # [lo, hi) on event_ms


def learn_reads(*, from_ms: int, end_ms: int, params: AttributionParams) -> LearnReads:
    """The hours whose margins a span's cuts can use (an event at t uses the hour of t - cap, see
    :class:`~flowlake.jobs.silver.event_ranges.Margins`: from the hour of from_ms - cap to the span's last
    hour) and the data their windows need. Bounded by the lookback, not the lake's age."""
    cap, gap = params.lag_margin_cap_ms, params.heartbeat_max_gap_ms
    first = floor_to(from_ms - cap, HOUR_MS)
    last = floor_to(end_ms - 1, HOUR_MS)
    hours = list(range(first, last + HOUR_MS, HOUR_MS))
    lo = first - lookback_ms(params)
    # a pair whose assign is at a is known at a + cap and uses heartbeats of [a - cap - gap, a + cap)
    return LearnReads(hours=hours, flows=(lo - 2 * cap - gap, last + HOUR_MS), events=(lo - cap, last + HOUR_MS))


def lag_pairs(flows: DataFrame, events: DataFrame, *, params: AttributionParams) -> DataFrame:
    """(ip, workload, instance_id, assign_ms, first_heartbeat_ms, lag_ms, known_ms) per assign of a holder
    whose sidecar reports on the address near it.

    The lag that matters is how long before its assign's event_ms a new holder
    can already have traffic: the assign's event_ms ``a`` minus the holder's
    first heartbeat on the address within ``[a - cap - heartbeat_max_gap_ms, a + cap)`` (never below 0).
    A pair uses only the data of that range, so it is the same whatever a run
    read around it; it is ``known`` at ``a + cap``. A holding that began
    earlier (or an assign re-sent for a holder that kept the address, with a
    new event_ms) counts as a lag of at least the cap, which caps the margin anyway.
    """
    cap, gap = params.lag_margin_cap_ms, params.heartbeat_max_gap_ms
    holder = ["ip", "workload", "instance_id"]
    assigns = (dedup_events(events).where(F.col("action") == ACTION_ASSIGN)
               .select(*holder, F.col("event_ms").alias("assign_ms")).distinct())
    hb = flows.where(F.col("local_workload").isNotNull()).select(
        F.col("local_ip").alias("ip"), F.col("local_workload").alias("workload"), "instance_id",
        F.col("first_start_ms").alias("_hb_ms"))
    near = (F.col("_hb_ms") >= F.col("assign_ms") - cap - gap) & (F.col("_hb_ms") < F.col("assign_ms") + cap)
    first = assigns.join(hb, holder).where(near).groupBy(*holder, "assign_ms").agg(
        F.min("_hb_ms").alias("first_heartbeat_ms"))
    return first.select(*holder, "assign_ms", "first_heartbeat_ms",
                        F.greatest(F.col("assign_ms") - F.col("first_heartbeat_ms"), F.lit(0)).alias("lag_ms"),
                        (F.col("assign_ms") + cap).alias("known_ms"))


def holding_lifetimes(events: pd.DataFrame, *, open_until_ms: int | None = None) -> list[int]:
    """Lifetimes (own unassign - assign, ms) of one ip's holdings that the events open and close.

    With ``open_until_ms``, holdings still open then follow as negative ages (``assign - open_until_ms``):
    each lived at least that long (a right-censored lifetime)."""
    order = events.sort_values(["event_ms", "published_ms"], kind="mergesort")
    opened: dict[str | None, int] = {}
    out = []
    for ev in order.itertuples(index=False):
        inst = text_or_none(ev.instance_id)
        if ev.action == ACTION_ASSIGN and inst not in opened:
            opened[inst] = int(ev.event_ms)
        elif ev.action == ACTION_UNASSIGN and inst in opened:
            out.append(int(ev.event_ms) - opened.pop(inst))
    if open_until_ms is not None:
        out += [at - open_until_ms for at in opened.values() if at < open_until_ms]
    return out


def lifetime_bound(lifetimes: np.ndarray, *, quantile: float) -> int | None:
    """The ``quantile`` of complete lifetimes (>= 0), or None when the window cannot tell: no complete
    lifetime, or more open holdings (negative ages, see :func:`holding_lifetimes`) already older than
    it than the quantile leaves room for (a 0.99 bound over 100 holdings allows one to be older; over
    fewer, none)."""
    done, ages = lifetimes[lifetimes >= 0], -lifetimes[lifetimes < 0]
    if not len(done):
        return None
    bound = float(np.quantile(done, quantile))  # linear interpolation, as Spark's percentile
    if (ages > bound).sum() > (1 - quantile) * len(lifetimes):
        return None
    return int(round(bound))


@dataclass(frozen=True)
class TrackerLag:
    """How late the tracker is over one hour's lookback, and the margin that hour's cuts use."""

    hour_start_ms: int
    pairs: int
    quantile: float
    lag_quantile_ms: int | None  # None: no pair
    lag_max_ms: int | None
    margin_ms: int
    margin_source: str  # "fleet" (learned) or "fallback" (too few pairs: event_lag_margin_ms)
    lifetime_quantile: float
    lifetime_quantile_ms: int | None  # stale-range guard bound (None: the window cannot bound lifetimes)

    def row(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def estimate_lag(*, hour_start_ms: int, pairs: int, lag_quantile_ms: int | None, lag_max_ms: int | None,
                 lifetime_ms: int | None, params: AttributionParams) -> TrackerLag:
    """The margin of one hour: the lag quantile within [floor, cap], or the fallback below min pairs."""
    if pairs >= params.lag_min_pairs and lag_quantile_ms is not None:
        margin = min(max(lag_quantile_ms, params.lag_margin_floor_ms), params.lag_margin_cap_ms)
        source = MARGIN_FLEET
    else:
        margin, source = params.event_lag_margin_ms, MARGIN_FALLBACK
    return TrackerLag(hour_start_ms=hour_start_ms, pairs=pairs, quantile=params.lag_quantile,
                      lag_quantile_ms=lag_quantile_ms, lag_max_ms=lag_max_ms, margin_ms=margin, margin_source=source,
                      lifetime_quantile=params.stale_lifetime_quantile, lifetime_quantile_ms=lifetime_ms)


def lag_summary(hours: list[TrackerLag]) -> str:
    """One line for the span's hourly lag margins, however many hours: each margin, its source,
    how many hours it held and the pairs behind it ("10000 ms (fleet, 34-70 pairs) in 2 of 2 h")."""
    groups: dict[tuple[int, str], list[int]] = {}
    for t in hours:
        groups.setdefault((t.margin_ms, t.margin_source), []).append(t.pairs)
    parts = [f"{ms} ms ({source}, {min(p)}{'' if min(p) == max(p) else f'-{max(p)}'} pair(s)) in {len(p)} of "
             f"{len(hours)} h" for (ms, source), p in sorted(groups.items(), key=lambda g: -len(g[1]))]
    return "tracker lag margin " + "; ".join(parts)


def _in_windows(df: DataFrame, hours: DataFrame, *, at: str, lookback: int) -> DataFrame:
    """``df`` rows once per hour H of ``hours`` (column hour_start_ms) whose window [H - lookback, H + 1h)
    holds the row's ``at``."""
    h = F.col("hour_start_ms")
    return df.crossJoin(F.broadcast(hours)).where((F.col(at) >= h - lookback) & (F.col(at) < h + HOUR_MS))


def pair_reads(*, hour_from_ms: int, hour_to_ms: int, params: AttributionParams) -> LearnReads:
    """What computing the lag pairs known within [hour_from_ms, hour_to_ms) reads: their assigns (event_ms
    in [from - cap, to - cap)) and the heartbeats near them (first_start_ms in [from - 2 cap - gap, to))."""
    cap, gap = params.lag_margin_cap_ms, params.heartbeat_max_gap_ms
    hours = list(range(hour_from_ms, hour_to_ms, HOUR_MS))
    return LearnReads(hours=hours, flows=(hour_from_ms - 2 * cap - gap, hour_to_ms),
                      events=(hour_from_ms - cap, hour_to_ms - cap))


def pairs_by_hour(flows: DataFrame, events: DataFrame, *, params: AttributionParams, hour_from_ms: int,
                  hour_to_ms: int) -> DataFrame:
    """The lag pairs (TRACKER_LAG_PAIRS' DDL) known within [hour_from_ms, hour_to_ms), keyed by that hour.

    ``flows`` and ``events`` must hold what :func:`pair_reads` names. Each pair depends only on the data
    around its own assign, so the pairs of an hour are the same whichever run computed them: a run keeps
    its span's hours in ``silver/tracker_lag_pairs`` and later runs read their lookback from there."""
    pairs = lag_pairs(flows, events, params=params)
    known = F.col("known_ms")
    return pairs.where((known >= hour_from_ms) & (known < hour_to_ms)).select(
        (F.floor(known / HOUR_MS) * HOUR_MS).cast("bigint").alias("hour_start_ms"), "ip", "workload", "instance_id",
        "assign_ms", "first_heartbeat_ms", "lag_ms", "known_ms")


def hourly_lag(flows: DataFrame, events: DataFrame, *, params: AttributionParams,
               hours: list[int]) -> dict[int, TrackerLag]:
    """The tracker's lag and the margin per hour of ``hours``, each from its window's data only.

    ``flows`` (bronze rows) and ``events`` must hold what :func:`learn_reads` names for those hours
    (more is harmless: each hour filters its window)."""
    return hourly_lag_from_pairs(lag_pairs(flows, events, params=params), events, params=params, hours=hours)


def hourly_lag_from_pairs(pairs: DataFrame, events: DataFrame, *, params: AttributionParams,
                          hours: list[int]) -> dict[int, TrackerLag]:
    """:func:`hourly_lag` from lag pairs already computed (e.g. kept per hour in silver/tracker_lag_pairs):
    ``pairs`` must hold every pair known within the hours' windows, ``events`` what :func:`learn_reads`
    names (for the holding lifetimes)."""
    spark = events.sparkSession
    lookback, q = lookback_ms(params), params.lag_quantile
    hour_df = spark.createDataFrame([(h,) for h in hours], HOUR_DDL)
    # a pair counts in hour H when it is known (a + cap) within [H - L, H + 1h): its data lie before that
    pairs = _in_windows(pairs.drop("hour_start_ms"), hour_df, at="known_ms", lookback=lookback)
    lag = {r["hour_start_ms"]: r for r in pairs.groupBy("hour_start_ms").agg(
        F.count(F.lit(1)).alias("n"), F.expr(f"percentile(lag_ms, {q})").alias("q"),
        F.max("lag_ms").alias("mx")).collect()}

    def per_bucket(pdf: pd.DataFrame) -> pd.DataFrame:
        got = [(h, x) for (h, _), g in pdf.groupby(["hour_start_ms", "ip"], sort=False)
               for x in holding_lifetimes(g, open_until_ms=int(h) + HOUR_MS)]
        return pd.DataFrame(got, columns=["hour_start_ms", "lifetime_ms"], dtype="int64")

    def per_hour(pdf: pd.DataFrame) -> pd.DataFrame:
        bound = lifetime_bound(pdf["lifetime_ms"].to_numpy(), quantile=params.stale_lifetime_quantile)
        return pd.DataFrame({"hour_start_ms": [int(pdf["hour_start_ms"].iloc[0])], "q": [bound]})

    windowed = _in_windows(dedup_events(events), hour_df, at="event_ms", lookback=lookback)
    lifetimes = per_ip_bucket(windowed, per_bucket, "hour_start_ms bigint, lifetime_ms bigint")
    life = {r["hour_start_ms"]: r["q"] for r in lifetimes.groupBy("hour_start_ms").applyInPandas(
        per_hour, "hour_start_ms bigint, q bigint").collect()}
    out = {}
    for h in hours:
        got = lag.get(h)
        n = int(got["n"]) if got else 0
        lag_q = None if not n or got["q"] is None else int(round(got["q"]))
        out[h] = estimate_lag(hour_start_ms=h, pairs=n, lag_quantile_ms=lag_q,
                              lag_max_ms=int(got["mx"]) if n else None,
                              lifetime_ms=None if life.get(h) is None else int(life[h]), params=params)
    return out


def margins(hourly: dict[int, TrackerLag], *, params: AttributionParams) -> Margins:
    """The per-hour margins and stale bounds event ranges are cut by (an event at t: the hour of t - cap)."""
    return Margins(by_hour={h: (t.margin_ms, t.lifetime_quantile_ms) for h, t in hourly.items()},
                   key_offset_ms=params.lag_margin_cap_ms)
