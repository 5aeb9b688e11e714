"""Traffic rollups from silver/flows_attributed, so dashboards never scan silver.

* gold/traffic_hourly and gold/traffic_daily: app -> app traffic per availability-zone
  pair (and the region pair derived from it): connections, bytes each way,
  retransmit rate, peak RTT.
* gold/link_hourly: the hourly series the capacity forecast reads, per link
  (``az_pair``, ``region_pair``, ``app_edge``): total bytes, connections and the
  p95 over the hour's aggregation intervals of bytes per second.

Each connection is counted once, as in gold/app_dependencies: from the client's
outbound record, or from the server's inbound record when the client has no
sidecar (its remote was not attributed by heartbeat). The retransmit rate is
retransmitted segments over segments sent by the observing side.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from flowlake.contracts import DIRECTION_INBOUND, DIRECTION_OUTBOUND
from flowlake.jobs.silver.attribute import ATTR_HEARTBEAT

HOUR_MS = 3_600_000
PAIR_KEYS = ["src_workload", "dst_workload", "src_availability_zone", "dst_availability_zone",
             "src_region", "dst_region"]
LINK_KINDS = ("az_pair", "region_pair", "app_edge")
UNKNOWN = "unknown"


def region_of(az: Column) -> Column:
    """The region of an availability zone name (``us-east-1a`` -> ``us-east-1``); null if unknown."""
    region = F.regexp_extract(az, r"^(.*[0-9])[a-z]+$", 1)
    return F.when(region != "", region)


def oriented(attributed: DataFrame) -> DataFrame:
    """One row per counted record, oriented client -> server (see the module doc)."""
    hour = (F.floor(F.col("interval_start_ms") / HOUR_MS) * HOUR_MS).cast("bigint").alias("hour_start_ms")
    common = [
        hour, "interval_start_ms",
        ((F.col("interval_end_ms") - F.col("interval_start_ms")) / 1000.0).alias("interval_s"),
        F.col("connections_opened").cast("bigint").alias("connections"), "retransmits",
        F.col("segments_sent").alias("segments"), F.col("srtt_us_max").alias("srtt_us"),
    ]
    out = attributed.where(F.col("direction") == DIRECTION_OUTBOUND).select(
        *common,
        F.col("local_workload_resolved").alias("src_workload"), F.col("remote_workload").alias("dst_workload"),
        F.col("availability_zone").alias("src_availability_zone"),
        F.col("remote_availability_zone").alias("dst_availability_zone"),
        F.coalesce(F.col("region"), region_of(F.col("availability_zone"))).alias("src_region"),
        region_of(F.col("remote_availability_zone")).alias("dst_region"),
        F.col("bytes_sent").alias("bytes_to_dst"), F.col("bytes_received").alias("bytes_to_src"),
    )
    inb = attributed.where(
        (F.col("direction") == DIRECTION_INBOUND) & (F.col("remote_attribution") != ATTR_HEARTBEAT)
    ).select(
        *common,
        F.col("remote_workload").alias("src_workload"), F.col("local_workload_resolved").alias("dst_workload"),
        F.col("remote_availability_zone").alias("src_availability_zone"),
        F.col("availability_zone").alias("dst_availability_zone"),
        region_of(F.col("remote_availability_zone")).alias("src_region"),
        F.coalesce(F.col("region"), region_of(F.col("availability_zone"))).alias("dst_region"),
        F.col("bytes_received").alias("bytes_to_dst"), F.col("bytes_sent").alias("bytes_to_src"),
    )
    return out.unionByName(inb)


def _measures() -> list[Column]:
    return [
        F.sum("connections").cast("bigint").alias("connections"),
        F.sum("bytes_to_dst").cast("bigint").alias("bytes_to_dst"),
        F.sum("bytes_to_src").cast("bigint").alias("bytes_to_src"),
        F.sum("retransmits").cast("bigint").alias("retransmits"),
        F.sum("segments").cast("bigint").alias("segments"),
        F.max("srtt_us").alias("peak_srtt_us"),
        F.sum("records").cast("bigint").alias("records"),
    ]


def _with_rate(df: DataFrame) -> DataFrame:
    return df.withColumn(
        "retransmit_rate",
        F.when(F.col("segments") > 0, F.col("retransmits") / F.col("segments")).otherwise(F.lit(0.0)),
    )


def pair_intervals(attributed: DataFrame) -> DataFrame:
    """Oriented records summed per hour, aggregation interval and pair (keys and sums as
    :func:`oriented`'s rows, plus ``records``): what both traffic_hourly and link_hourly are sums,
    maxima and percentiles of, so that one pass over silver feeds both (``*_of``)."""
    return oriented(attributed).groupBy("hour_start_ms", "interval_start_ms", *PAIR_KEYS).agg(
        F.max("interval_s").alias("interval_s"),
        *[F.sum(c).cast("bigint").alias(c) for c in ("connections", "retransmits", "segments", "bytes_to_dst",
                                                      "bytes_to_src")],
        F.max("srtt_us").alias("srtt_us"),
        F.count(F.lit(1)).alias("records"),
    )


def traffic_hourly(attributed: DataFrame) -> DataFrame:
    """gold/traffic_hourly: per hour, app pair and zone pair."""
    return traffic_hourly_of(pair_intervals(attributed))


def traffic_hourly_of(pairs: DataFrame) -> DataFrame:
    """:func:`traffic_hourly` from :func:`pair_intervals`."""
    return _with_rate(pairs.groupBy("hour_start_ms", *PAIR_KEYS).agg(*_measures()))


def traffic_daily(hourly: DataFrame) -> DataFrame:
    """gold/traffic_daily from gold/traffic_hourly (sums; peak RTT is the max; rate recomputed)."""
    day = F.to_date(F.timestamp_millis(F.col("hour_start_ms"))).alias("day")
    rows = hourly.select(day, *PAIR_KEYS, "connections", "bytes_to_dst", "bytes_to_src", "retransmits",
                         "segments", F.col("peak_srtt_us").alias("srtt_us"), "records")
    return _with_rate(rows.groupBy("day", *PAIR_KEYS).agg(*_measures()))


def _label(a: str, b: str) -> Column:
    return F.concat_ws(" -> ", F.coalesce(F.col(a), F.lit(UNKNOWN)), F.coalesce(F.col(b), F.lit(UNKNOWN)))


def link_hourly(attributed: DataFrame) -> DataFrame:
    """gold/link_hourly: hourly totals and p95 bytes/s per az pair, region pair and app edge.

    The p95 is over the hour's aggregation intervals in which the link carried traffic."""
    return link_hourly_of(pair_intervals(attributed))


def link_hourly_of(pairs: DataFrame) -> DataFrame:
    """:func:`link_hourly` from :func:`pair_intervals`."""
    rows = pairs.select(
        "hour_start_ms", "interval_start_ms", "interval_s", "connections",
        (F.col("bytes_to_dst") + F.col("bytes_to_src")).alias("bytes"),
        F.explode(F.array(
            F.struct(F.lit("az_pair").alias("link_kind"),
                     _label("src_availability_zone", "dst_availability_zone").alias("link")),
            F.struct(F.lit("region_pair").alias("link_kind"), _label("src_region", "dst_region").alias("link")),
            F.struct(F.lit("app_edge").alias("link_kind"), _label("src_workload", "dst_workload").alias("link")),
        )).alias("l"),
    ).select("l.*", "hour_start_ms", "interval_start_ms", "interval_s", "connections", "bytes")
    per_interval = rows.groupBy("link_kind", "link", "hour_start_ms", "interval_start_ms").agg(
        F.sum("bytes").alias("bytes"), F.sum("connections").alias("connections"),
        F.max("interval_s").alias("interval_s"),
    ).withColumn("bytes_per_s", F.col("bytes") / F.col("interval_s"))
    return per_interval.groupBy("link_kind", "link", "hour_start_ms").agg(
        F.sum("bytes").cast("bigint").alias("bytes_total"),
        F.sum("connections").cast("bigint").alias("connections"),
        F.percentile("bytes_per_s", F.lit(0.95)).alias("p95_bytes_per_s"),
        (F.sum("bytes") / F.lit(3600.0)).alias("mean_bytes_per_s"),
        F.count(F.lit(1)).alias("active_intervals"),
    )
