"""Small builders for inline test DataFrames."""

from __future__ import annotations

from flowlake.contracts import IP_EVENT_DDL, RAW_FLOW_DDL

MIN = 60_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def flow(**kw) -> dict:
    """A raw flow record with sensible defaults; override any column."""
    start = kw.pop("interval_start_ms", T0)
    row = {
        "instance_id": "i-a", "local_workload": "client", "region": "us-east-1", "availability_zone": "us-east-1a",
        "interval_start_ms": start, "interval_end_ms": start + MIN, "local_ip": "10.0.0.1", "local_port": 0,
        "remote_ip": "10.0.0.2", "remote_port": 443, "direction": "outbound", "protocol": "tcp",
        "first_start_ms": start + 1000, "connections_opened": 1, "connections_closed": 1, "bytes_sent": 100,
        "bytes_received": 200, "segments_sent": 3, "segments_received": 4, "retransmits": 0, "srtt_us_max": 500,
    }
    row.update(kw)
    return row


def event(**kw) -> dict:
    row = {"event_ms": T0, "published_ms": T0 + 5000, "ip": "10.0.0.2", "action": "assign", "workload": "server",
           "instance_id": "i-b", "kind": "instance", "region": "us-east-1", "availability_zone": "us-east-1b"}
    row.update(kw)
    return row


def flows_df(spark, rows: list[dict]):
    cols = [c.split()[0] for c in RAW_FLOW_DDL.split(", ")]
    return spark.createDataFrame([tuple(r[c] for c in cols) for r in rows], RAW_FLOW_DDL)


def events_df(spark, rows: list[dict]):
    cols = [c.split()[0] for c in IP_EVENT_DDL.split(", ")]
    return spark.createDataFrame([tuple(r[c] for c in cols) for r in rows], IP_EVENT_DDL)
