"""Per-interval flow records from kernel aggregates, close events and socket snapshots.

Three inputs meet here (contracts §1):
 - kernel flows: connections opened and closed within one generation,
   already aggregated and port-folded in the kernel;
 - close events: connections that outlived their generation; their last
   share is their final counters minus what earlier intervals reported;
 - socket snapshots (sock_diag) at each boundary: the share of every open
   connection since it was last reported.
Pure Python, no kernel access: the sidecar passes everything in.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from flowlake.contracts import DIRECTION_INBOUND, DIRECTION_OUTBOUND, PROTOCOL_TCP

from .decode import F_ADOPTED, CloseEvent, ConnInfo, Counters, FlowTuple, KernelFlow, direction_name
from .sockdiag import SocketSnapshot

log = logging.getLogger(__name__)

FlowKeyT = tuple[str, str, int, str, int]  # (direction, local_ip, local_port, remote_ip, remote_port)
_RECENTLY_CLOSED_MAX = 200_000


@dataclass
class FlowStats:
    """Accumulated counters of one record."""

    first_start_ms: int
    opened: int = 0
    closed: int = 0
    counters: Counters = field(default_factory=Counters)
    srtt_us_max: int | None = None

    def add(self, *, start_ms: int, opened: int, closed: int, counters: Counters, srtt_us: int | None) -> None:
        self.first_start_ms = min(self.first_start_ms, start_ms)
        self.opened += opened
        self.closed += closed
        self.counters = self.counters + counters
        if srtt_us:
            self.srtt_us_max = max(self.srtt_us_max or 0, srtt_us)


@dataclass
class Interval:
    gen: int
    start_ms: int
    flows: dict[FlowKeyT, FlowStats] = field(default_factory=dict)

    def add(self, key: FlowKeyT, *, start_ms: int, opened: int = 0, closed: int = 0,
            counters: Counters = Counters(), srtt_us: int | None = None) -> None:
        start_ms = max(start_ms, self.start_ms)
        stats = self.flows.get(key)
        if stats is None:
            stats = self.flows[key] = FlowStats(first_start_ms=start_ms)
        stats.add(start_ms=start_ms, opened=opened, closed=closed, counters=counters, srtt_us=srtt_us)


@dataclass
class TrackedConn:
    """An open connection whose counters up to ``reported`` are in earlier intervals."""

    key: FlowKeyT
    reported: Counters
    missing: int = 0

    def to_json(self) -> dict:
        return {"key": list(self.key), "reported": list(self.reported.astuple())}

    @classmethod
    def from_json(cls, data: dict) -> "TrackedConn":
        d, lip, lport, rip, rport = data["key"]
        return cls(key=(d, lip, int(lport), rip, int(rport)), reported=Counters(*map(int, data["reported"])))


def guess_direction(*, local_ip: str, local_port: int, listening: set[tuple[str, int]]) -> str:
    """Direction of a connection the kernel did not see open: inbound if its local port listens."""
    for ip in (local_ip, "0.0.0.0", "::"):
        if (ip, local_port) in listening:
            return DIRECTION_INBOUND
    return DIRECTION_OUTBOUND


@dataclass
class RecordFilter:
    """Drops records by port, remote CIDR or loopback (the ``filters`` config section)."""

    exclude_local_ports: frozenset[int] = frozenset()
    exclude_remote_ports: frozenset[int] = frozenset()
    exclude_remote_cidrs: tuple = ()
    include_loopback: bool = True

    @classmethod
    def from_config(cls, cfg) -> "RecordFilter":
        return cls(
            exclude_local_ports=frozenset(cfg.exclude_local_ports),
            exclude_remote_ports=frozenset(cfg.exclude_remote_ports),
            exclude_remote_cidrs=tuple(ipaddress.ip_network(c, strict=False) for c in cfg.exclude_remote_cidrs),
            include_loopback=cfg.include_loopback,
        )

    def keep(self, key: FlowKeyT) -> bool:
        _d, local_ip, local_port, remote_ip, remote_port = key
        if local_port and local_port in self.exclude_local_ports:
            return False
        if remote_port and remote_port in self.exclude_remote_ports:
            return False
        remote = ipaddress.ip_address(remote_ip)
        if not self.include_loopback and remote.is_loopback:
            return False
        return not any(remote in net for net in self.exclude_remote_cidrs if net.version == remote.version)


class IntervalAggregator:
    """Builds contract records interval by interval.

    ``mono_to_wall_ms`` converts kernel CLOCK_MONOTONIC nanoseconds to epoch
    milliseconds (injected so tests control time).
    """

    def __init__(self, *, identity: dict, mono_to_wall_ms: Callable[[int], int],
                 record_filter: RecordFilter | None = None) -> None:
        missing = {"instance_id"} - {k for k, v in identity.items() if v}
        if missing:
            raise ValueError("identity needs an instance_id: set identity.instance_id or FLOWLAKE_INSTANCE_ID")
        self.identity = {k: identity.get(k) for k in ("instance_id", "local_workload", "region", "availability_zone")}
        self.mono_to_wall_ms = mono_to_wall_ms
        self.record_filter = record_filter or RecordFilter()
        self.intervals: OrderedDict[int, Interval] = OrderedDict()
        self.tracked: dict[int, TrackedConn] = {}
        self.saved: dict[int, TrackedConn] = {}  # from a previous run, until matched
        self.listening: dict[str, set[tuple[str, int]]] = {}
        self._alias: dict[int, int] = {}  # later generations (stages) of an open interval -> its generation
        self.local_workloads: dict[str, str] = {}  # local IP -> workload (per-container identity)
        self._recently_closed: OrderedDict[int, None] = OrderedDict()
        self._unconfirmed: set[int] = set()  # listed once by sock_diag, unknown to the kernel (add_snapshot)
        self.late_inputs = 0  # kernel flows / events for an interval already written
        self.untracked_closes = 0  # connections that vanished without a close event

    # -- intervals ----------------------------------------------------------
    def begin(self, *, gen: int, start_ms: int) -> None:
        """Open the interval of generation ``gen`` (call before switching the kernel to it)."""
        if gen in self.intervals:
            raise ValueError(f"generation {gen} is already open")
        self.intervals[gen] = Interval(gen=gen, start_ms=start_ms)

    def extend(self, *, gen: int, new_gen: int) -> None:
        """Count generation ``new_gen`` into the open interval of ``gen`` (a stage within one interval)."""
        root = self._alias.get(gen, gen)
        if root not in self.intervals:
            raise ValueError(f"generation {gen} is not open")
        self._alias[new_gen] = root

    def _target(self, gen: int) -> Interval:
        interval = self.intervals.get(self._alias.get(gen, gen))
        if interval is not None:
            return interval
        if not self.intervals:
            raise RuntimeError("no interval is open: call begin() first")
        self.late_inputs += 1
        return next(iter(self.intervals.values()))

    # -- inputs ---------------------------------------------------------------
    def adopt_existing(self, sockets: Iterable[SocketSnapshot], *, listening: dict[str, set[tuple[str, int]]],
                       conn_lookup: Callable[[int], ConnInfo | None] = lambda cookie: None) -> int:
        """Track connections open before the sidecar started (from the first sock_diag dump).

        Counters before now belong to nobody, except for connections a previous
        run of the sidecar saved (``load_state``): their share since that run's
        last report goes into the first interval. Returns how many were adopted.
        """
        self.listening = listening
        count = 0
        for sock in sockets:
            info = conn_lookup(sock.cookie)
            if info is not None and not info.flags & F_ADOPTED:
                continue  # opened after the program was attached: counted like any new connection
            saved = self.saved.pop(sock.cookie, None)
            if saved is not None:
                self.tracked[sock.cookie] = saved
            else:
                self.tracked[sock.cookie] = TrackedConn(key=self._legacy_key(sock), reported=sock.counters)
            count += 1
        return count

    def _legacy_key(self, sock: SocketSnapshot) -> FlowKeyT:
        direction = guess_direction(local_ip=sock.local_ip, local_port=sock.local_port,
                                    listening=self.listening.get(sock.netns, set()))
        return FlowTuple(sock.local_ip, sock.local_port, sock.remote_ip, sock.remote_port, direction).folded_key()

    def add_kernel_flows(self, flows: Iterable[KernelFlow]) -> None:
        """Add connections the kernel aggregated (opened and closed within one generation)."""
        for kf in flows:
            interval = self._target(kf.gen)
            interval.add(kf.key, start_ms=self.mono_to_wall_ms(kf.first_start_ns), opened=kf.opened,
                         closed=kf.closed, counters=kf.counters, srtt_us=kf.srtt_us_max)

    def add_close_event(self, ev: CloseEvent) -> None:
        """Add the last share of a connection that outlived its generation."""
        interval = self._target(ev.gen_close)
        self._recently_closed[ev.cookie] = None
        if len(self._recently_closed) > _RECENTLY_CLOSED_MAX:
            self._recently_closed.popitem(last=False)
        tracked = self.tracked.pop(ev.cookie, None)
        if tracked is None and ev.adopted:
            tracked = self.saved.pop(ev.cookie, None)
        if tracked is not None:
            key, share, opened, start_ms = tracked.key, ev.final - tracked.reported, 0, interval.start_ms
        else:
            direction = ev.tuple.direction or guess_direction(
                local_ip=ev.tuple.local_ip, local_port=ev.tuple.local_port, listening=self.listening.get("", set()))
            key = ev.tuple.folded_key(direction)
            if ev.adopted:  # opened under an earlier sidecar that saved nothing: all we know is the total
                share, opened, start_ms = ev.final, 0, interval.start_ms
            else:
                share, opened, start_ms = ev.final - ev.base, 1, self.mono_to_wall_ms(ev.start_ns)
        interval.add(key, start_ms=start_ms, opened=opened, closed=1, counters=share, srtt_us=ev.srtt_us)

    def add_snapshot(self, *, gen: int, sockets: Iterable[SocketSnapshot],
                     listening: dict[str, set[tuple[str, int]]],
                     conn_lookup: Callable[[int], ConnInfo | None]) -> None:
        """Add every open connection's share since it was last reported to generation ``gen``.

        A socket the kernel does not know is counted from its second sighting on (see below).
        """
        interval = self._target(gen)
        self.listening = listening
        seen: set[int] = set()
        unconfirmed: set[int] = set()
        for sock in sockets:
            if sock.cookie in self._recently_closed:
                continue
            seen.add(sock.cookie)
            tracked = self.tracked.get(sock.cookie)
            if tracked is not None:
                interval.add(tracked.key, start_ms=interval.start_ms, counters=sock.counters - tracked.reported,
                             srtt_us=sock.srtt_us)
                tracked.reported = sock.counters
                tracked.missing = 0
                continue
            info = conn_lookup(sock.cookie)
            if info is not None and not info.flags & F_ADOPTED:
                if info.gen > gen:
                    seen.discard(sock.cookie)
                    continue  # opened after the boundary: it belongs to the next interval
                direction = direction_name(info.direction)
                key = FlowTuple(sock.local_ip, sock.local_port, sock.remote_ip, sock.remote_port, direction).folded_key()
                base = Counters(info.base_bytes_acked, info.base_bytes_received, info.base_segs_sent,
                                info.base_segs_received, 0)
                interval.add(key, start_ms=self.mono_to_wall_ms(info.start_ns), opened=1,
                             counters=sock.counters - base, srtt_us=sock.srtt_us)
                self.tracked[sock.cookie] = TrackedConn(key=key, reported=sock.counters)
                continue
            saved = self.saved.pop(sock.cookie, None)
            if saved is not None:
                interval.add(saved.key, start_ms=interval.start_ms, counters=sock.counters - saved.reported,
                             srtt_us=sock.srtt_us)
                saved.reported = sock.counters
                self.tracked[sock.cookie] = saved
                continue
            # Unknown to the kernel. Either its map was full when the connection opened, or the
            # connection closed between the dump and this lookup, and the kernel has already
            # counted it (in a flow map or a close event). Only a socket still listed at the next
            # snapshot is the former: all its counters are new then.
            if sock.cookie not in self._unconfirmed:
                unconfirmed.add(sock.cookie)
                continue
            key = self._legacy_key(sock)
            interval.add(key, start_ms=interval.start_ms, counters=sock.counters, srtt_us=sock.srtt_us)
            self.tracked[sock.cookie] = TrackedConn(key=key, reported=sock.counters)
        self._unconfirmed = unconfirmed
        for cookie in [c for c in self.tracked if c not in seen]:
            tracked = self.tracked[cookie]
            tracked.missing += 1
            if tracked.missing >= 2:  # gone, and no close event came (opened before any sidecar)
                del self.tracked[cookie]
                self.untracked_closes += 1

    def end(self, *, gen: int, end_ms: int) -> list[dict]:
        """Close the interval of ``gen`` and return its records (contracts §1 rows)."""
        root = self._alias.get(gen, gen)
        interval = self.intervals.pop(root, None)
        if interval is None:
            raise ValueError(f"generation {gen} is not open")
        self._alias = {g: r for g, r in self._alias.items() if r != root}
        return self._records(interval, end_ms=end_ms)

    def peek(self, *, gen: int, end_ms: int) -> list[dict]:
        """The records the open interval of ``gen`` would have if it ended at ``end_ms`` (it stays open)."""
        interval = self.intervals.get(self._alias.get(gen, gen))
        if interval is None:
            raise ValueError(f"generation {gen} is not open")
        return self._records(interval, end_ms=end_ms)

    def _records(self, interval: Interval, *, end_ms: int) -> list[dict]:
        records = []
        default_workload = self.identity.get("local_workload")
        for key, stats in sorted(interval.flows.items()):
            if not self.record_filter.keep(key):
                continue
            direction, local_ip, local_port, remote_ip, remote_port = key
            c = stats.counters
            records.append({
                **self.identity,
                "local_workload": self.local_workloads.get(local_ip, default_workload),
                "interval_start_ms": interval.start_ms,
                "interval_end_ms": end_ms,
                "local_ip": local_ip,
                "local_port": local_port,
                "remote_ip": remote_ip,
                "remote_port": remote_port,
                "direction": direction,
                "protocol": PROTOCOL_TCP,
                "first_start_ms": min(max(stats.first_start_ms, interval.start_ms), end_ms),
                "connections_opened": stats.opened,
                "connections_closed": stats.closed,
                "bytes_sent": c.bytes_sent,
                "bytes_received": c.bytes_received,
                "segments_sent": c.segments_sent,
                "segments_received": c.segments_received,
                "retransmits": c.retransmits,
                "srtt_us_max": stats.srtt_us_max,
            })
        return records

    # -- restart state ----------------------------------------------------------
    def state(self) -> dict:
        """What a restarted sidecar needs to continue without loss or double counting."""
        tracked = {**{str(c): t.to_json() for c, t in self.saved.items()},
                   **{str(c): t.to_json() for c, t in self.tracked.items()}}
        return {"version": 1, "tracked": tracked}

    def load_state(self, data: dict) -> None:
        if data.get("version") != 1:
            raise ValueError(f"capture state version {data.get('version')!r} is not 1: delete the state file")
        self.saved = {int(c): TrackedConn.from_json(t) for c, t in data.get("tracked", {}).items()}
