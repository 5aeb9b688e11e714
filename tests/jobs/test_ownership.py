"""Ownership ranges: heartbeats (runs, tolerance, conflicts) and events (order, loss, duplicates)."""

import pandas as pd
import pytest

from flowlake.jobs.silver import event_ranges, heartbeats, ownership
from flowlake.jobs.config import AttributionParams
from tests.jobs.helpers import MIN, T0, event, events_df, flow, flows_df

P = AttributionParams(handshake_tolerance_ms=1000, heartbeat_max_gap_ms=15 * MIN, event_lag_margin_ms=30_000)


def _ranges(spark, flows, events=()):
    ranges, conflicts = ownership.transform(flows_df(spark, flows), events_df(spark, list(events)), params=P)
    rows = sorted(ranges.collect(), key=lambda r: (r.ip, r.source, r.valid_from_ms))
    return [(r.ip, r.workload, r.source, r.valid_from_ms, r.valid_to_ms) for r in rows], conflicts.collect()


def hb(ip, workload, inst, t, **kw):
    """A record proving `workload` held `ip` at t (its first_start_ms)."""
    start = (t // MIN) * MIN
    return flow(local_ip=ip, local_workload=workload, instance_id=inst, interval_start_ms=start, first_start_ms=t, **kw)


def test_heartbeat_run_spans_first_to_last_evidence_plus_tolerance(spark):
    got, conflicts = _ranges(spark, [hb("10.0.0.1", "api", "i-1", T0 + 1000), hb("10.0.0.1", "api", "i-1", T0 + 5 * MIN)])
    assert got == [("10.0.0.1", "api", "heartbeat", T0, T0 + 5 * MIN + 1000)]
    assert conflicts == []


def test_heartbeat_gap_longer_than_max_gap_splits_the_run(spark):
    got, _ = _ranges(spark, [hb("10.0.0.1", "api", "i-1", T0 + 1000), hb("10.0.0.1", "api", "i-1", T0 + 20 * MIN)])
    assert [(f, t) for _, _, _, f, t in got] == [(T0, T0 + 2000), (T0 + 20 * MIN - 1000, T0 + 20 * MIN + 1000)]


def test_ip_reuse_within_one_interval_gives_two_disjoint_ranges(spark):
    # api holds 10.0.0.1 until ~T0+10s; billing takes it 5 s later, inside the same minute
    got, conflicts = _ranges(spark, [
        hb("10.0.0.1", "api", "i-1", T0 + 2_000), hb("10.0.0.1", "api", "i-1", T0 + 10_000),
        hb("10.0.0.1", "billing", "i-2", T0 + 15_000), hb("10.0.0.1", "billing", "i-2", T0 + 50_000),
    ])
    assert got == [
        ("10.0.0.1", "api", "heartbeat", T0 + 1_000, T0 + 11_000),
        ("10.0.0.1", "billing", "heartbeat", T0 + 14_000, T0 + 51_000),
    ]
    assert conflicts == []


def test_overlapping_heartbeats_of_two_owners_are_a_conflict_owned_by_nobody(spark):
    # api and billing both claim 10.0.0.1 half a second apart: within tolerance of each other
    got, conflicts = _ranges(spark, [
        hb("10.0.0.1", "api", "i-1", T0 + 1_000), hb("10.0.0.1", "api", "i-1", T0 + 20_000),
        hb("10.0.0.1", "billing", "i-2", T0 + 20_500), hb("10.0.0.1", "billing", "i-2", T0 + 50_000),
    ])
    assert got == [
        ("10.0.0.1", "api", "heartbeat", T0, T0 + 19_500),
        ("10.0.0.1", "billing", "heartbeat", T0 + 21_000, T0 + 51_000),
    ]
    assert [(c.valid_from_ms, c.valid_to_ms, c.owners) for c in conflicts] == [
        (T0 + 19_500, T0 + 21_000, ["api/i-1", "billing/i-2"])]


def test_interleaved_claims_split_runs_so_no_owner_spans_the_other(spark):
    # api, billing, api: api's two points do not make one run across billing's
    got, _ = _ranges(spark, [
        hb("10.0.0.1", "api", "i-1", T0 + 1_000), hb("10.0.0.1", "billing", "i-2", T0 + 20_000),
        hb("10.0.0.1", "api", "i-1", T0 + 40_000),
    ])
    assert [(w, f, t) for _, w, _, f, t in got] == [
        ("api", T0, T0 + 2_000), ("billing", T0 + 19_000, T0 + 21_000), ("api", T0 + 39_000, T0 + 41_000)]


def test_ipv6_heartbeats_build_ranges_like_ipv4(spark):
    got, _ = _ranges(spark, [hb("2600:1f18::a", "api", "i-1", T0 + 1000)])
    assert got == [("2600:1f18::a", "api", "heartbeat", T0, T0 + 2000)]


def _ev(rows):
    return event_ranges.event_ranges_for_ip(pd.DataFrame([event(**r) for r in rows]), lag_margin_ms=30_000)


def _rows(out, cols):
    """Plain Python rows (None for a missing end)."""
    return [[None if pd.isna(v) else v for v in row] for row in out[cols].astype(object).values.tolist()]


def test_events_in_event_time_order_not_arrival_order():
    # the unassign of lb-a was published before the assign of lb-a (arrival order inverted)
    out = _ev([
        dict(action="unassign", workload=None, instance_id="a", event_ms=T0 + 600_000, published_ms=T0 + 601_000),
        dict(action="assign", workload="lb-a", instance_id="a", event_ms=T0, published_ms=T0 + 900_000),
    ])
    # no other owner follows the unassign: the holder keeps its last seconds (asymmetric cut)
    assert _rows(out, ["workload", "valid_from_ms", "valid_to_ms"]) == [["lb-a", T0, T0 + 600_000]]


def test_missing_unassign_is_ended_by_the_next_assign_minus_margin():
    out = _ev([
        dict(workload="lb-a", instance_id="a", event_ms=T0),
        dict(workload="lb-b", instance_id="b", event_ms=T0 + 100_000),
    ])
    assert _rows(out, ["workload", "valid_from_ms", "valid_to_ms"]) == [
        ["lb-a", T0, T0 + 70_000], ["lb-b", T0 + 100_000, None]]


def test_stale_unassign_of_the_previous_holder_after_the_next_assign_is_ignored():
    out = _ev([
        dict(workload="lb-a", instance_id="a", event_ms=T0),
        dict(workload="lb-b", instance_id="b", event_ms=T0 + 100_000),
        dict(action="unassign", workload=None, instance_id="a", event_ms=T0 + 105_000),
    ])
    assert _rows(out, ["workload", "valid_to_ms"]) == [["lb-a", T0 + 70_000], ["lb-b", None]]


def test_duplicate_and_refresh_assigns_do_not_split_a_holding(spark):
    dup = event(workload="lb-a", instance_id="a", event_ms=T0, ip="10.0.0.9")
    got, _ = _ranges(spark, [], [dup, dict(dup, published_ms=T0 + 3_600_000),
                                 dict(dup, event_ms=T0 + 50_000)])
    assert got == [("10.0.0.9", "lb-a", "event", T0, None)]


def test_short_holding_ended_by_its_own_unassign_is_kept_whole():
    out = _ev([
        dict(workload="lb-a", instance_id="a", event_ms=T0),
        dict(action="unassign", workload=None, instance_id="a", event_ms=T0 + 20_000),
    ])
    assert _rows(out, ["workload", "valid_from_ms", "valid_to_ms"]) == [["lb-a", T0, T0 + 20_000]]


def test_event_range_is_cut_where_a_heartbeat_of_another_workload_begins(spark):
    # the tracker lost lb-a's unassign; api's sidecar shows api on the address from T0+10min
    got, _ = _ranges(spark, [hb("10.0.0.9", "api", "i-1", T0 + 10 * MIN)],
                     [event(ip="10.0.0.9", workload="lb-a", instance_id="a", event_ms=T0)])
    assert ("10.0.0.9", "lb-a", "event", T0, T0 + 10 * MIN - 1000) in got


@pytest.mark.parametrize("margin", [0, 30_000])
def test_lag_margin_is_taken_off_only_before_another_workloads_assign(margin):
    out = event_ranges.event_ranges_for_ip(pd.DataFrame([
        event(workload="lb-a", instance_id="a", event_ms=T0),
        event(action="unassign", workload=None, instance_id="a", event_ms=T0 + MIN),
        event(workload="lb-b", instance_id="b", event_ms=T0 + MIN + 10_000),
    ]), lag_margin_ms=margin)
    # lb-a ends at min(unassign, next assign - margin); lb-b starts at its assign, or back to the unassign
    assert out["valid_to_ms"].tolist()[0] == min(T0 + MIN, T0 + MIN + 10_000 - margin)
    assert out["valid_from_ms"].tolist()[1] == (T0 + MIN if margin else T0 + MIN + 10_000)


def _runs(evidence):
    return sorted(tuple(r) for r in heartbeats.heartbeat_runs(evidence, params=P)
                  .select("ip", "workload", "instance_id", "valid_from_ms", "valid_to_ms", "region").collect())


def test_heartbeat_evidence_summarised_per_bucket_gives_the_runs_of_every_point(spark):
    """Points of one owner in a max-gap bucket are one row unless another owner shares the bucket: the runs
    (gap splits, interleaved owners, IP reuse, null instance and region, IPv6) equal those of every point."""
    import random

    from pyspark.sql import functions as F

    rng = random.Random(7)
    owners = [("api", "i-1"), ("billing", "i-2"), ("batch", None)]
    rows = []
    for ip in ("10.0.0.1", "10.0.0.2", "2600:1f18::a", "2600:1f18::b"):
        t = T0
        for _ in range(120):
            t += rng.choice([2_000, 10_000, 40_000, 16 * MIN])  # some gaps longer than the max gap
            workload, inst = owners[0] if rng.random() < 0.95 else rng.choice(owners[1:])
            rows.append(hb(ip, workload, inst, t, region=None if rng.random() < 0.1 else "us-east-1"))
    flows = flows_df(spark, rows)
    every_point = (flows.select(F.col("local_ip").alias("ip"), F.col("local_workload").alias("workload"),
                                "instance_id", F.col("first_start_ms").alias("first_ms"), "region",
                                "availability_zone").withColumn("last_ms", F.col("first_ms")))
    summarised = heartbeats.heartbeat_evidence(flows, max_gap_ms=P.heartbeat_max_gap_ms)
    assert summarised.count() < 0.6 * len(rows)  # the summary is what makes it cheap
    assert _runs(summarised) == _runs(every_point)
