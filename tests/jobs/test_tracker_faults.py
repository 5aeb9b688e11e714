"""Issue 12: attribution that stays right when the IP tracker misbehaves.

Each named pattern of a misbehaving tracker, in small inline tables: event
ranges and doubts (pure Python), the learned lag margin (Spark), and the
guards with their notes end to end (ownership + attribution, Spark).
"""

import pandas as pd

from flowlake.jobs.config import AttributionParams
from flowlake.jobs.silver import attribute, event_ranges, ownership
from flowlake.jobs.silver.tracker_lag import tracker_lag
from tests.jobs.helpers import MIN, T0, event, events_df, flow, flows_df

M = 5 * MIN  # a learned margin, as a hostile tracker's p99.9 lag would give
P = AttributionParams(event_lag_margin_ms=30_000, lag_min_pairs=3, lag_margin_floor_ms=10_000,
                      lag_margin_cap_ms=10 * MIN)


def _rows(events, *, margin=M, stale=None):
    out = event_ranges.event_rows(pd.DataFrame([event(**r) for r in events]), lag_margin_ms=margin,
                                  stale_after_ms=stale)
    return ([(r["workload"], r["valid_from_ms"], r["valid_to_ms"]) for r in out if r["row_kind"] == "range"],
            [(r["note"], r["valid_from_ms"], r["valid_to_ms"]) for r in out if r["row_kind"] == "doubt"])


# --------------------------------------------------------------------------- event ranges (pure)

def test_lost_unassign_then_lagging_assign_cuts_the_old_range_by_the_margin():
    # lb-a's unassign is lost; api's assign says T0+20min but api may have held since T0+15min
    ranges, doubts = _rows([dict(workload="lb-a", instance_id="a", event_ms=T0),
                            dict(workload="api", instance_id="b", event_ms=T0 + 20 * MIN)])
    assert ranges == [("lb-a", T0, T0 + 15 * MIN), ("api", T0 + 20 * MIN, None)]
    assert doubts == [("lag margin", T0 + 15 * MIN, T0 + 20 * MIN)]


def test_unassign_with_no_new_owner_keeps_the_holders_last_seconds():
    ranges, doubts = _rows([dict(workload="lb-a", instance_id="a", event_ms=T0),
                            dict(action="unassign", workload=None, instance_id="a", event_ms=T0 + 10 * MIN)])
    assert ranges == [("lb-a", T0, T0 + 10 * MIN)] and doubts == []


def test_unassign_followed_by_an_assign_after_the_margin_costs_nothing_and_the_new_range_starts_early():
    # the address was free from lb-a's unassign on; api's assign lags its change by at most the margin
    ranges, doubts = _rows([dict(workload="lb-a", instance_id="a", event_ms=T0),
                            dict(action="unassign", workload=None, instance_id="a", event_ms=T0 + 10 * MIN),
                            dict(workload="api", instance_id="b", event_ms=T0 + 30 * MIN)])
    assert ranges == [("lb-a", T0, T0 + 10 * MIN), ("api", T0 + 25 * MIN, None)] and doubts == []


def test_unassign_then_another_workloads_assign_within_the_margin_is_doubt_between():
    # api's assign at +12min may lag its change by 5 min: lb-a is certain only until +7min
    ranges, doubts = _rows([dict(workload="lb-a", instance_id="a", event_ms=T0),
                            dict(action="unassign", workload=None, instance_id="a", event_ms=T0 + 10 * MIN),
                            dict(workload="api", instance_id="b", event_ms=T0 + 12 * MIN)])
    assert ranges == [("lb-a", T0, T0 + 7 * MIN), ("api", T0 + 10 * MIN, None)]
    assert doubts == [("lag margin", T0 + 7 * MIN, T0 + 10 * MIN)]


def test_handover_within_one_workload_needs_no_margin():
    ranges, doubts = _rows([dict(workload="api", instance_id="a", event_ms=T0),
                            dict(workload="api", instance_id="b", event_ms=T0 + 20 * MIN)])
    assert ranges == [("api", T0, T0 + 20 * MIN), ("api", T0 + 20 * MIN, None)] and doubts == []


