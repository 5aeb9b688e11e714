"""How late the tracker is: its lag behind sidecar-proven holding starts, learned per run.

For addresses held by workloads with a sidecar, the first heartbeat shows when
a holding really began; the tracker's assign for the same holding shows when it
said so. A high quantile of that lag, within a floor and a cap, is the margin
event ranges are cut by (:mod:`flowlake.jobs.silver.event_ranges`); with too
few pairs the config's ``event_lag_margin_ms`` is used. Each run publishes the
estimate in ``_meta/tracker_lag``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowlake.contracts import ACTION_ASSIGN
from flowlake.jobs.config import AttributionParams
from flowlake.jobs.silver.event_ranges import dedup_events, lifetime_quantile
from flowlake.jobs.silver.ownership import heartbeat_evidence

MARGIN_FLEET = "fleet"
MARGIN_FALLBACK = "fallback"


def lag_pairs(flows: DataFrame, events: DataFrame, *, params: AttributionParams) -> DataFrame:
    """(ip, workload, instance_id, assign_ms, first_heartbeat_ms, lag_ms) per sidecar holding that began
    inside the evidence of ``flows``.

    The lag that matters is how long before its assign's event_ms a new holder
    can already have traffic: for holders with a sidecar that is the assign's
    event_ms minus the holding's first heartbeat (never below 0). A holding
    counts only if its assign lies at least the cap after the evidence starts
    (so the holding began inside it) and before the evidence ends.
    """
    cap = params.lag_margin_cap_ms
    hb = heartbeat_evidence(flows).groupBy("ip", "workload", "instance_id").agg(
        F.min("first_ms").alias("first_heartbeat_ms"))
    bounds = flows.agg(F.min("first_start_ms").alias("_lo"), F.max("first_start_ms").alias("_hi"))
    assigns = dedup_events(events).where(F.col("action") == ACTION_ASSIGN).groupBy(
        "ip", "workload", "instance_id").agg(F.min("event_ms").alias("assign_ms"))
    return (
        hb.join(assigns, ["ip", "workload", "instance_id"]).crossJoin(F.broadcast(bounds))
        .where((F.col("assign_ms") - cap >= F.col("_lo")) & (F.col("assign_ms") <= F.col("_hi")))
        .select("ip", "workload", "instance_id", "assign_ms", "first_heartbeat_ms",
                F.greatest(F.col("assign_ms") - F.col("first_heartbeat_ms"), F.lit(0)).alias("lag_ms"))
    )


@dataclass(frozen=True)
class TrackerLag:
    """How late the tracker is, as learned from one run's sidecar holdings, and the margin used."""

    pairs: int
    quantile: float
    lag_quantile_ms: int | None  # None: no pair
    lag_max_ms: int | None
    margin_ms: int
    margin_source: str  # "fleet" (learned) or "fallback" (too few pairs: event_lag_margin_ms)
    lifetime_quantile: float
    lifetime_quantile_ms: int | None  # stale-range guard bound (None: no complete holding seen)

    def row(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def estimate_lag(pairs: DataFrame, *, params: AttributionParams, lifetime_ms: int | None = None) -> TrackerLag:
    """The margin from :func:`lag_pairs`: the quantile within [floor, cap], or the fallback below min pairs."""
    q = params.lag_quantile
    got = pairs.agg(F.count(F.lit(1)).alias("n"), F.expr(f"percentile(lag_ms, {q})").alias("q"),
                    F.max("lag_ms").alias("mx")).first()
    n = int(got["n"]) if got else 0
    lag_q = None if not n or got["q"] is None else int(round(got["q"]))
    if n >= params.lag_min_pairs and lag_q is not None:
        margin, source = min(max(lag_q, params.lag_margin_floor_ms), params.lag_margin_cap_ms), MARGIN_FLEET
    else:
        margin, source = params.event_lag_margin_ms, MARGIN_FALLBACK
    return TrackerLag(pairs=n, quantile=q, lag_quantile_ms=lag_q, lag_max_ms=None if not n else int(got["mx"]),
                      margin_ms=margin, margin_source=source, lifetime_quantile=params.stale_lifetime_quantile,
                      lifetime_quantile_ms=lifetime_ms)


def tracker_lag(flows: DataFrame, events: DataFrame, *, params: AttributionParams,
                lifetime_events: DataFrame | None = None) -> TrackerLag:
    """The tracker's lag and the margin to use, from the heartbeat evidence and the events read.

    ``lifetime_events`` (default ``events``) are the events holding lifetimes are measured on: an
    incremental run passes its events plus the holdings open at its start as assigns, so that holdings
    longer than one span still count; those seeded assigns are not real events and give no lag pair.
    """
    life = lifetime_quantile(events if lifetime_events is None else lifetime_events,
                             quantile=params.stale_lifetime_quantile)
    return estimate_lag(lag_pairs(flows, events, params=params), params=params, lifetime_ms=life)
