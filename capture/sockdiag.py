"""Open TCP sockets and their tcp_info counters from the kernel's sock_diag (netlink).

sock_diag's messages and tcp_info are user-space ABI, correct on any kernel
whatever headers BCC compiled against. Used for per-interval shares of open
connections and for connections opened before the sidecar started. Other
network namespaces are read through a netlink socket opened inside them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from flowlake.contracts import canonical_ip

from .decode import Counters

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_INFO = 2
CLONE_NEWNET = 0x40000000

TCP_ESTABLISHED = 1
TCP_FIN_WAIT1 = 4
TCP_FIN_WAIT2 = 5
TCP_CLOSE_WAIT = 8
TCP_LAST_ACK = 9
TCP_LISTEN = 10
TCP_CLOSING = 11
OPEN_STATES = (TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_CLOSING)
FIN_RECEIVED_STATES = (TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_CLOSING)

_NLMSG = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBBI16s16s16sI8s")  # inet_diag_req_v2 (sockid: ports+addrs packed below)
_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")  # inet_diag_msg
_RTA = struct.Struct("=HH")
# tcp_info offsets (include/uapi/linux/tcp.h, append-only ABI)
_TI_RTT, _TI_TOTAL_RETRANS = 68, 100
_TI_BYTES_ACKED, _TI_BYTES_RECEIVED = 120, 128
_TI_DATA_SEGS_IN, _TI_DATA_SEGS_OUT = 152, 156
_TI_MIN_LEN = 160


@dataclass(frozen=True)
class SocketSnapshot:
    """One open TCP socket as sock_diag reports it."""

    cookie: int
    state: int
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    counters: Counters  # payload counters now (FIN removed), establishment offsets NOT removed
    srtt_us: int
    netns: str


def _request(family: int, states: int, seq: int) -> bytes:
    body = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), 0, states)
    body += b"\0" * 48  # inet_diag_sockid: any
    return _NLMSG.pack(_NLMSG.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def _addr(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    return canonical_ip(socket.inet_ntop(socket.AF_INET6, raw))


def parse_dump(data: bytes, *, netns: str = "") -> tuple[list[SocketSnapshot], set[tuple[str, int]], bool]:
    """Parse netlink messages of a dump: (open sockets, listening (ip, port)s, done)."""
    sockets: list[SocketSnapshot] = []
    listening: set[tuple[str, int]] = set()
    offset, done = 0, False
    while offset + _NLMSG.size <= len(data):
        length, msg_type, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size:
            raise ValueError(f"malformed netlink message (length {length})")
        body = data[offset + _NLMSG.size : offset + length]
        offset += (length + 3) & ~3
        if msg_type == NLMSG_DONE:
            done = True
            break
        if msg_type == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", body)
            if err:
                raise OSError(-err, f"sock_diag dump failed: {os.strerror(-err)}")
            continue
        if msg_type != SOCK_DIAG_BY_FAMILY or len(body) < _MSG.size:
            continue
        (family, state, _timer, _retrans, sport, dport, src, dst, _if, cookie_raw,
         _exp, _rq, _wq, _uid, _inode) = _MSG.unpack_from(body)
        local_ip, remote_ip = _addr(family, src), _addr(family, dst)
        local_port, remote_port = struct.unpack(">H", sport)[0], struct.unpack(">H", dport)[0]
        if state == TCP_LISTEN:
            listening.add((local_ip, local_port))
            continue
        if state not in OPEN_STATES:
            continue
        info = _find_attr(body[_MSG.size :], INET_DIAG_INFO)
        if info is None or len(info) < _TI_MIN_LEN:
            continue
        lo, hi = struct.unpack("=II", cookie_raw)
        fin_rcvd = 1 if state in FIN_RECEIVED_STATES else 0
        fin_acked = 1 if state == TCP_FIN_WAIT2 else 0
        acked, received = struct.unpack_from("=QQ", info, _TI_BYTES_ACKED)
        segs_in, segs_out = struct.unpack_from("=II", info, _TI_DATA_SEGS_IN)
        counters = Counters(
            bytes_sent=max(0, acked - fin_acked),
            bytes_received=max(0, received - fin_rcvd),
            segments_sent=segs_out,
            segments_received=segs_in,
            retransmits=struct.unpack_from("=I", info, _TI_TOTAL_RETRANS)[0],
        )
        sockets.append(
            SocketSnapshot(
                cookie=lo | (hi << 32), state=state, local_ip=local_ip, local_port=local_port,
                remote_ip=remote_ip, remote_port=remote_port, counters=counters,
                srtt_us=struct.unpack_from("=I", info, _TI_RTT)[0], netns=netns,
            )
        )
    return sockets, listening, done


def _find_attr(data: bytes, wanted: int) -> bytes | None:
    offset = 0
    while offset + _RTA.size <= len(data):
        length, rta_type = _RTA.unpack_from(data, offset)
        if length < _RTA.size:
            return None
        if rta_type == wanted:
            return data[offset + _RTA.size : offset + length]
        offset += (length + 3) & ~3
    return None


class SockDiag:
    """Dumps TCP sockets of this network namespace and of the ones under ``netns_dirs``."""

    def __init__(self, *, netns_dirs: list[str] | tuple[str, ...] = ()) -> None:
        self.netns_dirs = list(netns_dirs)
        self._sockets: dict[str, socket.socket] = {"": self._open()}
        self._seq = 0

    @staticmethod
    def _open() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        return sock

    def _open_in(self, path: str) -> socket.socket:
        """A netlink socket bound to the namespace at ``path`` (setns in a throwaway thread)."""
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        result: dict[str, object] = {}

        def run() -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    result["error"] = OSError(err, f"setns({path}) failed: {os.strerror(err)}")
                    return
                result["sock"] = self._open()
            finally:
                os.close(fd)

        # The thread's namespace switch dies with it; the socket stays bound to `path`.
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join()
        if "error" in result:
            raise result["error"]  # type: ignore[misc]
        return result["sock"]  # type: ignore[return-value]

    def _refresh_namespaces(self) -> None:
        own = os.stat("/proc/self/ns/net").st_ino
        seen = {""}
        for folder in self.netns_dirs:
            root = Path(folder)
            if not root.is_dir():
                continue
            for entry in sorted(root.iterdir()):
                try:
                    if entry.stat().st_ino == own:
                        continue
                except OSError:
                    continue
                key = str(entry)
                seen.add(key)
                if key not in self._sockets:
                    try:
                        self._sockets[key] = self._open_in(key)
                    except OSError:
                        continue
        for key in list(self._sockets):
            if key not in seen:
                self._sockets.pop(key).close()

    def dump(self) -> tuple[list[SocketSnapshot], dict[str, set[tuple[str, int]]]]:
        """All open TCP sockets, and the listening (ip, port)s per namespace."""
        self._refresh_namespaces()
        sockets: list[SocketSnapshot] = []
        listening: dict[str, set[tuple[str, int]]] = {}
        states = sum(1 << s for s in OPEN_STATES) | (1 << TCP_LISTEN)
        for ns, sock in self._sockets.items():
            listening[ns] = set()
            for family in (socket.AF_INET, socket.AF_INET6):
                self._seq += 1
                sock.send(_request(family, states, self._seq))
                while True:
                    data = sock.recv(1 << 17)
                    found, listen, done = parse_dump(data, netns=ns)
                    sockets.extend(found)
                    listening[ns] |= listen
                    if done or not data:
                        break
        return sockets, listening

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
