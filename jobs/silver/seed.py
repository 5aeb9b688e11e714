"""What a run that replays only the events from its span's start takes from before it.

A run seeded this way must build the same event rows as one run over all the
events: the holdings open at its start come from what earlier runs published
(``silver/ip_event_holdings``), and which instances held or left each address
shortly before comes from the events of that stretch, as ``seen`` rows
(:data:`~flowlake.jobs.silver.event_ranges.ACTION_SEEN`).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowlake.contracts import ACTION_ASSIGN
from flowlake.jobs.silver.event_ranges import ACTION_SEEN


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


def seen_before(events: DataFrame, holdings: DataFrame, *, at_ms: int, within_ms: int) -> DataFrame:
    """The events, and the ends of the published holdings, of ``[at_ms - within_ms, at_ms)`` as ``seen``
    rows (the contract's event columns): they name the instances an unassign from ``at_ms`` on may
    belong to without being an unknown holder's (a holder cut by the next assign whose own unassign
    lags behind it, assigned longer ago than the window)."""
    def within(col: str):
        return (F.col(col) >= at_ms - within_ms) & (F.col(col) < at_ms)

    ended = holdings.where(within("valid_to_ms")).select(
        F.col("valid_to_ms").alias("event_ms"), F.col("valid_to_ms").alias("published_ms"), "ip",
        F.lit(ACTION_SEEN).alias("action"), "workload", "instance_id", "kind", "region", "availability_zone")
    return events.where(within("event_ms")).withColumn("action", F.lit(ACTION_SEEN)).select(
        *ended.columns).unionByName(ended)
