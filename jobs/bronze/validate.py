"""Row checks of raw records and events (pure): why a row is bad, and per-file statistics."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from flowlake.contracts import (
    ACTION_ASSIGN, ACTION_UNASSIGN, COUNTER_COLUMNS, DIRECTION_INBOUND, DIRECTION_OUTBOUND, NOT_NULL_FLOW_COLUMNS,
    PROTOCOL_TCP,
)


def _first_reason(checks: list[tuple[Column, str]]) -> Column:
    expr = F.lit(None).cast("string")
    for bad, reason in reversed(checks):
        expr = F.when(bad, F.lit(reason)).otherwise(expr)
    return expr


def flow_row_reason(*, now_ms: int, max_future_skew_ms: int) -> Column:
    """Why a raw flow row is bad (null when it is good). Expects _local_ip_c/_remote_ip_c."""
    checks: list[tuple[Column, str]] = [
        (_any([F.col(c).isNull() for c in NOT_NULL_FLOW_COLUMNS]), "null in a not-null column"),
        (F.col("_local_ip_c").isNull(), "unparseable local_ip"),
        (F.col("_remote_ip_c").isNull(), "unparseable remote_ip"),
        (_any([F.col(c) < 0 for c in COUNTER_COLUMNS]), "negative counter"),
        (F.col("interval_start_ms") < 0, "negative timestamp"),
        (F.col("interval_end_ms") <= F.col("interval_start_ms"), "interval_end_ms not after interval_start_ms"),
        ((F.col("first_start_ms") < F.col("interval_start_ms")) | (F.col("first_start_ms") >= F.col("interval_end_ms")),
         "first_start_ms outside its interval"),
        (F.col("interval_start_ms") > F.lit(now_ms + max_future_skew_ms), "timestamp in the future"),
        (~F.col("direction").isin(DIRECTION_OUTBOUND, DIRECTION_INBOUND), "unknown direction"),
        (F.col("protocol") != PROTOCOL_TCP, "protocol is not tcp"),
        (_any([(F.col(c) < 0) | (F.col(c) > 65535) for c in ("local_port", "remote_port")]), "port out of range"),
    ]
    return _first_reason(checks)


def event_row_reason() -> Column:
    """Why an IP-event row is bad (null when it is good). Expects _ip_c."""
    return _first_reason([
        (_any([F.col(c).isNull() for c in ("event_ms", "published_ms", "ip", "action")]), "null in a not-null column"),
        (F.col("_ip_c").isNull(), "unparseable ip"),
        (~F.col("action").isin(ACTION_ASSIGN, ACTION_UNASSIGN), "unknown action"),
        ((F.col("action") == ACTION_ASSIGN) & F.col("workload").isNull(), "assign without workload"),
        ((F.col("event_ms") < 0) | (F.col("published_ms") < 0), "negative timestamp"),
    ])


def _any(conds: list[Column]) -> Column:
    out = F.lit(False)
    for c in conds:
        out = out | F.coalesce(c, F.lit(False))
    return out


def validate_flows(raw: DataFrame, *, now_ms: int, max_future_skew_ms: int) -> DataFrame:
    """Reader rows (:func:`reader_ddl`) with canonical IPs, ``dt`` and ``_reason`` (null = good row).

    A row's own faults come before its file's instance mismatch (``_row_reason``, from the reader)."""
    return (
        raw.withColumn("_reason", F.coalesce(
            "_file_reason", flow_row_reason(now_ms=now_ms, max_future_skew_ms=max_future_skew_ms), "_row_reason"))
        .withColumn("local_ip", F.col("_local_ip_c"))
        .withColumn("remote_ip", F.col("_remote_ip_c"))
        .drop("_local_ip_c", "_remote_ip_c", "_file_reason", "_row_reason")
        .withColumn("dt", F.to_date(F.timestamp_millis("interval_start_ms")))
    )


def validate_events(raw: DataFrame) -> DataFrame:
    """Reader rows (:func:`reader_ddl`) with canonical ip and ``_reason`` (null = good row)."""
    return (
        raw.withColumn("_reason", F.coalesce("_file_reason", event_row_reason()))
        .withColumn("ip", F.col("_ip_c"))
        .drop("_ip_c", "_file_reason")
    )


def file_stats(validated: DataFrame, *, time_col: str) -> DataFrame:
    """One row per source file: rows, bad rows, first reason, min/max time (a file's own failure
    is one row with only a reason: rows counts data rows, not that one)."""
    return validated.groupBy("source_file").agg(
        F.count(time_col).alias("rows"),
        F.count("_reason").alias("bad_rows"),
        F.min("_reason").alias("reason"),
        F.min(time_col).alias("min_time_ms"),
        F.max(time_col).alias("max_time_ms"),
    )
