"""Aggregation: kernel flows, close events and snapshots make exact per-interval shares."""

from __future__ import annotations

import pytest

from flowlake.capture.aggregate import IntervalAggregator, RecordFilter, guess_direction
from flowlake.capture.config import FiltersConfig
from flowlake.capture.decode import F_ADOPTED, CloseEvent, ConnInfo, Counters, FlowTuple, KernelFlow
from flowlake.capture.sockdiag import SocketSnapshot

IDENT = {"instance_id": "i-1", "local_workload": "web", "region": "r", "availability_zone": "r-a"}
NS = 1_000_000


def agg() -> IntervalAggregator:
    # kernel monotonic ns == wall ms * 1e6 in these tests
    return IntervalAggregator(identity=IDENT, mono_to_wall_ms=lambda ns: ns // NS)


def snap(cookie, counters, *, lport=40000, rport=443, state=1) -> SocketSnapshot:
    return SocketSnapshot(cookie=cookie, state=state, local_ip="10.0.0.1", local_port=lport, remote_ip="10.0.0.2",
                          remote_port=rport, counters=counters, srtt_us=100, netns="")


def conn(gen, *, start_ms, direction=1, base=(1, 0)) -> ConnInfo:
    return ConnInfo(start_ns=start_ms * NS, gen=gen, direction=direction, base_bytes_acked=base[0],
                    base_bytes_received=base[1])


def close_event(cookie, final, *, gen_close, start_ms=0, base=Counters(1, 0, 0, 0, 0), adopted=False,
                direction="outbound") -> CloseEvent:
    return CloseEvent(cookie=cookie, tuple=FlowTuple("10.0.0.1", 40000, "10.0.0.2", 443, None if adopted else direction),
                      start_ns=start_ms * NS, close_ns=0, gen_start=1, gen_close=gen_close, adopted=adopted,
                      final=final, base=Counters() if adopted else base, srtt_us=120)


def test_kernel_flows_become_records_with_identity():
    a = agg()
    a.begin(gen=1, start_ms=1000)
    a.add_kernel_flows([KernelFlow(gen=1, key=("outbound", "10.0.0.1", 0, "10.0.0.2", 443), first_start_ns=1500 * NS,
                                   opened=3, closed=3, counters=Counters(10, 20, 1, 1, 0), srtt_us_max=50)])
    (rec,) = a.end(gen=1, end_ms=2000)
    assert rec["instance_id"] == "i-1" and rec["local_workload"] == "web" and rec["availability_zone"] == "r-a"
    assert (rec["interval_start_ms"], rec["interval_end_ms"], rec["first_start_ms"]) == (1000, 2000, 1500)
    assert (rec["connections_opened"], rec["connections_closed"], rec["bytes_sent"]) == (3, 3, 10)
    assert rec["local_port"] == 0 and rec["remote_port"] == 443 and rec["protocol"] == "tcp"


def test_long_connection_shares_sum_to_its_totals():
    a = agg()
    kernel = {7: conn(1, start_ms=1200)}
    a.begin(gen=1, start_ms=1000)
    a.begin(gen=2, start_ms=2000)
    a.add_snapshot(gen=1, sockets=[snap(7, Counters(101, 50, 2, 1, 0))], listening={}, conn_lookup=kernel.get)
    r1 = a.end(gen=1, end_ms=2000)
    a.begin(gen=3, start_ms=3000)
    a.add_snapshot(gen=2, sockets=[snap(7, Counters(301, 70, 5, 2, 1))], listening={}, conn_lookup=kernel.get)
    r2 = a.end(gen=2, end_ms=3000)
    a.add_close_event(close_event(7, Counters(401, 75, 6, 3, 1), gen_close=3))
    r3 = a.end(gen=3, end_ms=4000)
    shares = [(r[0]["bytes_sent"], r[0]["bytes_received"], r[0]["connections_opened"], r[0]["connections_closed"])
              for r in (r1, r2, r3)]
    assert shares == [(100, 50, 1, 0), (200, 20, 0, 0), (100, 5, 0, 1)]
    assert r1[0]["first_start_ms"] == 1200 and r2[0]["first_start_ms"] == 2000
    assert sum(r[0]["retransmits"] for r in (r1, r2, r3)) == 1


def test_connection_opened_after_boundary_waits_for_next_interval():
    a = agg()
    a.begin(gen=1, start_ms=0)
    a.begin(gen=2, start_ms=1000)
    a.add_snapshot(gen=1, sockets=[snap(8, Counters(11, 0, 1, 0, 0))], listening={}, conn_lookup={8: conn(2, start_ms=1001)}.get)
    assert a.end(gen=1, end_ms=1000) == []
    assert 8 not in a.tracked


def test_preexisting_connection_counts_only_after_start_and_guesses_direction():
    a = agg()
    a.begin(gen=1, start_ms=0)
    listening = {"": {("0.0.0.0", 8080)}}
    n = a.adopt_existing([snap(9, Counters(5000, 100, 9, 9, 0), lport=8080, rport=50000)], listening=listening)
    assert n == 1
    a.begin(gen=2, start_ms=1000)
    a.add_snapshot(gen=1, sockets=[snap(9, Counters(5600, 130, 10, 10, 0), lport=8080, rport=50000)],
                   listening=listening, conn_lookup=lambda c: None)
    (rec,) = a.end(gen=1, end_ms=1000)
    assert (rec["direction"], rec["local_port"], rec["remote_port"]) == ("inbound", 8080, 0)
    assert (rec["bytes_sent"], rec["bytes_received"], rec["connections_opened"]) == (600, 30, 0)


def test_restart_state_continues_without_loss_or_double_count():
    a = agg()
    a.begin(gen=1, start_ms=0)
    a.begin(gen=2, start_ms=1000)
    a.add_snapshot(gen=1, sockets=[snap(7, Counters(101, 0, 1, 0, 0))], listening={}, conn_lookup={7: conn(1, start_ms=10)}.get)
    a.end(gen=1, end_ms=1000)
    state = a.state()
    b = agg()  # the restarted sidecar
    b.load_state(state)
    b.begin(gen=1, start_ms=5000)
    b.adopt_existing([snap(7, Counters(251, 0, 3, 0, 0))], listening={})  # 150 more sent while down
    b.add_close_event(close_event(7, Counters(301, 0, 4, 0, 0), gen_close=1, adopted=True))
    (rec,) = b.end(gen=1, end_ms=6000)
    assert (rec["bytes_sent"], rec["connections_opened"], rec["connections_closed"]) == (200, 0, 1)
    assert rec["direction"] == "outbound"


def test_bad_state_version_is_rejected():
    with pytest.raises(ValueError, match="delete the state file"):
        agg().load_state({"version": 99})


def test_snapshot_after_close_event_is_not_counted_twice():
    a = agg()
    a.begin(gen=1, start_ms=0)
    a.add_close_event(close_event(5, Counters(11, 0, 1, 0, 0), gen_close=1, start_ms=10))
    a.begin(gen=2, start_ms=1000)
    a.add_snapshot(gen=1, sockets=[snap(5, Counters(11, 0, 1, 0, 0))], listening={}, conn_lookup=lambda c: None)
    (rec,) = a.end(gen=1, end_ms=1000)
    assert (rec["bytes_sent"], rec["connections_opened"], rec["connections_closed"]) == (10, 1, 1)


def test_a_socket_closed_between_the_dump_and_the_lookup_is_counted_once_by_the_kernel():
    """Edge case: opened and closed in the new generation while the boundary ran. The dump lists it,
    the kernel has already folded it into its flow map and forgotten it, so the lookup misses."""
    a = agg()
    a.begin(gen=1, start_ms=0)
    a.begin(gen=2, start_ms=1000)
    a.add_snapshot(gen=1, sockets=[snap(6, Counters(113, 0, 2, 0, 0))], listening={}, conn_lookup=lambda c: None)
    assert a.end(gen=1, end_ms=1000) == []
    a.add_kernel_flows([KernelFlow(gen=2, key=("outbound", "10.0.0.1", 0, "10.0.0.2", 443), first_start_ns=1001 * NS,
                                   opened=1, closed=1, counters=Counters(112, 0, 2, 0, 0), srtt_us_max=50)])
    a.begin(gen=3, start_ms=2000)
    a.add_snapshot(gen=2, sockets=[], listening={}, conn_lookup=lambda c: None)
    (rec,) = a.end(gen=2, end_ms=2000)
    assert (rec["bytes_sent"], rec["connections_opened"], rec["connections_closed"]) == (112, 1, 1)


def test_a_socket_closed_between_the_dump_and_the_lookup_keeps_its_start_from_the_close_event():
    """Edge case: opened before the boundary, closed in the new generation during it (a close event)."""
    a = agg()
    a.begin(gen=1, start_ms=0)
    a.begin(gen=2, start_ms=1000)
    a.add_snapshot(gen=1, sockets=[snap(4, Counters(81, 0, 2, 0, 0))], listening={}, conn_lookup=lambda c: None)
    a.add_close_event(close_event(4, Counters(101, 0, 3, 0, 0), gen_close=2, start_ms=900))
    assert a.end(gen=1, end_ms=1000) == []
    (rec,) = a.end(gen=2, end_ms=2000)
    assert (rec["bytes_sent"], rec["connections_opened"], rec["connections_closed"]) == (100, 1, 1)


def test_a_socket_unknown_to_a_full_kernel_map_counts_from_its_second_sighting():
    a = agg()
    a.begin(gen=1, start_ms=0)
    a.begin(gen=2, start_ms=1000)
    a.add_snapshot(gen=1, sockets=[snap(3, Counters(50, 5, 1, 1, 0))], listening={}, conn_lookup=lambda c: None)
    assert a.end(gen=1, end_ms=1000) == []
    a.begin(gen=3, start_ms=2000)
    a.add_snapshot(gen=2, sockets=[snap(3, Counters(70, 9, 2, 2, 0))], listening={}, conn_lookup=lambda c: None)
    (rec,) = a.end(gen=2, end_ms=2000)
    assert (rec["bytes_sent"], rec["bytes_received"], rec["connections_opened"]) == (70, 9, 0)
    a.begin(gen=4, start_ms=3000)
    a.add_snapshot(gen=3, sockets=[snap(3, Counters(75, 9, 3, 2, 0))], listening={}, conn_lookup=lambda c: None)
    (rec,) = a.end(gen=3, end_ms=3000)
    assert rec["bytes_sent"] == 5


def test_late_input_lands_in_oldest_open_interval():
    a = agg()
    a.begin(gen=4, start_ms=0)
    a.add_kernel_flows([KernelFlow(gen=2, key=("inbound", "::1", 22, "::1", 0), first_start_ns=0, opened=1, closed=1,
                                   counters=Counters(1, 1, 1, 1, 0), srtt_us_max=0)])
    assert a.late_inputs == 1 and len(a.end(gen=4, end_ms=1000)) == 1


def test_filters_and_identity_validation():
    f = RecordFilter.from_config(FiltersConfig(exclude_local_ports=[22], exclude_remote_cidrs=["10.9.0.0/16"],
                                               include_loopback=False))
    assert not f.keep(("inbound", "10.0.0.1", 22, "10.0.0.2", 0))
    assert not f.keep(("outbound", "10.0.0.1", 0, "10.9.1.1", 80))
    assert not f.keep(("outbound", "127.0.0.1", 0, "127.0.0.1", 80))
    assert f.keep(("outbound", "10.0.0.1", 0, "10.8.1.1", 80))
    with pytest.raises(ValueError, match="instance_id"):
        IntervalAggregator(identity={"instance_id": ""}, mono_to_wall_ms=int)
    assert guess_direction(local_ip="10.0.0.1", local_port=80, listening={("::", 80)}) == "inbound"


def test_adopted_event_without_state_counts_total():
    a = agg()
    a.begin(gen=1, start_ms=0)
    a.add_close_event(close_event(3, Counters(50, 5, 1, 1, 0), gen_close=1, adopted=True))
    (rec,) = a.end(gen=1, end_ms=1000)
    assert rec["bytes_sent"] == 50 and rec["connections_opened"] == 0 and rec["direction"] == "outbound"


def test_adopted_flag_decides_adoption_and_matches_the_bpf_program():
    """A kernel ConnInfo carrying F_ADOPTED (first seen at a state change) is adopted from the
    snapshot; one without it (seen at establishment) is left to the kernel's own counting.
    The Python flag bits are the ones bpf/flow.h defines (the kernel side sets them)."""
    import re
    from pathlib import Path

    from flowlake.capture import decode

    header = (Path(__file__).resolve().parents[2] / "bpf" / "flow.h").read_text()
    defined = {m[1]: int(m[2]) for m in re.finditer(r"#define FLOWLAKE_(F_\w+)\s+(\d+)", header)}
    assert defined, "bpf/flow.h defines no FLOWLAKE_F_* flags"
    for name, value in defined.items():
        assert getattr(decode, name) == value, f"{name}: decode.py {getattr(decode, name)} vs bpf/flow.h {value}"

    def kernel_conn(flags: int) -> decode.ConnInfo:
        info = decode.ConnInfo()
        info.gen, info.direction, info.flags = 1, 1, flags
        return info

    sockets = [snap(1, Counters(10, 0, 1, 0, 0)), snap(2, Counters(10, 0, 1, 0, 0), lport=40001)]
    infos = {1: kernel_conn(F_ADOPTED | decode.F_FIN_ACKED), 2: kernel_conn(decode.F_FIN_ACKED)}
    a = agg()
    a.begin(gen=1, start_ms=0)
    assert a.adopt_existing(sockets, listening={}, conn_lookup=infos.get) == 1
    assert set(a.tracked) == {1}
