"""gold/crosszone_cost: bytes crossing availability zones and regions per workload pair per day, priced.

Read from gold/app_dependencies (each connection counted once). A pair's scope is
``same_az``, ``cross_az`` (same region), ``cross_region`` or ``unknown`` (a side's
zone is unknown: external or unattributed peers). Cost = (bytes_to_dst +
bytes_to_src) / bytes_per_gb * the scope's USD per GB from conf/insight.yaml
(cross-AZ default 0.02 = the public 0.01 per GB charged on each side).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowlake.jobs.gold.rollups import region_of
from flowlake.jobs.config import Prices

KEYS = ["day", "src_workload", "dst_workload", "src_availability_zone", "dst_availability_zone",
        "src_region", "dst_region", "scope"]


def transform(dependencies: DataFrame, *, prices: Prices) -> DataFrame:
    """Daily bytes and cost per workload pair and zone pair."""
    src_az, dst_az = F.col("src_availability_zone"), F.col("dst_availability_zone")
    src_region, dst_region = region_of(src_az), region_of(dst_az)
    scope = (
        F.when(src_az.isNull() | dst_az.isNull(), F.lit("unknown"))
        .when(src_az == dst_az, F.lit("same_az"))
        .when(src_region == dst_region, F.lit("cross_az"))
        .otherwise(F.lit("cross_region"))
    )
    rate = (
        F.when(F.col("scope") == "same_az", F.lit(prices.same_az_usd_per_gb))
        .when(F.col("scope") == "cross_az", F.lit(prices.cross_az_usd_per_gb))
        .when(F.col("scope") == "cross_region", F.lit(prices.cross_region_usd_per_gb))
        .otherwise(F.lit(prices.unknown_usd_per_gb))
    )
    daily = dependencies.select(
        F.to_date(F.timestamp_millis(F.col("hour_start_ms"))).alias("day"),
        "src_workload", "dst_workload", src_az.alias("src_availability_zone"),
        dst_az.alias("dst_availability_zone"), src_region.alias("src_region"), dst_region.alias("dst_region"),
        scope.alias("scope"), "bytes_to_dst", "bytes_to_src", "connections",
    ).groupBy(*KEYS).agg(
        F.sum("bytes_to_dst").cast("bigint").alias("bytes_to_dst"),
        F.sum("bytes_to_src").cast("bigint").alias("bytes_to_src"),
        F.sum("connections").cast("bigint").alias("connections"),
    )
    return (
        daily.withColumn("bytes_total", F.col("bytes_to_dst") + F.col("bytes_to_src"))
        .withColumn("usd_per_gb", rate.cast("double"))
        .withColumn("cost_usd", F.col("bytes_total") / F.lit(float(prices.bytes_per_gb)) * F.col("usd_per_gb"))
    )
