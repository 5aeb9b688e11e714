"""Attribution: precedence, doubt, CIDR fallback, boundaries, IPv6, hot addresses."""

from flowlake.jobs.silver import attribute
from flowlake.jobs.silver import ownership
from flowlake.jobs.config import load_jobs_config
from tests.jobs.helpers import MIN, T0, event, events_df, flow, flows_df

P = load_jobs_config().attribution


def _attribute(spark, flows, events=(), *, broadcast=True):
    fl = flows_df(spark, flows)
    ranges, _ = ownership.transform(fl, events_df(spark, list(events)), params=P)
    # materialised, as the ownership stage publishes them: the attribution reads the ranges several times and
    # would otherwise re-derive them in each place (a plan 20x as large and 5x as slow on five records)
    out = attribute.transform(fl, ranges.localCheckpoint(), params=P, broadcast=broadcast, bucket_ms=MIN)
    return {(r.local_ip, r.remote_ip, r.first_start_ms): (r.remote_workload, r.remote_attribution)
            for r in out.collect()}


def client(remote_ip, t, **kw):
    start = (t // MIN) * MIN
    return flow(local_ip="10.0.0.1", local_workload="client", instance_id="i-c", remote_ip=remote_ip,
                interval_start_ms=start, first_start_ms=t, **kw)


def server(ip, workload, inst, t):
    start = (t // MIN) * MIN
    return flow(local_ip=ip, local_workload=workload, instance_id=inst, local_port=443, remote_ip="10.0.0.1",
                remote_port=0, direction="inbound", interval_start_ms=start, first_start_ms=t + 2)


def test_heartbeat_beats_a_disagreeing_event_and_event_covers_what_heartbeats_do_not(spark):
    got = _attribute(spark, [client("10.0.0.2", T0 + 1000), server("10.0.0.2", "api", "i-s", T0 + 1000),
                             client("10.0.0.3", T0 + 2000)],
                     [event(ip="10.0.0.2", workload="stale-owner", event_ms=T0 - 86_400_000),
                      event(ip="10.0.0.3", workload="lb", kind="load_balancer", event_ms=T0 - 86_400_000)])
    assert got[("10.0.0.1", "10.0.0.2", T0 + 1000)] == ("api", "heartbeat")
    assert got[("10.0.0.1", "10.0.0.3", T0 + 2000)] == ("lb", "event")


def test_ip_reuse_within_one_interval_attributes_each_flow_to_its_own_holder(spark):
    got = _attribute(spark, [
        server("10.0.0.2", "api", "i-1", T0 + 2_000), server("10.0.0.2", "api", "i-1", T0 + 9_000),
        server("10.0.0.2", "billing", "i-2", T0 + 15_000),
        client("10.0.0.2", T0 + 9_000), client("10.0.0.2", T0 + 15_000, remote_port=8080),
    ])
    assert got[("10.0.0.1", "10.0.0.2", T0 + 9_000)] == ("api", "heartbeat")
    assert got[("10.0.0.1", "10.0.0.2", T0 + 15_000)] == ("billing", "heartbeat")


def test_conflicting_heartbeats_leave_the_flow_unattributed_not_guessed(spark):
    got = _attribute(spark, [
        server("10.0.0.2", "api", "i-1", T0 + 1_000), server("10.0.0.2", "api", "i-1", T0 + 30_000),
        server("10.0.0.2", "billing", "i-2", T0 + 20_000),
        client("10.0.0.2", T0 + 25_000),
    ], [event(ip="10.0.0.2", workload="api", event_ms=T0 - 86_400_000)])
    assert got[("10.0.0.1", "10.0.0.2", T0 + 25_000)] == (None, "unattributed")


def test_cidr_only_for_addresses_no_range_ever_named(spark):
    got = _attribute(spark, [
        client("52.216.10.1", T0 + 1000), client("10.99.0.1", T0 + 1000), client("198.51.100.7", T0 + 1000),
        client("2606:4700::1111", T0 + 1000),
        # 10.0.0.7 was an LB's until T0 (+ margin): afterwards it is owned by nobody we know
        client("10.0.0.7", T0 + 10 * MIN),
    ], [event(ip="10.0.0.7", workload="lb", event_ms=T0 - MIN),
        event(ip="10.0.0.7", action="unassign", workload=None, event_ms=T0)])
    assert got[("10.0.0.1", "52.216.10.1", T0 + 1000)] == ("external:aws-s3", "cidr")
    assert got[("10.0.0.1", "198.51.100.7", T0 + 1000)] == ("external:internet", "cidr")
    assert got[("10.0.0.1", "2606:4700::1111", T0 + 1000)] == ("external:cloudflare", "cidr")
    assert got[("10.0.0.1", "10.99.0.1", T0 + 1000)] == (None, "unattributed")  # internal space, no owner
    assert got[("10.0.0.1", "10.0.0.7", T0 + 10 * MIN)] == (None, "unattributed")


def test_tie_at_a_range_boundary_belongs_to_the_range_that_starts_there(spark):
    # lb-a's range is [T0-1min, T0+100s-30s); lb-b's starts at T0+100s: a flow at exactly T0+70s is in neither
    events = [event(ip="10.0.0.9", workload="lb-a", instance_id="a", event_ms=T0 - MIN),
              event(ip="10.0.0.9", workload="lb-b", instance_id="b", event_ms=T0 + 100_000)]
    got = _attribute(spark, [client("10.0.0.9", T0 + 69_999), client("10.0.0.9", T0 + 70_000),
                             client("10.0.0.9", T0 + 100_000)], events)
    assert got[("10.0.0.1", "10.0.0.9", T0 + 69_999)] == ("lb-a", "event")
    assert got[("10.0.0.1", "10.0.0.9", T0 + 70_000)] == (None, "unattributed")
    assert got[("10.0.0.1", "10.0.0.9", T0 + 100_000)] == ("lb-b", "event")


def test_ipv6_remote_is_attributed_through_its_heartbeat(spark):
    got = _attribute(spark, [client("2600:1f18::5", T0 + 1000), server("2600:1f18::5", "api", "i-s", T0 + 1000)])
    assert got[("10.0.0.1", "2600:1f18::5", T0 + 1000)] == ("api", "heartbeat")


def test_hot_address_many_clients_one_lb_all_attributed_in_both_join_modes(spark):
    flows = [flow(local_ip=f"10.1.{i // 250}.{i % 250}", instance_id=f"i-{i}", remote_ip="10.0.0.80",
                  first_start_ms=T0 + 1000 + i) for i in range(400)]
    events = [event(ip="10.0.0.80", workload="edge-lb", kind="load_balancer", event_ms=T0 - 86_400_000)]
    for mode in (True, False):
        got = _attribute(spark, flows, events, broadcast=mode)
        assert set(got.values()) == {("edge-lb", "event")} and len(got) == 400


def test_local_workload_resolved_from_events_when_the_record_lacks_it(spark):
    fl = flows_df(spark, [flow(local_workload=None, local_ip="10.0.0.5", remote_ip="52.216.0.1")])
    ev = events_df(spark, [event(ip="10.0.0.5", workload="batch", event_ms=T0 - MIN)])
    ranges, _ = ownership.transform(fl, ev, params=P)
    row = attribute.transform(fl, ranges.localCheckpoint(), params=P).first()
    assert (row.local_workload_resolved, row.remote_workload, row.remote_attribution) == (
        "batch", "external:aws-s3", "cidr")
