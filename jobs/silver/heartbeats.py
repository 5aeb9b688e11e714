"""Heartbeat runs: each owner's evidence on an address, joined into runs while no other owner's point and
no gap over ``heartbeat_max_gap_ms`` falls between two points (see :mod:`flowlake.jobs.silver.ownership`)."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from flowlake.jobs.config import AttributionParams


def heartbeat_evidence(flows: DataFrame, *, max_gap_ms: int) -> DataFrame:
    """Evidence of (ip, owner): the owner held the ip from ``first_ms`` to ``last_ms``.

    A run of one owner's points splits where another owner's point falls between two of them, or where
    two follow each other more than ``max_gap_ms`` apart. Within a time bucket of that width on one ip
    that a single owner has points in, neither can happen: those points become one row (the first and the
    last of them; the buckets are fixed in time, so the rows do not depend on the window). Buckets that
    several owners share keep their points apart (``first_ms`` = ``last_ms``). This keeps the runs exact
    while the rows that reach the runs' window fall from one per distinct flow start to about one per
    ip, owner and bucket.
    """
    width = max(1, max_gap_ms)  # points in one bucket lie at most width - 1 apart: never a gap split
    points = flows.where(F.col("local_workload").isNotNull()).select(
        F.col("local_ip").alias("ip"), F.col("local_workload").alias("workload"), "instance_id",
        F.col("first_start_ms").alias("first_ms"), "region", "availability_zone",
        F.floor(F.col("first_start_ms") / width).alias("_bucket"),
    )
    # region and zone are grouping keys (an instance has one each), not first(): a hash aggregate, no sort
    buckets = points.groupBy("ip", "workload", "instance_id", "_bucket", "region", "availability_zone").agg(
        F.min("first_ms").alias("first_ms"), F.max("first_ms").alias("last_ms")).localCheckpoint()
    shared = (buckets.groupBy("ip", "_bucket").agg(F.count_distinct(F.struct("workload", "instance_id")).alias("_n"))
              .where(F.col("_n") > 1).select("ip", "_bucket")).localCheckpoint()
    columns = ["ip", "workload", "instance_id", "first_ms", "region", "availability_zone", "last_ms"]
    evidence = buckets.join(F.broadcast(shared), ["ip", "_bucket"], "left_anti").select(*columns)
    if not shared.take(1):
        return evidence
    apart = (points.join(F.broadcast(shared), ["ip", "_bucket"], "left_semi")
             .groupBy("ip", "workload", "instance_id", "first_ms")
             .agg(F.first("region", ignorenulls=True).alias("region"),
                  F.first("availability_zone", ignorenulls=True).alias("availability_zone"))
             .withColumn("last_ms", F.col("first_ms")))
    return evidence.unionByName(apart.select(*columns))


def heartbeat_runs(evidence: DataFrame, *, params: AttributionParams) -> DataFrame:
    """Runs of one owner's evidence on one ip (gaps <= max gap), padded by the tolerance."""
    w = Window.partitionBy("ip").orderBy("first_ms", "workload", "instance_id")
    prev_last = F.max("last_ms").over(w.rowsBetween(Window.unboundedPreceding, -1))
    new_run = (
        F.lag("workload").over(w).isNull()
        | (F.lag("workload").over(w) != F.col("workload"))
        | (F.lag("instance_id").over(w) != F.col("instance_id"))
        | (F.col("first_ms") - prev_last > params.heartbeat_max_gap_ms)
    )
    tol = params.handshake_tolerance_ms
    return (
        evidence.withColumn("_run", F.sum(new_run.cast("int")).over(w))
        .groupBy("ip", "_run", "workload", "instance_id")
        .agg(
            (F.min("first_ms") - tol).alias("valid_from_ms"),
            (F.max("last_ms") + tol).alias("valid_to_ms"),
            F.first("region", ignorenulls=True).alias("region"),
            F.first("availability_zone", ignorenulls=True).alias("availability_zone"),
        )
        .drop("_run")
    )
