"""Event ranges: who held each IP according to the tracker's assign/unassign events.

Per IP, in event-time order (never arrival order), with duplicates removed
(see :mod:`flowlake.jobs.silver.ownership` for the rules and the lag margin).
"""

from __future__ import annotations

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowlake.contracts import ACTION_ASSIGN, ACTION_UNASSIGN
from flowlake.jobs.config import AttributionParams
from flowlake.lake import IP_EVENT_HOLDINGS

EVENT_BUCKETS = 16
EVENT_RANGE_DDL = IP_EVENT_HOLDINGS.ddl


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _range_frame(rows: list[dict]) -> pd.DataFrame:
    cols = [c.split()[0] for c in EVENT_RANGE_DDL.split(", ")]
    return pd.DataFrame(rows, columns=cols).astype({"valid_from_ms": "int64", "valid_to_ms": "Int64"})


def event_ranges_for_ip(events: pd.DataFrame, *, lag_margin_ms: int) -> pd.DataFrame:
    """Holding ranges of one ip from its (deduplicated) events; pure Python, unit-testable.

    ``events`` has the contract's event columns. Returns EVENT_RANGE_DDL rows
    with valid_to_ms = None for a holding still open after the last event.
    """
    return _range_frame(event_range_rows(events, lag_margin_ms=lag_margin_ms))


def event_range_rows(events: pd.DataFrame, *, lag_margin_ms: int) -> list[dict]:
    """The rows of :func:`event_ranges_for_ip` as dicts."""
    order = events.assign(_unassign_first=(events["action"] != ACTION_UNASSIGN).astype(int))
    order = order.sort_values(["event_ms", "_unassign_first", "published_ms"], kind="mergesort")
    out: list[dict] = []
    current: dict | None = None

    def close(at_ms: int) -> None:
        end = at_ms - lag_margin_ms
        if current is not None and end > current["valid_from_ms"]:
            out.append({**current, "valid_to_ms": end})

    for ev in order.itertuples(index=False):
        inst, workload = _text(ev.instance_id), _text(ev.workload)
        if ev.action == ACTION_ASSIGN:
            if workload is None:
                continue  # an assign must name a workload; ingest quarantines such rows
            if current is not None and current["workload"] == workload and current["instance_id"] == inst:
                continue  # the same holder again (refresh or duplicate)
            if current is not None:
                close(ev.event_ms)
            current = {
                "ip": ev.ip, "workload": workload, "instance_id": inst, "kind": _text(ev.kind),
                "region": _text(ev.region), "availability_zone": _text(ev.availability_zone),
                "valid_from_ms": int(ev.event_ms),
            }
        elif ev.action == ACTION_UNASSIGN and current is not None:
            if inst is None or current["instance_id"] is None or inst == current["instance_id"]:
                close(ev.event_ms)
                current = None
            # else: the unassign of an earlier holder, arriving after the next assign: ignored
    if current is not None:
        out.append({**current, "valid_to_ms": None})
    return out


def event_ranges(events: DataFrame, *, params: AttributionParams) -> DataFrame:
    """Holding ranges from assignment events (see module doc)."""
    deduped = events.dropDuplicates(["ip", "action", "event_ms", "workload", "instance_id"])
    margin = params.event_lag_margin_ms

    def per_bucket(pdf: pd.DataFrame) -> pd.DataFrame:
        rows = [r for _, g in pdf.groupby("ip", sort=False) for r in event_range_rows(g, lag_margin_ms=margin)]
        return _range_frame(rows)

    # Many IPs per Python call (an IP's events always land in one bucket): the per-call
    # overhead of grouped pandas UDFs would otherwise dominate.
    bucket = F.pmod(F.xxhash64("ip"), F.lit(EVENT_BUCKETS))
    return deduped.withColumn("_bucket", bucket).groupBy("_bucket").applyInPandas(
        lambda pdf: per_bucket(pdf.drop(columns=["_bucket"])), schema=EVENT_RANGE_DDL)


def holdings_as_assigns(holdings: DataFrame, *, at_ms: int) -> DataFrame:
    """Event holdings open across ``at_ms`` as the assign events that started them (the contract's event
    columns): a run that reads only the events from ``at_ms`` on starts from the holdings earlier runs
    published instead of every event ever ingested."""
    open_then = holdings.where((F.col("valid_from_ms") < at_ms)
                               & (F.col("valid_to_ms").isNull() | (F.col("valid_to_ms") > at_ms)))
    return open_then.select(
        F.col("valid_from_ms").alias("event_ms"), F.col("valid_from_ms").alias("published_ms"), "ip",
        F.lit(ACTION_ASSIGN).alias("action"), "workload", "instance_id", "kind", "region", "availability_zone",
    )
