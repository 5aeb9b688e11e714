"""Inline builders for the insight tests: attributed flow rows and dependency rows."""

from __future__ import annotations

from flowlake.contracts import RAW_FLOW_DDL
from tests.jobs.helpers import MIN, T0, flow

HOUR = 3_600_000
ATTRIBUTED_DDL = (RAW_FLOW_DDL + ", source_file string, dt date, local_workload_resolved string, "
                  "remote_workload string, remote_attribution string, remote_availability_zone string, "
                  "remote_kind string")
DEPS_DDL = ("hour_start_ms bigint, src_workload string, dst_workload string, dst_port int, "
            "src_availability_zone string, dst_availability_zone string, peer_attribution string, "
            "observed_by string, connections bigint, bytes_to_dst bigint, bytes_to_src bigint, "
            "retransmits bigint, records bigint")


def attributed(**kw) -> dict:
    """An attributed record: a raw flow plus attribution columns (override any)."""
    import datetime as dt

    extra = {k: kw.pop(k) for k in ["local_workload_resolved", "remote_workload", "remote_attribution",
                                     "remote_availability_zone", "remote_kind"] if k in kw}
    row = flow(**kw)
    row.update({
        "source_file": "f.parquet",
        "dt": dt.datetime.fromtimestamp(row["interval_start_ms"] / 1000, tz=dt.timezone.utc).date(),
        "local_workload_resolved": row["local_workload"], "remote_workload": "server",
        "remote_attribution": "heartbeat", "remote_availability_zone": "us-east-1b", "remote_kind": "instance",
    })
    row.update(extra)
    return row


def attributed_df(spark, rows: list[dict]):
    cols = [c.split()[0] for c in ATTRIBUTED_DDL.split(", ")]
    return spark.createDataFrame([tuple(r[c] for c in cols) for r in rows], ATTRIBUTED_DDL)


def dep(**kw) -> tuple:
    row = {"hour_start_ms": T0, "src_workload": "a", "dst_workload": "b", "dst_port": 443,
           "src_availability_zone": "us-east-1a", "dst_availability_zone": "us-east-1b",
           "peer_attribution": "heartbeat", "observed_by": "client", "connections": 1, "bytes_to_dst": 100,
           "bytes_to_src": 200, "retransmits": 0, "records": 1}
    row.update(kw)
    return tuple(row[c.split()[0]] for c in DEPS_DDL.split(", "))


def deps_df(spark, rows: list[tuple]):
    return spark.createDataFrame(rows, DEPS_DDL)


__all__ = ["HOUR", "MIN", "T0", "attributed", "attributed_df", "dep", "deps_df"]
