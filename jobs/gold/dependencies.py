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
from flowlake.jobs.silver.attribute import ATTR_HEARTBEAT

HOUR_MS = 3_600_000
EDGE_KEYS = ["hour_start_ms", "src_workload", "dst_workload", "dst_port", "src_availability_zone",
             "dst_availability_zone", "peer_attribution", "observed_by"]


def _edges(records: DataFrame, *, observed_by: str) -> DataFrame:
    """Records oriented client -> server; ``observed_by`` says which side's record it is."""
    client = observed_by == "client"
    local, remote = ("src", "dst") if client else ("dst", "src")
    return records.select(
        (F.floor(F.col("interval_start_ms") / HOUR_MS) * HOUR_MS).cast("bigint").alias("hour_start_ms"),
        F.col("local_workload_resolved").alias(f"{local}_workload"),
        F.col("remote_workload").alias(f"{remote}_workload"),
        F.col("remote_port" if client else "local_port").alias("dst_port"),
        F.col("availability_zone").alias(f"{local}_availability_zone"),
        F.col("remote_availability_zone").alias(f"{remote}_availability_zone"),
        F.col("remote_attribution").alias("peer_attribution"),
        F.lit(observed_by).alias("observed_by"),
        F.col("bytes_sent" if client else "bytes_received").alias("bytes_to_dst"),
        F.col("bytes_received" if client else "bytes_sent").alias("bytes_to_src"),
        "connections_opened", "retransmits",
    )


def transform(attributed: DataFrame) -> DataFrame:
    """Hourly edges with connections, bytes each way, retransmits and record counts."""
    out = _edges(attributed.where(F.col("direction") == DIRECTION_OUTBOUND), observed_by="client")
    inb = _edges(
        attributed.where((F.col("direction") == DIRECTION_INBOUND) & (F.col("remote_attribution") != ATTR_HEARTBEAT)),
        observed_by="server",
    )
    return out.unionByName(inb).groupBy(*EDGE_KEYS).agg(
        F.sum("connections_opened").cast("bigint").alias("connections"),
        F.sum("bytes_to_dst").alias("bytes_to_dst"),
        F.sum("bytes_to_src").alias("bytes_to_src"),
        F.sum("retransmits").alias("retransmits"),
        F.count(F.lit(1)).alias("records"),
    )
