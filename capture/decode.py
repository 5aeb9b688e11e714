"""Decode what the kernel side writes (bpf/flow.h) into plain Python values.

The ctypes layouts mirror bpf/flow.h field by field; ``check_layout`` compares
them with the sizes BCC reports so a drift between C and Python fails loudly.
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
from dataclasses import dataclass

from flowlake.contracts import DIRECTION_INBOUND, DIRECTION_OUTBOUND

DIR_OUTBOUND = 1
DIR_INBOUND = 2
F_FIN_RCVD = 1
F_FIN_ACKED = 2
F_FIN_WAIT2 = 4
F_ADOPTED = 8
F_RESET = 16

DROP_CONN_MAP_FULL = 0
DROP_FLOW_MAP_FULL = 1
DROP_RINGBUF_FULL = 2
DROP_NAMES = {DROP_CONN_MAP_FULL: "conn_map_full", DROP_FLOW_MAP_FULL: "flow_map_full", DROP_RINGBUF_FULL: "ringbuf_full"}

DIRECTION_NAMES = {DIR_OUTBOUND: DIRECTION_OUTBOUND, DIR_INBOUND: DIRECTION_INBOUND}


class FlowKey(ct.Structure):
    _fields_ = [
        ("gen", ct.c_uint32),
        ("direction", ct.c_uint8),
        ("pad0", ct.c_uint8),
        ("local_port", ct.c_uint16),
        ("remote_port", ct.c_uint16),
        ("pad1", ct.c_uint16),
        ("local_ip", ct.c_uint8 * 16),
        ("remote_ip", ct.c_uint8 * 16),
    ]


class FlowAgg(ct.Structure):
    _fields_ = [
        ("first_start_ns", ct.c_uint64),
        ("conns_opened", ct.c_uint64),
        ("conns_closed", ct.c_uint64),
        ("bytes_sent", ct.c_uint64),
        ("bytes_received", ct.c_uint64),
        ("segs_sent", ct.c_uint64),
        ("segs_received", ct.c_uint64),
        ("retransmits", ct.c_uint64),
        ("srtt_us_max", ct.c_uint64),
    ]


class ConnInfo(ct.Structure):
    _fields_ = [
        ("start_ns", ct.c_uint64),
        ("gen", ct.c_uint32),
        ("direction", ct.c_uint8),
        ("flags", ct.c_uint8),
        ("pad", ct.c_uint16),
        ("rcv_nxt_fin_wait2", ct.c_uint32),
        ("pad2", ct.c_uint32),
        ("base_bytes_acked", ct.c_uint64),
        ("base_bytes_received", ct.c_uint64),
        ("base_segs_sent", ct.c_uint32),
        ("base_segs_received", ct.c_uint32),
    ]


class FlowEvent(ct.Structure):
    _fields_ = [
        ("cookie", ct.c_uint64),
        ("start_ns", ct.c_uint64),
        ("close_ns", ct.c_uint64),
        ("bytes_acked", ct.c_uint64),
        ("bytes_received", ct.c_uint64),
        ("base_bytes_acked", ct.c_uint64),
        ("base_bytes_received", ct.c_uint64),
        ("segs_sent", ct.c_uint32),
        ("segs_received", ct.c_uint32),
        ("base_segs_sent", ct.c_uint32),
        ("base_segs_received", ct.c_uint32),
        ("retransmits", ct.c_uint32),
        ("srtt_us", ct.c_uint32),
        ("gen_start", ct.c_uint32),
        ("gen_close", ct.c_uint32),
        ("direction", ct.c_uint8),
        ("flags", ct.c_uint8),
        ("pad", ct.c_uint16),
        ("local_port", ct.c_uint16),
        ("remote_port", ct.c_uint16),
        ("local_ip", ct.c_uint8 * 16),
        ("remote_ip", ct.c_uint8 * 16),
    ]


@dataclass(frozen=True)
class Counters:
    """Payload counters of a connection or a share of one (SYN/FIN excluded)."""

    bytes_sent: int = 0
    bytes_received: int = 0
    segments_sent: int = 0
    segments_received: int = 0
    retransmits: int = 0

    def __sub__(self, other: "Counters") -> "Counters":
        return Counters(*(max(0, a - b) for a, b in zip(self.astuple(), other.astuple())))

    def __add__(self, other: "Counters") -> "Counters":
        return Counters(*(a + b for a, b in zip(self.astuple(), other.astuple())))

    def astuple(self) -> tuple[int, int, int, int, int]:
        return (self.bytes_sent, self.bytes_received, self.segments_sent, self.segments_received, self.retransmits)


@dataclass(frozen=True)
class FlowTuple:
    """A connection's endpoints (ports not folded) and direction name."""

    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    direction: str | None  # None when the kernel did not see the establishment

    def folded_key(self, direction: str | None = None) -> tuple[str, str, int, str, int]:
        """(direction, local_ip, local_port, remote_ip, remote_port) with the client's port folded to 0."""
        d = direction or self.direction
        if d == DIRECTION_OUTBOUND:
            return (d, self.local_ip, 0, self.remote_ip, self.remote_port)
        if d == DIRECTION_INBOUND:
            return (d, self.local_ip, self.local_port, self.remote_ip, 0)
        raise ValueError(f"cannot fold ports without a direction (got {d!r})")


