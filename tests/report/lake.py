"""A small lake written with delta-rs (no JVM): the tables the report, status and notebook read.

120 workloads in 6 segments (the dependency graph must stay readable), 21 days of
link history with a 7-day forecast for two links and insufficient_history rows full
of NaN for the rest, cross-zone cost over three days, a quality report with a
blocking failure, a quarantined file, a held writer lock.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from deltalake import write_deltalake

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_748_822_400_000  # 2025-06-02 00:00 UTC
HISTORY_H = 21 * 24
END = T0 + HISTORY_H * HOUR  # 2025-06-23 00:00 UTC
N_WORKLOADS = 120
SEGMENTS = 6


KEPT: list[str] = []  # test artefacts kept for CI, listed at the end of the run


def workload(i: int) -> str:
    return f"svc-{i:03d}"


def write(root: Path, rel: str, df: pd.DataFrame, **kw) -> None:
    write_deltalake(str(root / rel), pa.Table.from_pandas(df, preserve_index=False), mode="overwrite", **kw)


def make_deps(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for i in range(N_WORKLOADS):
        for k in (1, 2, 7):  # each workload calls three others; heavier near 0
            j = (i + k * 5) % N_WORKLOADS
            for hour in (END - 2 * HOUR, END - HOUR):
                rows.append({"hour_start_ms": hour, "src_workload": workload(i), "dst_workload": workload(j),
                             "dst_port": 7001, "src_availability_zone": "us-east-1a",
                             "dst_availability_zone": "us-east-1b" if j % 2 else "us-east-1a",
                             "peer_attribution": "heartbeat", "observed_by": "client",
                             "connections": int(10 + rng.integers(0, 5)),
                             "bytes_to_dst": int(1e6 * (N_WORKLOADS - i) / k), "bytes_to_src": int(2e5 * k),
                             "retransmits": 0, "records": 1})
    rows.append({**rows[0], "dst_workload": "external:internet", "bytes_to_dst": 123456, "bytes_to_src": 1})
    return pd.DataFrame(rows)


def make_link_history() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    hours = np.arange(HISTORY_H)
    hist, fc, summary = [], [], []
    for li, link in enumerate(["us-east-1a->us-east-1b", "us-east-1b->us-east-1a"]):
        level = 5e8 * (li + 1)
        y = level * (1 + 0.5 * np.sin(2 * math.pi * hours / 24))
        hist.append(pd.DataFrame({"link_kind": "az_pair", "link": link, "hour_start_ms": T0 + hours * HOUR,
                                  "bytes_total": y.astype("int64"), "connections": 100,
                                  "mean_bytes_per_s": y / 3600, "p95_bytes_per_s": y / 3000,
                                  "active_intervals": 60}))
        fh = np.arange(168)
        yhat = level * (1 + 0.5 * np.sin(2 * math.pi * (HISTORY_H + fh) / 24))
        for metric, scale in (("bytes_total", 1.0), ("p95_bytes_per_s", 1 / 3000)):
            fc.append(pd.DataFrame({"link_kind": "az_pair", "link": link, "metric": metric,
                                    "hour_start_ms": END + fh * HOUR, "yhat": yhat * scale,
                                    "yhat_lower": yhat * scale * 0.9, "yhat_upper": yhat * scale * 1.1}))
            summary.append({"link_kind": "az_pair", "link": link, "metric": metric, "status": "ok",
                            "history_hours": HISTORY_H, "history_from_ms": T0, "history_to_ms": END,
                            "backtest_hours": 168, "backtest_mape": 0.055 + 0.01 * li,
                            "backtest_interval_coverage": 0.86, "horizon_hours": 168, "interval_width": 0.9,
                            "message": None})
    for i in range(25):  # short series: NaN everywhere, must collapse into one line
        for metric in ("bytes_total", "p95_bytes_per_s"):
            summary.append({"link_kind": "app_edge", "link": f"short-{i:02d}->x", "metric": metric,
                            "status": "insufficient_history", "history_hours": 2, "history_from_ms": END - 2 * HOUR,
                            "history_to_ms": END, "backtest_hours": None, "backtest_mape": float("nan"),
                            "backtest_interval_coverage": float("nan"), "horizon_hours": 168,
                            "interval_width": 0.9, "message": "2 h of history, 96 needed"})
    s = pd.DataFrame(summary).astype({"history_hours": "int32", "backtest_hours": "Int32", "horizon_hours": "int32"})
    return pd.concat(hist, ignore_index=True), pd.concat(fc, ignore_index=True), s


def make_silver() -> pd.DataFrame:
    """Records towards svc-000: 8 days back (outside a 7-day window), inside it, inbound without sidecar."""
    base = {"instance_id": "i-1", "region": "us-east-1", "availability_zone": "us-east-1a", "protocol": "tcp",
            "local_ip": "10.0.0.1", "remote_ip": "10.0.0.2", "local_port": 0, "remote_port": 7001,
            "interval_end_ms": 0, "first_start_ms": 0, "connections_closed": 0, "segments_sent": 1,
            "segments_received": 1, "retransmits": 0, "srtt_us_max": 100, "remote_availability_zone": "us-east-1b"}
    recs = [
        # caller svc-001 (outbound), inside the window, twice
        dict(direction="outbound", local_workload="svc-001", local_workload_resolved="svc-001",
             remote_workload="svc-000", remote_attribution="heartbeat", interval_start_ms=END - HOUR,
             connections_opened=3, bytes_sent=1000, bytes_received=50),
        dict(direction="outbound", local_workload="svc-001", local_workload_resolved="svc-001",
             remote_workload="svc-000", remote_attribution="heartbeat", interval_start_ms=END - 2 * DAY,
             connections_opened=2, bytes_sent=500, bytes_received=50),
        # the same connection seen at svc-000 (inbound, remote by heartbeat): not counted twice
        dict(direction="inbound", local_workload="svc-000", local_workload_resolved="svc-000",
             remote_workload="svc-001", remote_attribution="heartbeat", interval_start_ms=END - HOUR,
             connections_opened=3, bytes_sent=50, bytes_received=1000),
        # a caller without sidecar, seen only inbound (attributed by event)
        dict(direction="inbound", local_workload="svc-000", local_workload_resolved="svc-000",
             remote_workload="lb-edge", remote_attribution="event", interval_start_ms=END - DAY,
             connections_opened=4, bytes_sent=70, bytes_received=7000),
        # 8 days back: outside "the last 7 days"
        dict(direction="outbound", local_workload="svc-002", local_workload_resolved="svc-002",
             remote_workload="svc-000", remote_attribution="heartbeat", interval_start_ms=END - 8 * DAY,
             connections_opened=9, bytes_sent=9999, bytes_received=9),
        # not a call to svc-000
        dict(direction="outbound", local_workload="svc-003", local_workload_resolved="svc-003",
             remote_workload=None, remote_attribution="unattributed", interval_start_ms=END - HOUR,
             connections_opened=1, bytes_sent=10, bytes_received=10),
    ]
    df = pd.DataFrame([{**base, **r} for r in recs])
    df["dt"] = pd.to_datetime(df.interval_start_ms, unit="ms", utc=True).dt.strftime("%Y-%m-%d")
    for c in ("local_port", "remote_port", "connections_opened", "connections_closed"):
        df[c] = df[c].astype("int32")
    return df


def build_lake(root: Path) -> Path:
    """Write the test lake under ``root``."""
    rng = np.random.default_rng(7)
    deps = make_deps(rng)
    write(root, "gold/app_dependencies", deps)
    names = sorted(set(deps.src_workload) | set(deps.dst_workload) - {"external:internet"})
    write(root, "gold/segments", pd.DataFrame({
        "workload": names, "segment": [f"seg-{int(n[4:]) % SEGMENTS}" for n in names],
        "segment_size": N_WORKLOADS // SEGMENTS, "previous_segment": None, "degree": 3.0}))
    write(root, "gold/segment_quality", pd.DataFrame([{
        "computed_at_ms": END, "lookback_from_ms": END - 7 * DAY, "lookback_to_ms": END, "workloads": N_WORKLOADS,
        "segments": SEGMENTS, "modularity": 0.61, "coverage": 0.7, "performance": 0.8,
        "internal_weight_share": 0.66, "kept_segment_share": float("nan")}]))
    hist, fc, summary = make_link_history()
    write(root, "gold/link_hourly", hist)
    write(root, "gold/capacity_forecast", fc)
    write(root, "gold/capacity_forecast_summary", summary)
    days = [pd.Timestamp(END - d * DAY, unit="ms").date() for d in (3, 2, 1)]
    cost = pd.DataFrame([{"day": day, "src_workload": workload(i), "dst_workload": workload(i + 1),
                          "src_availability_zone": "us-east-1a", "dst_availability_zone": "us-east-1b",
                          "src_region": "us-east-1", "dst_region": "us-east-1", "scope": "cross_az",
                          "bytes_to_dst": 10**9 * (i + 1), "bytes_to_src": 0, "connections": 10,
                          "bytes_total": 10**9 * (i + 1), "cost_usd": 0.02 * (i + 1)}
                         for day in days for i in range(30)])
    write(root, "gold/crosszone_cost", cost)
    write(root, "gold/policy_breaches", pd.DataFrame([{
        "hour_start_ms": END - HOUR, "policy": "payments-closed", "src_workload": "svc-001",
        "dst_workload": "svc-000", "dst_port": 7001, "connections": 5}]))
    write(root, "gold/allow_rules", pd.DataFrame([{
        "scope": "workload", "src": workload(i), "src_segment": f"seg-{i % SEGMENTS}", "dst_workload": workload(i + 5),
        "dst_port": 7001, "first_seen_ms": END - 2 * HOUR, "last_seen_ms": END, "connections": 20 + i,
        "bytes": 10**6 * i, "src_workloads": 1} for i in range(40)]))
    write(root, "gold/path_validation", pd.DataFrame([
        {"path": "a-db", "src": "svc-001", "dst": "svc-006", "port": 7001, "status": "observed",
         "connections": 49, "last_seen_ms": END},
        {"path": "c-db", "src": "svc-002", "dst": "svc-099", "port": None, "status": "no_traffic",
         "connections": 0, "last_seen_ms": None}]))
    write(root, "silver/flows_attributed", make_silver(), partition_by=["dt"])
    runs = pd.DataFrame([{"run_id": f"run-{k}", "start_ms": T0 + k * 7 * DAY, "end_ms": T0 + (k + 1) * 7 * DAY,
                          "recomputed_from_ms": T0 + k * 7 * DAY, "flow_files": 100, "flow_rows": 5000,
                          "event_files": 3, "quarantined_files": k % 2, "attributed_rows": 5000,
                          "started_at_ms": END + k * HOUR, "finished_at_ms": END + k * HOUR + 90_000}
                         for k in range(3)])
    write(root, "_meta/runs", runs)
    # a second commit (append) so the table has two files
    write_deltalake(str(root / "gold/policy_breaches"), pa.Table.from_pandas(pd.DataFrame([{
        "hour_start_ms": END - 2 * HOUR, "policy": "users-not-from-nat", "src_workload": "nat-gateway",
        "dst_workload": "svc-005", "dst_port": 80, "connections": 2}]), preserve_index=False), mode="append")
    write(root, "quarantine/files", pd.DataFrame([{
        "source_file": "flows/v1/dt=2025-06-22/hr=23/instance=i-9/x.parquet", "kind": "flows",
        "reason": "not a parquet file", "quarantine_path": "quarantine/raw/run-1/x.parquet", "run_id": "run-1",
        "detected_at_ms": END}]))
    qdir = root / "_quality" / "run-2"
    qdir.mkdir(parents=True)
    (qdir / "silver.json").write_text(json.dumps({
        "run_id": "run-2", "stage": "silver", "written_at": "2025-06-23T02:00:00+00:00",
        "results": [{"name": "silver.attributed_share", "severity": "blocking", "success": False},
                    {"name": "silver.no_duplicate_keys", "severity": "blocking", "success": True},
                    {"name": "silver.every_bronze_row", "severity": "warning", "success": False}]}))
    (root / "_meta" / "writer.lock").write_text(json.dumps(
        {"owner": "run-3", "host": "worker-7", "pid": 4242, "acquired_at_ms": END + 5 * HOUR}))
    return root