def test_both_events_lost_the_unknown_holders_unassign_ends_the_old_range():
    # lb-a's unassign and x's assign are lost; x's unassign at +40min proves x held the address after lb-a
    ranges, doubts = _rows([dict(workload="lb-a", instance_id="a", event_ms=T0),
                            dict(action="unassign", workload=None, instance_id="x", event_ms=T0 + 40 * MIN),
                            dict(workload="api", instance_id="b", event_ms=T0 + 41 * MIN)])
    assert ranges[0] == ("lb-a", T0, T0 + 40 * MIN)
    # and the next holder's range is not stretched back over the unknown holder's time
    assert ranges[1] == ("api", T0 + 41 * MIN, None)


def test_stale_range_guard_trusts_a_range_ended_by_another_holder_only_a_lifetime_long():
    ranges, doubts = _rows([dict(workload="lb-a", instance_id="a", event_ms=T0),
                            dict(action="unassign", workload=None, instance_id="x", event_ms=T0 + 40 * MIN)],
                           stale=15 * MIN)
    assert ranges == [("lb-a", T0, T0 + 15 * MIN)]
    assert doubts == [("guard: stale range", T0 + 15 * MIN, T0 + 40 * MIN)]


def test_reordered_unassign_of_the_previous_holder_is_not_an_unknown_holder():
    ranges, _ = _rows([dict(workload="lb-a", instance_id="a", event_ms=T0),
                       dict(workload="lb-b", instance_id="b", event_ms=T0 + 10 * MIN),
                       dict(action="unassign", workload=None, instance_id="a", event_ms=T0 + 10 * MIN + 5_000)],
                      margin=30_000)
    assert ranges == [("lb-a", T0, T0 + 10 * MIN - 30_000), ("lb-b", T0 + 10 * MIN, None)]


def test_holding_lifetimes_pair_each_assign_with_its_own_unassign():
    evs = pd.DataFrame([event(workload="lb-a", instance_id="a", event_ms=T0),
                        event(action="unassign", workload=None, instance_id="a", event_ms=T0 + 7 * MIN),
                        event(workload="lb-b", instance_id="b", event_ms=T0 + 8 * MIN)])
    assert event_ranges.holding_lifetimes(evs) == [7 * MIN]


# --------------------------------------------------------------------------- across a run boundary

B = T0 + 60 * MIN  # where one run ends and the next begins


def _seeded_after_boundary(spark, events):
    """What the next run computes after B: the holdings the earlier run published open at B (it read the
    events to B + pad + cap, so all of them here), replayed as assigns, plus the events from B on."""
    held = event_ranges._range_frame([r for r in event_ranges.event_rows(
        pd.DataFrame([event(**r) for r in events]), lag_margin_ms=M) if r["row_kind"] == "range"])
    seed = event_ranges.holdings_as_assigns(
        spark.createDataFrame(held.astype(object).where(held.notna(), None), event_ranges.EVENT_RANGE_DDL),
        at_ms=B).toPandas()
    later = [event(**r) for r in events if r["event_ms"] >= B]
    return _rows([{**r} for r in [*seed.to_dict("records"), *later]])


def _after(rows):
    ranges, doubts = rows
    return ([r for r in ranges if r[2] is None or r[2] > B], [d for d in doubts if d[2] > B])


def test_a_lost_unassign_before_the_boundary_and_a_lagging_assign_after_it_cut_as_in_one_run(spark):
    # lb-a open at B (its unassign lost); api's assign 2 min into the next run: lb-a ends at a - M, in the
    # earlier run's span: the next run, seeded with lb-a, agrees with one run over both
    events = [dict(workload="lb-a", instance_id="a", event_ms=T0),
              dict(workload="api", instance_id="b", event_ms=B + 2 * MIN)]
    one_shot = _rows(events)
    assert one_shot[0] == [("lb-a", T0, B - 3 * MIN), ("api", B + 2 * MIN, None)]
    ranges, doubts = _after(_seeded_after_boundary(spark, events))
    assert ranges == _after(one_shot)[0] == [("api", B + 2 * MIN, None)]
    # known limit: lb-a is closed before B, so the next run has no holder to cut and [B, a) has no doubt
    # range (its records read `no evidence` instead of `lag margin`; unattributed either way)
    assert doubts == [] and _after(one_shot)[1] == [("lag margin", B - 3 * MIN, B + 2 * MIN)]


