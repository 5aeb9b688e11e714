"""gold_rollups: hourly/daily app traffic by zone pair, and the link series the forecast reads."""

from __future__ import annotations

import datetime as dt

import pytest

from flowlake.jobs.gold import rollups as gold_rollups
from tests.gold.helpers import HOUR, MIN, T0, attributed, attributed_df


def _rows(df, *cols):
    return sorted(tuple(r[c] for c in cols) for r in df.collect())


def test_connection_seen_by_both_sidecars_counted_once(spark):
    out = attributed(bytes_sent=100, bytes_received=200, connections_opened=2)
    # the server's inbound record of the same connection (client has a sidecar: heartbeat)
    inb = attributed(direction="inbound", local_workload="server", local_workload_resolved="server",
                     remote_workload="client", remote_attribution="heartbeat", local_port=443, remote_port=0,
                     availability_zone="us-east-1b", remote_availability_zone="us-east-1a",
                     bytes_sent=200, bytes_received=100, connections_opened=2)
    hourly = gold_rollups.traffic_hourly(attributed_df(spark, [out, inb]))
    assert _rows(hourly, "src_workload", "dst_workload", "connections", "bytes_to_dst", "bytes_to_src") == [
        ("client", "server", 2, 100, 200)]


def test_inbound_from_client_without_sidecar_is_counted_oriented_client_to_server(spark):
    inb = attributed(direction="inbound", local_workload="server", local_workload_resolved="server",
                     remote_workload="nosidecar", remote_attribution="event", local_port=443, remote_port=0,
                     availability_zone="us-east-1b", remote_availability_zone="us-east-1c",
                     bytes_sent=70, bytes_received=30)
    hourly = gold_rollups.traffic_hourly(attributed_df(spark, [inb]))
    assert _rows(hourly, "src_workload", "dst_workload", "src_availability_zone", "dst_availability_zone",
                 "bytes_to_dst", "bytes_to_src") == [("nosidecar", "server", "us-east-1c", "us-east-1b", 30, 70)]


def test_retransmit_rate_and_peak_rtt_per_hour_and_region_pair(spark):
    rows = [attributed(interval_start_ms=T0, segments_sent=90, retransmits=9, srtt_us_max=400),
            attributed(interval_start_ms=T0 + MIN, segments_sent=10, retransmits=1, srtt_us_max=900),
            attributed(interval_start_ms=T0 + HOUR, segments_sent=50, retransmits=0, srtt_us_max=300,
                       remote_availability_zone="eu-west-1a")]
    hourly = gold_rollups.traffic_hourly(attributed_df(spark, rows))
    got = _rows(hourly, "hour_start_ms", "src_region", "dst_region", "retransmit_rate", "peak_srtt_us", "records")
    assert got == [(T0, "us-east-1", "us-east-1", pytest.approx(0.1), 900, 2),
                   (T0 + HOUR, "us-east-1", "eu-west-1", 0.0, 300, 1)]


def test_daily_sums_hours_of_one_day_and_splits_at_midnight(spark):
    rows = [attributed(interval_start_ms=T0, bytes_sent=1, segments_sent=10, retransmits=1, srtt_us_max=100),
            attributed(interval_start_ms=T0 + 5 * HOUR, bytes_sent=2, segments_sent=30, retransmits=1,
                       srtt_us_max=700),
            attributed(interval_start_ms=T0 + 24 * HOUR, bytes_sent=4, srtt_us_max=50)]
    daily = gold_rollups.traffic_daily(gold_rollups.traffic_hourly(attributed_df(spark, rows)))
    day0 = dt.date(2026, 1, 1)
    assert _rows(daily, "day", "bytes_to_dst", "connections", "peak_srtt_us") == [
        (day0, 3, 2, 700), (day0 + dt.timedelta(days=1), 4, 1, 50)]
    first = [r for r in daily.collect() if r.day == day0][0]
    assert first.retransmit_rate == pytest.approx(2 / 40)


def test_link_hourly_p95_over_intervals_and_three_link_kinds(spark):
    # 20 one-minute intervals carrying 60*k bytes each (k = 1..20): k bytes/s
    rows = [attributed(interval_start_ms=T0 + (k - 1) * MIN, bytes_sent=60 * k, bytes_received=0)
            for k in range(1, 21)]
    links = gold_rollups.link_hourly(attributed_df(spark, rows))
    got = {(r.link_kind, r.link): r for r in links.collect()}
    assert set(got) == {("az_pair", "us-east-1a -> us-east-1b"), ("region_pair", "us-east-1 -> us-east-1"),
                        ("app_edge", "client -> server")}
    edge = got[("app_edge", "client -> server")]
    assert edge.bytes_total == 60 * sum(range(1, 21))
    assert edge.active_intervals == 20
    assert edge.p95_bytes_per_s == pytest.approx(19.05)  # linear interpolation of 1..20 at 0.95
    assert edge.mean_bytes_per_s == pytest.approx(edge.bytes_total / 3600)


def test_link_with_unknown_peer_zone_is_labelled_unknown(spark):
    rows = [attributed(remote_workload=None, remote_attribution="unattributed", remote_availability_zone=None)]
    links = {(r.link_kind, r.link) for r in gold_rollups.link_hourly(attributed_df(spark, rows)).collect()}
    assert ("az_pair", "us-east-1a -> unknown") in links
    assert ("app_edge", "client -> unknown") in links


def test_records_sharing_an_interval_and_pair_sum_before_the_p95_and_links_sum_across_pairs(spark):
    # per one-minute interval k: two client records and one batch record, all us-east-1a -> us-east-1b, 20*k
    # bytes each: the az_pair link carries 60*k bytes (k bytes/s), the client edge 40*k, the batch edge 20*k
    rows = []
    for k in range(1, 21):
        at = T0 + (k - 1) * MIN
        rows += [attributed(interval_start_ms=at, bytes_sent=20 * k, bytes_received=0, srtt_us_max=100),
                 attributed(interval_start_ms=at, bytes_sent=20 * k, bytes_received=0, srtt_us_max=100 + k),
                 attributed(interval_start_ms=at, bytes_sent=20 * k, bytes_received=0, local_workload="batch",
                            local_workload_resolved="batch")]
    silver = attributed_df(spark, rows)
    got = {(r.link_kind, r.link): r for r in gold_rollups.link_hourly(silver).collect()}
    assert got[("az_pair", "us-east-1a -> us-east-1b")].p95_bytes_per_s == pytest.approx(19.05)
    assert got[("app_edge", "client -> server")].p95_bytes_per_s == pytest.approx(19.05 * 2 / 3)
    assert got[("app_edge", "batch -> server")].bytes_total == 20 * sum(range(1, 21))
    assert {r.active_intervals for r in got.values()} == {20}
    hourly = _rows(gold_rollups.traffic_hourly(silver), "src_workload", "records", "bytes_to_dst", "peak_srtt_us")
    assert hourly == [("batch", 20, 20 * sum(range(1, 21)), 500), ("client", 40, 40 * sum(range(1, 21)), 120)]
