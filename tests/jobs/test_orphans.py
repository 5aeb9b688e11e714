"""Issue 12: how far back a run recomputes when it meets an unknown holder's unassign (a double loss).

The unassign of an instance the tracker never assigned cuts the range open before it back towards that
range's start (event_ranges), which earlier hourly runs published whole: the planner's reach must cover it.
"""

from flowlake.jobs.silver.event_ranges import EVENT_RANGE_DDL
from flowlake.jobs.silver.orphans import orphan_reach
from tests.jobs.helpers import MIN, T0, event, events_df

H = 60 * MIN
WITHIN = 24 * H
CAP = 10 * MIN
IP = "10.0.0.2"


def _reach(spark, unassign: dict, known: list[dict], holdings: list[tuple] = ()) -> list[tuple]:
    out = orphan_reach(events_df(spark, [event(action="unassign", workload=None, **unassign)]),
                       events_df(spark, [event(**k) for k in known]),
                       spark.createDataFrame(list(holdings), EVENT_RANGE_DDL), seen_within_ms=WITHIN, cap_ms=CAP)
    return sorted((r.ip, r.event_ms, r.reach_ms) for r in out.collect())


def test_double_loss_reaches_back_to_where_the_open_range_could_begin(spark):
    # lb-a assigned at T0, its unassign lost; x's assign lost, x's unassign at +40 min: lb-a's range began
    # no earlier than its assign less the largest margin
    known = [dict(workload="lb-a", instance_id="a", event_ms=T0)]
    assert _reach(spark, dict(instance_id="x", event_ms=T0 + 40 * MIN), known) == [(IP, T0 + 40 * MIN, T0 - CAP)]


def test_a_released_address_or_a_known_instance_needs_no_reach(spark):
    released = [dict(workload="lb-a", instance_id="a", event_ms=T0),
                dict(action="unassign", workload=None, instance_id="a", event_ms=T0 + 10 * MIN)]
    assert _reach(spark, dict(instance_id="x", event_ms=T0 + 40 * MIN), released) == []
    # an unassign naming no instance ends whatever is open, like the holder's own
    anonymous = [released[0], {**released[1], "instance_id": None}]
    assert _reach(spark, dict(instance_id="x", event_ms=T0 + 40 * MIN), anonymous) == []
    # x held the address before lb-a within the window: its late unassign is no unknown holder's
    seen = [dict(workload="lb-x", instance_id="x", event_ms=T0 - 2 * H), dict(workload="lb-a", instance_id="a",
                                                                             event_ms=T0)]
    assert _reach(spark, dict(instance_id="x", event_ms=T0 + 40 * MIN), seen) == []


def test_a_long_holdings_own_end_needs_no_reach_but_an_ended_one_does(spark):
    # x's assign lies beyond the window, but earlier runs published its holding open: its own unassign
    open_x = (IP, "lb-x", "x", "instance", "us-east-1", "us-east-1b", T0 - 30 * H, None)
    assert _reach(spark, dict(instance_id="x", event_ms=T0), [], [open_x]) == []
    # after this run publishes, the holding ends at that unassign: the same answer (stages run apart agree)
    assert _reach(spark, dict(instance_id="x", event_ms=T0), [], [open_x[:-1] + (T0,)]) == []
    # x's holding was cut 3 h before (by an assign whose event the window no longer holds): a lagging
    # unassign of a holder seen within the window
    cut = open_x[:-1] + (T0 - 3 * H,)
    assert _reach(spark, dict(instance_id="x", event_ms=T0), [], [cut]) == []
    # a holding of x that ended before the window: no assign in the window to bound the open range either
    ended = open_x[:-1] + (T0 - 25 * H,)
    assert _reach(spark, dict(instance_id="x", event_ms=T0), [], [ended]) == [(IP, T0, T0 - WITHIN)]


def test_ip_reuse_each_address_and_unassign_on_its_own(spark):
    # IPv6 and IPv4 addresses, two unknown holders: each reaches back to its own open range's start
    v6 = "2001:db8::7"
    known = [dict(workload="lb-a", instance_id="a", event_ms=T0),
             dict(ip=v6, workload="lb-b", instance_id="b", event_ms=T0 + 5 * MIN),
             dict(ip=v6, workload="lb-c", instance_id="c", event_ms=T0 + 20 * MIN)]
    unassigns = [event(action="unassign", workload=None, instance_id="x", event_ms=T0 + 40 * MIN),
                 event(ip=v6, action="unassign", workload=None, instance_id="y", event_ms=T0 + 50 * MIN)]
    out = orphan_reach(events_df(spark, unassigns), events_df(spark, [event(**k) for k in known]),
                       spark.createDataFrame([], EVENT_RANGE_DDL), seen_within_ms=WITHIN, cap_ms=CAP)
    assert sorted((r.ip, r.reach_ms) for r in out.collect()) == [
        (IP, T0 - CAP), (v6, T0 + 20 * MIN - CAP)]  # the latest assign before it, not the first
