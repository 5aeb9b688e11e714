"""Decode: ctypes mirrors of bpf/flow.h, FIN/SYN handling, address forms."""

from __future__ import annotations

import ctypes as ct
import socket
import struct

import pytest

from flowlake.capture import decode as d
from flowlake.capture.sockdiag import parse_dump


def _ip(text: str) -> bytes:
    if ":" in text:
        return socket.inet_pton(socket.AF_INET6, text)
    return b"\0" * 10 + b"\xff\xff" + socket.inet_aton(text)


def _event(**kw) -> bytes:
    ev = d.FlowEvent()
    for k, v in kw.items():
        if k in ("local_ip", "remote_ip"):
            ct.memmove(getattr(ev, k), _ip(v), 16)
        else:
            setattr(ev, k, v)
    return bytes(ev)


def test_struct_sizes_match_flow_h():
    # sizes fixed by bpf/flow.h (padding included); the probe re-checks against BCC at load
    assert ct.sizeof(d.FlowKey) == 44
    assert ct.sizeof(d.FlowAgg) == 72
    assert ct.sizeof(d.ConnInfo) == 48
    assert ct.sizeof(d.FlowEvent) == 128


def test_event_removes_fin_and_maps_ipv4():
    raw = _event(cookie=7, bytes_acked=1002, bytes_received=51, base_bytes_acked=1, base_bytes_received=0,
                 segs_sent=3, segs_received=2, retransmits=1, srtt_us=40, direction=d.DIR_OUTBOUND,
                 flags=d.F_FIN_ACKED | d.F_FIN_RCVD, local_port=40000, remote_port=443,
                 local_ip="10.0.0.1", remote_ip="10.0.0.2", gen_start=3, gen_close=4)
    ev = d.decode_event(raw)
    assert ev.final == d.Counters(1001, 50, 3, 2, 1)
    assert ev.final - ev.base == d.Counters(1000, 50, 3, 2, 1)
    assert ev.tuple.local_ip == "10.0.0.1" and ev.tuple.remote_ip == "10.0.0.2"
    assert ev.tuple.folded_key() == ("outbound", "10.0.0.1", 0, "10.0.0.2", 443)
    assert not ev.adopted and (ev.gen_start, ev.gen_close) == (3, 4)


def test_event_ipv6_and_inbound_folding():
    raw = _event(direction=d.DIR_INBOUND, local_port=8080, remote_port=51000,
                 local_ip="fd00:200::1", remote_ip="fd00:200::2")
    ev = d.decode_event(raw)
    assert ev.tuple.folded_key() == ("inbound", "fd00:200::1", 8080, "fd00:200::2", 0)


def test_adopted_event_has_no_direction_and_needs_one_to_fold():
    ev = d.decode_event(_event(flags=d.F_ADOPTED, local_ip="::1", remote_ip="::1"))
    assert ev.adopted and ev.tuple.direction is None
    with pytest.raises(ValueError, match="direction"):
        ev.tuple.folded_key()


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="shorter than struct flow_event"):
        d.decode_event(b"\0" * 10)
    with pytest.raises(ValueError, match="unknown direction code 9"):
        d.direction_name(9)
    with pytest.raises(ValueError, match="16-byte"):
        d.ip_text(b"\0" * 4)


def test_kernel_flow_decode():
    key = d.FlowKey(gen=5, direction=d.DIR_INBOUND, local_port=22)
    ct.memmove(key.local_ip, _ip("192.168.1.5"), 16)
    ct.memmove(key.remote_ip, _ip("2001:db8::1"), 16)
    agg = d.FlowAgg(first_start_ns=10, conns_opened=2, conns_closed=2, bytes_sent=5, bytes_received=6,
                    segs_sent=1, segs_received=1, retransmits=0, srtt_us_max=99)
    kf = d.decode_flow(key, agg)
    assert kf.key == ("inbound", "192.168.1.5", 22, "2001:db8::1", 0)
    assert kf.counters == d.Counters(5, 6, 1, 1, 0) and kf.opened == 2 and kf.srtt_us_max == 99


def _diag_msg(*, family, state, sport, dport, src, dst, cookie, info: bytes) -> bytes:
    body = struct.pack("=BBBB", family, state, 0, 0)
    body += struct.pack(">HH", sport, dport) + src.ljust(16, b"\0") + dst.ljust(16, b"\0")
    body += struct.pack("=I", 0) + struct.pack("=II", cookie & 0xFFFFFFFF, cookie >> 32)
    body += struct.pack("=IIIII", 0, 0, 0, 0, 0)
    attr = struct.pack("=HH", 4 + len(info), 2) + info
    body += attr + b"\0" * ((4 - len(attr) % 4) % 4)
    return struct.pack("=IHHII", 16 + len(body), 20, 2, 1, 0) + body


def test_sock_diag_parse_removes_fin_by_state():
    info = bytearray(232)
    struct.pack_into("=I", info, 68, 250)  # rtt
    struct.pack_into("=I", info, 100, 2)  # total_retrans
    struct.pack_into("=QQ", info, 120, 1001, 2001)  # bytes_acked, bytes_received
    struct.pack_into("=II", info, 152, 4, 3)  # data_segs_in, data_segs_out
    close_wait = _diag_msg(family=socket.AF_INET, state=8, sport=5000, dport=80, src=socket.inet_aton("10.1.1.1"),
                           dst=socket.inet_aton("10.1.1.2"), cookie=(1 << 40) + 3, info=bytes(info))
    listen = _diag_msg(family=socket.AF_INET6, state=10, sport=443, dport=0, src=b"\0" * 16, dst=b"\0" * 16,
                       cookie=9, info=bytes(info))
    done = struct.pack("=IHHII", 20, 3, 2, 1, 0) + b"\0\0\0\0"
    sockets, listening, finished = parse_dump(close_wait + listen + done)
    assert finished and listening == {("::", 443)}
    (s,) = sockets
    assert s.cookie == (1 << 40) + 3 and s.state == 8 and s.srtt_us == 250
    assert s.counters == d.Counters(1001, 2000, 3, 4, 2)  # peer's FIN taken out of bytes_received