@dataclass(frozen=True)
class CloseEvent:
    """A connection closed that user space must split over intervals."""

    cookie: int
    tuple: FlowTuple
    start_ns: int
    close_ns: int
    gen_start: int
    gen_close: int
    adopted: bool
    final: Counters  # at close, FIN removed, establishment counters NOT removed
    base: Counters  # counters at establishment (zero when adopted)
    srtt_us: int


def ip_text(raw: bytes) -> str:
    """Canonical text of a 16-byte address (IPv4-mapped -> dotted quad)."""
    if len(raw) != 16:
        raise ValueError(f"expected a 16-byte address, got {len(raw)} bytes")
    addr = ipaddress.IPv6Address(bytes(raw))
    return str(addr.ipv4_mapped) if addr.ipv4_mapped is not None else str(addr)


def direction_name(code: int) -> str | None:
    """Kernel direction code -> contract name (None for 0 = unknown)."""
    if code == 0:
        return None
    try:
        return DIRECTION_NAMES[code]
    except KeyError:
        raise ValueError(f"unknown direction code {code} from the kernel (expected 1 or 2)") from None


def decode_event(data: bytes) -> CloseEvent:
    """Decode one ring-buffer record (struct flow_event)."""
    if len(data) < ct.sizeof(FlowEvent):
        raise ValueError(f"flow event of {len(data)} bytes is shorter than struct flow_event ({ct.sizeof(FlowEvent)})")
    ev = FlowEvent.from_buffer_copy(data[: ct.sizeof(FlowEvent)])
    fin_acked = 1 if ev.flags & F_FIN_ACKED else 0
    fin_rcvd = 1 if ev.flags & F_FIN_RCVD else 0
    final = Counters(
        bytes_sent=max(0, ev.bytes_acked - fin_acked),
        bytes_received=max(0, ev.bytes_received - fin_rcvd),
        segments_sent=ev.segs_sent,
        segments_received=ev.segs_received,
        retransmits=ev.retransmits,
    )
    base = Counters(ev.base_bytes_acked, ev.base_bytes_received, ev.base_segs_sent, ev.base_segs_received, 0)
    return CloseEvent(
        cookie=ev.cookie,
        tuple=FlowTuple(ip_text(bytes(ev.local_ip)), ev.local_port, ip_text(bytes(ev.remote_ip)), ev.remote_port, direction_name(ev.direction)),
        start_ns=ev.start_ns,
        close_ns=ev.close_ns,
        gen_start=ev.gen_start,
        gen_close=ev.gen_close,
        adopted=bool(ev.flags & F_ADOPTED),
        final=final,
        base=base,
        srtt_us=ev.srtt_us,
    )


@dataclass(frozen=True)
class KernelFlow:
    """One entry of a kernel flow map: connections opened and closed within generation ``gen``."""

    gen: int
    key: tuple[str, str, int, str, int]
    first_start_ns: int
    opened: int
    closed: int
    counters: Counters
    srtt_us_max: int


def decode_flow(key: FlowKey, agg: FlowAgg) -> KernelFlow:
    """Decode one (struct flow_key, struct flow_agg) pair (ports are folded already)."""
    direction = direction_name(key.direction)
    if direction is None:
        raise ValueError("kernel flow entry without a direction: bpf/flow.bpf.c and capture/decode.py disagree")
    return KernelFlow(
        gen=key.gen,
        key=(direction, ip_text(bytes(key.local_ip)), key.local_port, ip_text(bytes(key.remote_ip)), key.remote_port),
        first_start_ns=agg.first_start_ns,
        opened=agg.conns_opened,
        closed=agg.conns_closed,
        counters=Counters(agg.bytes_sent, agg.bytes_received, agg.segs_sent, agg.segs_received, agg.retransmits),
        srtt_us_max=agg.srtt_us_max,
    )


def check_layout(*, name: str, python_type: type, kernel_size: int) -> None:
    """Raise when a ctypes mirror and the compiled C struct differ in size."""
    if ct.sizeof(python_type) != kernel_size:
        raise RuntimeError(
            f"{name}: capture/decode.py has {ct.sizeof(python_type)} bytes, bpf/flow.h {kernel_size}: "
            "update both together"
        )
