"""gold/app_dependencies: hourly client -> server edges between workloads.

A connection between two sidecar hosts shows up twice (the client's outbound
record and the server's inbound one). An edge is counted from the client's
outbound record; an inbound record counts only when its client has no
sidecar (its remote was not attributed by heartbeat), so nothing is counted twice.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowlake.contracts import DIRECTION_INBOUND, DIRECTION_OUTBOUND
from flowlake.jobs.attribute import ATTR_HEARTBEAT

HOUR_MS = 3_600_000
EDGE_KEYS = ["hour_start_ms", "src_workload", "dst_workload", "dst_port", "src_availability_zone",
             "dst_availability_zone", "peer_attribution", "observed_by"]


def transform(attributed: DataFrame) -> DataFrame:
    """Hourly edges with connections, bytes each way, retransmits and record counts."""
    hour = (F.floor(F.col("interval_start_ms") / HOUR_MS) * HOUR_MS).cast("bigint").alias("hour_start_ms")
    out = attributed.where(F.col("direction") == DIRECTION_OUTBOUND).select(
        hour,
        F.col("local_workload_resolved").alias("src_workload"),
        F.col("remote_workload").alias("dst_workload"),
        F.col("remote_port").alias("dst_port"),
        F.col("availability_zone").alias("src_availability_zone"),
        F.col("remote_availability_zone").alias("dst_availability_zone"),
        F.col("remote_attribution").alias("peer_attribution"),
        F.lit("client").alias("observed_by"),
        F.col("bytes_sent").alias("bytes_to_dst"),
        F.col("bytes_received").alias("bytes_to_src"),
        "connections_opened", "retransmits",
    )
    inb = attributed.where(
        (F.col("direction") == DIRECTION_INBOUND) & (F.col("remote_attribution") != ATTR_HEARTBEAT)
    ).select(
        hour,
        F.col("remote_workload").alias("src_workload"),
        F.col("local_workload_resolved").alias("dst_workload"),
        F.col("local_port").alias("dst_port"),
        F.col("remote_availability_zone").alias("src_availability_zone"),
        F.col("availability_zone").alias("dst_availability_zone"),
        F.col("remote_attribution").alias("peer_attribution"),
        F.lit("server").alias("observed_by"),
        F.col("bytes_received").alias("bytes_to_dst"),
        F.col("bytes_sent").alias("bytes_to_src"),
        "connections_opened", "retransmits",
    )
    return out.unionByName(inb).groupBy(*EDGE_KEYS).agg(
        F.sum("connections_opened").cast("bigint").alias("connections"),
        F.sum("bytes_to_dst").alias("bytes_to_dst"),
        F.sum("bytes_to_src").alias("bytes_to_src"),
        F.sum("retransmits").alias("retransmits"),
        F.count(F.lit(1)).alias("records"),
    )