def test_an_unassign_just_before_the_boundary_and_an_assign_within_the_margin_after_it_agree(spark):
    # lb-a unassigned 1 min before B, api's assign 2 min after: the earlier run (reading to B + pad + cap)
    # already started api at lb-a's unassign, so the next run is seeded with api from there
    events = [dict(workload="lb-a", instance_id="a", event_ms=T0),
              dict(action="unassign", workload=None, instance_id="a", event_ms=B - MIN),
              dict(workload="api", instance_id="b", event_ms=B + 2 * MIN)]
    one_shot = _rows(events)
    assert one_shot == ([("lb-a", T0, B - 3 * MIN), ("api", B - MIN, None)], [("lag margin", B - 3 * MIN, B - MIN)])
    assert _after(_seeded_after_boundary(spark, events)) == _after(one_shot)


# --------------------------------------------------------------------------- the learned margin (Spark)

def hb(ip, workload, inst, t, **kw):
    """A record proving `workload` held `ip` at t (its first_start_ms)."""
    return flow(local_ip=ip, local_workload=workload, instance_id=inst, interval_start_ms=(t // MIN) * MIN,
                first_start_ms=t, **kw)


def _sidecar_holdings(n, lag_ms):
    """n sidecar holdings beginning after the evidence start; each assign lags its first heartbeat by lag_ms."""
    # the evidence spans [T0, T0+60min]
    flows = [hb("10.0.0.250", "anchor", "i-anchor", T0), hb("10.0.0.250", "anchor", "i-anchor", T0 + 60 * MIN)]
    events = []
    for i in range(n):
        ip, start = f"10.0.1.{i}", T0 + 20 * MIN + i * MIN
        flows.append(hb(ip, "api", f"i-{i}", start))
        events.append(event(ip=ip, workload="api", instance_id=f"i-{i}", event_ms=start + lag_ms))
    return flows, events


def test_lag_estimate_with_too_few_pairs_falls_back_to_the_config_margin(spark):
    flows, events = _sidecar_holdings(2, 90_000)
    lag = tracker_lag(flows_df(spark, flows), events_df(spark, events), params=P)
    assert (lag.pairs, lag.margin_ms, lag.margin_source) == (2, 30_000, "fallback")


def test_lag_estimate_learns_the_quantile_within_floor_and_cap(spark):
    flows, events = _sidecar_holdings(4, 90_000)
    # an assign long before the evidence starts is no pair (its holding began outside the evidence)
    events.append(event(ip="10.0.0.250", workload="anchor", instance_id="i-anchor", event_ms=T0 - 86_400_000))
    lag = tracker_lag(flows_df(spark, flows), events_df(spark, events), params=P)
    assert (lag.pairs, lag.lag_quantile_ms, lag.margin_ms, lag.margin_source) == (4, 90_000, 90_000, "fleet")
    capped = tracker_lag(flows_df(spark, flows), events_df(spark, events),
                                   params=P.model_copy(update={"lag_margin_cap_ms": 60_000}))
    assert capped.margin_ms == 60_000


# --------------------------------------------------------------------------- guards and notes (Spark)

def _attribute(spark, flows, events, *, margin=30_000):
    fl = flows_df(spark, flows)
    built = ownership.build(fl, events_df(spark, events), params=P, lag_margin_ms=margin)
    # materialised once, as the stage publishes them: the lookup would otherwise recompute the event rows
    ranges, doubts = built.ranges.localCheckpoint(), built.doubts.localCheckpoint()
    out = attribute.transform(fl, ranges, params=P, doubts=doubts, broadcast=True)
    return {(r.local_ip, r.remote_ip, r.remote_port, r.first_start_ms):
            (r.remote_workload, r.remote_attribution, r.attribution_note) for r in out.collect()}


def client(remote_ip, t, port=8080):
    return flow(local_ip="10.0.0.1", local_workload="client", instance_id="i-c", remote_ip=remote_ip,
                remote_port=port, interval_start_ms=(t // MIN) * MIN, first_start_ms=t)


def server(ip, workload, inst, t, port=8080):
    return flow(local_ip=ip, local_workload=workload, instance_id=inst, local_port=port, remote_ip="10.0.0.1",
                remote_port=0, direction="inbound", interval_start_ms=(t // MIN) * MIN, first_start_ms=t + 2)


def test_port_guard_unattributes_an_outbound_event_record_to_a_port_the_workload_never_serves(spark):
    # api's sidecar instance serves 8080; the event-only address 10.0.0.9 is api's per the tracker
    flows = [server("10.0.0.5", "api", "i-s", T0 + 1000), client("10.0.0.5", T0 + 1000),
             client("10.0.0.9", T0 + 2000, port=8080), client("10.0.0.9", T0 + 3000, port=5432)]
    got = _attribute(spark, flows, [event(ip="10.0.0.9", workload="api", instance_id="i-e", event_ms=T0 - MIN)])
    assert got[("10.0.0.1", "10.0.0.9", 8080, T0 + 2000)] == ("api", "event", None)
    assert got[("10.0.0.1", "10.0.0.9", 5432, T0 + 3000)] == (None, "unattributed", "guard: port")


def test_port_guard_needs_heartbeat_evidence_of_the_workload(spark):
    # lb has no sidecar anywhere: nothing shows which ports it serves, so nothing is guarded
    got = _attribute(spark, [client("10.0.0.9", T0 + 2000, port=5432)],
                     [event(ip="10.0.0.9", workload="lb", instance_id="e", event_ms=T0 - MIN)])
    assert got[("10.0.0.1", "10.0.0.9", 5432, T0 + 2000)] == ("lb", "event", None)


def test_both_lost_behind_a_sidecar_holder_its_silence_unattributes_the_new_holders_traffic(spark):
    # api (sidecar) held 10.0.0.9 until ~T0+5min; its unassign and the next holder's assign are lost.
    # The next holder has no sidecar; its traffic at T0+20min is not api's: api's sidecar saw none of it.
    flows = [server("10.0.0.9", "api", "i-a", T0 + 1000), client("10.0.0.9", T0 + 1000),
             server("10.0.0.9", "api", "i-a", T0 + 5 * MIN), client("10.0.0.9", T0 + 5 * MIN),
             client("10.0.0.9", T0 + 20 * MIN)]
    got = _attribute(spark, flows, [event(ip="10.0.0.9", workload="api", instance_id="i-a", event_ms=T0 - MIN)])
    assert got[("10.0.0.1", "10.0.0.9", 8080, T0 + 5 * MIN)] == ("api", "heartbeat", None)
    assert got[("10.0.0.1", "10.0.0.9", 8080, T0 + 20 * MIN)] == (None, "unattributed", "guard: silent sidecar")


def test_notes_say_why_lag_margin_conflict_and_no_evidence(spark):
    flows = [
        client("10.0.0.9", T0 + 17 * MIN),  # inside the margin before lb-b's assign
        client("10.0.0.7", T0 + 1000),  # internal space, no range ever
        # api and billing both claim 10.0.0.5 half a second apart: a heartbeat conflict around T0+20s
        server("10.0.0.5", "api", "i-1", T0 + 1000), server("10.0.0.5", "api", "i-1", T0 + 20_000),
        server("10.0.0.5", "billing", "i-2", T0 + 20_500), server("10.0.0.5", "billing", "i-2", T0 + 50_000),
        client("10.0.0.5", T0 + 20_200),
    ]
    events = [event(ip="10.0.0.9", workload="lb-a", instance_id="a", event_ms=T0),
              event(ip="10.0.0.9", workload="lb-b", instance_id="b", event_ms=T0 + 20 * MIN)]
    got = _attribute(spark, flows, events, margin=M)
    assert got[("10.0.0.1", "10.0.0.9", 8080, T0 + 17 * MIN)] == (None, "unattributed", "lag margin")
    assert got[("10.0.0.1", "10.0.0.7", 8080, T0 + 1000)] == (None, "unattributed", "no evidence")
    assert got[("10.0.0.1", "10.0.0.5", 8080, T0 + 20_200)] == (None, "unattributed", "conflict")


def test_port_guard_on_inbound_records_checks_the_ports_the_client_workload_calls(spark):
    # batch's sidecar instance calls 8080 only; the tracker says event-only 10.0.0.9 is batch's.
    # A connection from 10.0.0.9 to a server on 5432 is not batch's way of calling: doubt.
    flows = [flow(local_ip="10.0.0.3", local_workload="batch", instance_id="i-b", remote_ip="10.0.0.8",
                  remote_port=8080, first_start_ms=T0 + 1000),
             server("10.0.0.5", "db", "i-d", T0 + 2000, port=5432) | {"remote_ip": "10.0.0.9"},
             server("10.0.0.6", "api", "i-a", T0 + 3000, port=8080) | {"remote_ip": "10.0.0.9"}]
    got = _attribute(spark, flows, [event(ip="10.0.0.9", workload="batch", instance_id="i-e", event_ms=T0 - MIN)])
    assert got[("10.0.0.5", "10.0.0.9", 0, T0 + 2002)] == (None, "unattributed", "guard: port")
    assert got[("10.0.0.6", "10.0.0.9", 0, T0 + 3002)] == ("batch", "event", None)
