"""Load, attach and talk to the eBPF flow program (bpf/flow.bpf.c) through BCC.

The sock_ops program is attached to the cgroup v2 root (with
BPF_F_ALLOW_MULTI, so other programs there keep running). Map sizes are
compiler flags (-D...), not text substitution.
"""

from __future__ import annotations

import ctypes as ct
import logging
import os
from collections.abc import Callable
from pathlib import Path

from .decode import (
    ConnInfo,
    FlowAgg,
    FlowEvent,
    FlowKey,
    KernelFlow,
    check_layout,
    decode_event,
    decode_flow,
    CloseEvent,
    DROP_NAMES,
)

from .compile_child import bpf_source_dir, build_cflags, import_bcc  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

BPF_F_ALLOW_MULTI = 2
CTL_GEN = 0


def check_layouts(bpf) -> None:
    """Fail loudly when bpf/flow.h and capture/decode.py disagree."""
    for name, py_type, table in (
        ("struct flow_key", FlowKey, bpf[b"flows0"].Key),
        ("struct flow_agg", FlowAgg, bpf[b"flows0"].Leaf),
        ("struct conn_info", ConnInfo, bpf[b"conns"].Leaf),
    ):
        check_layout(name=name, python_type=py_type, kernel_size=ct.sizeof(table))


def make_probe(*, max_conns: int, max_flows: int, ringbuf_pages: int, cgroup_path: str, compile_in_child: bool):
    """The kernel side: compiled in a short-lived child (small RSS) or in this process."""
    cls = ChildCompiledProbe if compile_in_child else KernelProbe
    return cls(max_conns=max_conns, max_flows=max_flows, ringbuf_pages=ringbuf_pages, cgroup_path=cgroup_path)


class KernelProbe:
    """The loaded flow program: generation control, flow maps, close events, drop counters."""

    def __init__(self, *, max_conns: int, max_flows: int, ringbuf_pages: int, cgroup_path: str) -> None:
        bcc = import_bcc()
        src = bpf_source_dir()
        if not (src / "flow.bpf.c").is_file():
            raise FileNotFoundError(f"{src}/flow.bpf.c not found: set FLOWLAKE_BPF_DIR to the repo's bpf/ folder")
        cflags = build_cflags(src, max_conns=max_conns, max_flows=max_flows, ringbuf_pages=ringbuf_pages)
        self._bcc = bcc
        self.bpf = bcc.BPF(src_file=str(src / "flow.bpf.c").encode(), cflags=cflags)
        check_layouts(self.bpf)
        self._fn = self.bpf.load_func(b"flowlake_sockops", bcc.BPF.SOCK_OPS)
        release_compiler_memory()
        self._cgroup_fd: int | None = None
        self._cgroup_path = cgroup_path
        self._event_handler: Callable[[CloseEvent], None] | None = None
        self.events_decoded = 0

    # -- lifecycle -------------------------------------------------------
    def attach(self) -> None:
        """Attach to the cgroup v2 root: from now on every TCP connection is seen."""
        if not Path(self._cgroup_path).is_dir():
            raise FileNotFoundError(
                f"cgroup v2 not found at {self._cgroup_path}: mount it "
                "(mount -t cgroup2 none /sys/fs/cgroup/unified) or set kernel.cgroup_path"
            )
        self._cgroup_fd = os.open(self._cgroup_path, os.O_RDONLY)
        self._bcc.BPF.attach_func(self._fn, self._cgroup_fd, self._bcc.BPFAttachType.CGROUP_SOCK_OPS, BPF_F_ALLOW_MULTI)

    def detach_stale(self, prog_id: int) -> bool:
        """Detach program ``prog_id`` left attached by a killed sidecar; True when one was detached.

        A cgroup program attached with BPF_PROG_ATTACH stays attached when its
        process dies without detaching (SIGKILL, OOM kill): it would count
        into maps nobody reads, for ever. Only a program named like ours is
        touched, so a recycled id is left alone.
        """
        return detach_stale_program(prog_id=prog_id, cgroup_path=self._cgroup_path, name=b"flowlake_sockops")

    def detach(self) -> None:
        if self._cgroup_fd is None:
            return
        try:
            self._bcc.BPF.detach_func(self._fn, self._cgroup_fd, self._bcc.BPFAttachType.CGROUP_SOCK_OPS)
        finally:
            os.close(self._cgroup_fd)
            self._cgroup_fd = None

    def close(self) -> None:
        self.detach()
        self.bpf.cleanup()

    @property
    def prog_id(self) -> int:
        """Kernel id of the loaded program (for kernel.bpf_stats_enabled run time)."""
        info = _prog_info(self._fn.fd)
        return info[0]

    # -- generation ---------------------------------------------------------
    def set_generation(self, gen: int) -> None:
        """Make closes from now on count toward generation ``gen``."""
        ctl = self.bpf[b"ctl"]
        ctl[ctl.Key(CTL_GEN)] = ctl.Leaf(gen & 0xFFFFFFFF)

    def drain_flows(self, *, gen: int) -> list[KernelFlow]:
        """Read and delete the flow map that generation ``gen`` wrote to."""
        table = self.bpf[b"flows1" if gen & 1 else b"flows0"]
        items = [(FlowKey.from_buffer_copy(bytes(k)), FlowAgg.from_buffer_copy(bytes(v))) for k, v in table.items()]
        for key, _ in items:
            try:
                del table[table.Key.from_buffer_copy(bytes(key))]
            except KeyError:
                pass
        return [decode_flow(k, v) for k, v in items]

    def lookup_conn(self, cookie: int) -> ConnInfo | None:
        """The kernel's record of an open connection (None when unknown)."""
        table = self.bpf[b"conns"]
        try:
            return ConnInfo.from_buffer_copy(bytes(table[table.Key(cookie)]))
        except KeyError:
            return None

    def drops(self) -> dict[str, int]:
        """What the kernel side could not record, by reason (totals since load)."""
        table = self.bpf[b"drops"]
        return {name: int(sum(table[table.Key(slot)])) for slot, name in DROP_NAMES.items()}

    def stats(self) -> dict[str, int]:
        table = self.bpf[b"stats"]
        names = ("established", "closed_in_kernel", "close_events")
        return {name: int(sum(table[table.Key(i)])) for i, name in enumerate(names)}

    # -- events ---------------------------------------------------------------
    def open_events(self, handler: Callable[[CloseEvent], None]) -> None:
        """Call ``handler`` for every close event read by ``poll_events``."""
        self._event_handler = handler

        def _cb(_ctx, data, size):
            if size != ct.sizeof(FlowEvent):
                raise RuntimeError(f"close event of {size} bytes, capture/decode.py expects "
                                   f"{ct.sizeof(FlowEvent)}: update bpf/flow.h and decode.py together")
            raw = ct.string_at(data, size)
            self.events_decoded += 1
            handler(decode_event(raw))
            return 0

        self._cb = _cb
        self.bpf[b"events"].open_ring_buffer(_cb)

    def poll_events(self, *, timeout_ms: int) -> None:
        """Wait up to ``timeout_ms`` for close events and hand them to the handler."""
        self.bpf.ring_buffer_poll(timeout_ms)

    def consume_events(self) -> None:
        """Hand every pending close event to the handler without waiting."""
        self.bpf.ring_buffer_consume()


_COMPILER_LIBS = ("libLLVM", "libclang", "libbcc")
MADV_PAGEOUT = 21


def release_compiler_memory() -> int:
    """Give back the memory the one-time BPF compile used; returns bytes advised out.

    BCC compiles in-process with LLVM/clang; afterwards their code pages and
    freed heap only inflate the sidecar's RSS. malloc_trim returns the heap,
    MADV_PAGEOUT drops the libraries' clean file-backed pages (they page back
    in on demand if BCC ever needs them again).
    """
    import ctypes.util  # noqa: PLC0415

    libc = ct.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.malloc_trim(0)
    libc.madvise.argtypes = [ct.c_void_p, ct.c_size_t, ct.c_int]
    advised = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            if len(parts) < 6 or not any(lib in parts[5] for lib in _COMPILER_LIBS):
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            if libc.madvise(start, end - start, MADV_PAGEOUT) == 0:
                advised += end - start
    return advised


SYS_BPF = 321
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_CGROUP_SOCK_OPS = 3
_PROG_NAME_OFF = 64  # offsetof(struct bpf_prog_info, name), uapi


def _bpf(cmd: int, attr) -> int:
    import ctypes.util  # noqa: PLC0415

    libc = ct.CDLL(ctypes.util.find_library("c"), use_errno=True)
    res = libc.syscall(SYS_BPF, cmd, attr, ct.sizeof(attr))
    if res < 0:
        err = ct.get_errno()
        raise OSError(err, os.strerror(err))
    return res


def detach_stale_program(*, prog_id: int, cgroup_path: str, name: bytes) -> bool:
    """Detach sock_ops program ``prog_id`` from ``cgroup_path`` if it exists and is named ``name``."""
    attr = (ct.c_uint32 * 4)(prog_id, 0, 0, 0)
    try:
        fd = _bpf(BPF_PROG_GET_FD_BY_ID, attr)
    except OSError:
        return False  # gone already
    try:
        info = _prog_info_raw(fd)
        if bytes(info[_PROG_NAME_OFF:_PROG_NAME_OFF + 16]).rstrip(b"\0") != name[:15]:
            return False
        cg = os.open(cgroup_path, os.O_RDONLY)
        try:
            _bpf(BPF_PROG_DETACH, (ct.c_uint32 * 4)(cg, fd, BPF_CGROUP_SOCK_OPS, 0))
        except OSError:
            return False  # not attached there
        finally:
            os.close(cg)
        log.warning("detached flow program %d left attached to %s by a sidecar that did not stop cleanly",
                    prog_id, cgroup_path)
        return True
    finally:
        os.close(fd)


def _prog_info_raw(fd: int):
    info = (ct.c_uint8 * 256)()
    attr = (ct.c_uint8 * 16)()
    ct.memmove(attr, ct.byref(ct.c_uint32(fd)), 4)
    ct.memmove(ct.byref(attr, 4), ct.byref(ct.c_uint32(256)), 4)
    ct.memmove(ct.byref(attr, 8), ct.byref(ct.c_uint64(ct.addressof(info))), 8)
    _bpf(15, attr)  # BPF_OBJ_GET_INFO_BY_FD
    return info


def _prog_info(fd: int) -> tuple[int, int, int]:
    """(id, run_time_ns, run_cnt) of a loaded program, via BPF_OBJ_GET_INFO_BY_FD."""
    import ctypes.util  # noqa: PLC0415

    libc = ct.CDLL(ctypes.util.find_library("c"), use_errno=True)
    info = (ct.c_uint8 * 256)()
    # union bpf_attr.info: bpf_fd (u32), info_len (u32), info (u64 ptr)
    attr = (ct.c_uint8 * 16)()
    ct.memmove(attr, ct.byref(ct.c_uint32(fd)), 4)
    ct.memmove(ct.byref(attr, 4), ct.byref(ct.c_uint32(256)), 4)
    ct.memmove(ct.byref(attr, 8), ct.byref(ct.c_uint64(ct.addressof(info))), 8)
    SYS_bpf, BPF_OBJ_GET_INFO_BY_FD = 321, 15
    if libc.syscall(SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, attr, 16) != 0:
        err = ct.get_errno()
        raise OSError(err, f"BPF_OBJ_GET_INFO_BY_FD failed: {os.strerror(err)}")
    prog_id = int.from_bytes(bytes(info[4:8]), "little")
    run_time_ns = int.from_bytes(bytes(info[_RUN_TIME_NS_OFF:_RUN_TIME_NS_OFF + 8]), "little")
    run_cnt = int.from_bytes(bytes(info[_RUN_TIME_NS_OFF + 8:_RUN_TIME_NS_OFF + 16]), "little")
    return prog_id, run_time_ns, run_cnt


def prog_run_stats(fd: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a program; non-zero only with kernel.bpf_stats_enabled=1."""
    _, t, n = _prog_info(fd)
    return t, n


# offsetof(struct bpf_prog_info, run_time_ns) in the uapi (stable, append-only); run_cnt follows.
_RUN_TIME_NS_OFF = 192


class ChildCompiledProbe:
    """The same kernel side as KernelProbe, compiled by a child process; no BCC or LLVM in this one.

    The child (capture/compile_child.py) hands over the loaded program and map
    file descriptors; maps, the ring buffer and attachment go through plain
    system calls (capture/bpfsys.py).
    """

    def __init__(self, *, max_conns: int, max_flows: int, ringbuf_pages: int, cgroup_path: str) -> None:
        from . import bpfsys, compile_child  # noqa: PLC0415

        self._sys = bpfsys
        desc, fds = compile_child.receive(max_conns=max_conns, max_flows=max_flows, ringbuf_pages=ringbuf_pages)
        self._fds = fds
        self._prog_fd = fds["flowlake_sockops"]
        maps = desc["maps"]
        for name, py_type, size in (("struct flow_key", FlowKey, maps["flows0"]["key_size"]),
                                    ("struct flow_agg", FlowAgg, maps["flows0"]["value_size"]),
                                    ("struct conn_info", ConnInfo, maps["conns"]["value_size"])):
            check_layout(name=name, python_type=py_type, kernel_size=size)
        self._maps = {name: bpfsys.RawMap(fd=fds[name], key_size=m["key_size"], value_size=m["value_size"],
                                          percpu=m["percpu"]) for name, m in maps.items() if not m.get("ringbuf")}
        self._ringbuf_size = maps["events"]["data_size"]
        self._tp_fd = bpfsys.attach_tracepoint(prog_fd=fds["tcp_receive_reset"], category="tcp",
                                               event="tcp_receive_reset")
        self._cgroup_fd: int | None = None
        self._cgroup_path = cgroup_path
        self._ring = None
        self.events_decoded = 0

    def attach(self) -> None:
        if not Path(self._cgroup_path).is_dir():
            raise FileNotFoundError(
                f"cgroup v2 not found at {self._cgroup_path}: mount it "
                "(mount -t cgroup2 none /sys/fs/cgroup/unified) or set kernel.cgroup_path"
            )
        self._cgroup_fd = os.open(self._cgroup_path, os.O_RDONLY)
        self._sys.cgroup_attach(prog_fd=self._prog_fd, cgroup_fd=self._cgroup_fd)

    def detach_stale(self, prog_id: int) -> bool:
        return detach_stale_program(prog_id=prog_id, cgroup_path=self._cgroup_path, name=b"flowlake_sockops")

    def detach(self) -> None:
        if self._cgroup_fd is None:
            return
        try:
            self._sys.cgroup_detach(prog_fd=self._prog_fd, cgroup_fd=self._cgroup_fd)
        finally:
            os.close(self._cgroup_fd)
            self._cgroup_fd = None

    def close(self) -> None:
        self.detach()
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._tp_fd is not None:
            os.close(self._tp_fd)
            self._tp_fd = None
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}

    @property
    def prog_id(self) -> int:
        return _prog_info(self._prog_fd)[0]

    def set_generation(self, gen: int) -> None:
        self._maps["ctl"].update(CTL_GEN.to_bytes(4, "little"), (gen & 0xFFFFFFFF).to_bytes(4, "little"))

    def drain_flows(self, *, gen: int) -> list[KernelFlow]:
        table = self._maps["flows1" if gen & 1 else "flows0"]
        items = [(FlowKey.from_buffer_copy(k), FlowAgg.from_buffer_copy(v)) for k, v in table.items()]
        for key, _ in items:
            table.delete(bytes(key))
        return [decode_flow(k, v) for k, v in items]

    def lookup_conn(self, cookie: int) -> ConnInfo | None:
        raw = self._maps["conns"].lookup(cookie.to_bytes(8, "little"))
        return ConnInfo.from_buffer_copy(raw) if raw is not None else None

    def drops(self) -> dict[str, int]:
        table = self._maps["drops"]
        return {name: table.lookup_percpu_u64_sum(slot.to_bytes(4, "little")) for slot, name in DROP_NAMES.items()}

    def stats(self) -> dict[str, int]:
        table = self._maps["stats"]
        names = ("established", "closed_in_kernel", "close_events")
        return {name: table.lookup_percpu_u64_sum(i.to_bytes(4, "little")) for i, name in enumerate(names)}

    def open_events(self, handler: Callable[[CloseEvent], None]) -> None:
        size = ct.sizeof(FlowEvent)

        def _cb(raw: bytes) -> None:
            if len(raw) != size:
                raise RuntimeError(f"close event of {len(raw)} bytes, capture/decode.py expects {size}: "
                                   "update bpf/flow.h and decode.py together")
            self.events_decoded += 1
            handler(decode_event(raw))

        self._ring = self._sys.RingBufReader(fd=self._fds["events"], data_size=self._ringbuf_size, handler=_cb)

    def poll_events(self, *, timeout_ms: int) -> None:
        self._ring.poll(timeout_ms)

    def consume_events(self) -> None:
        self._ring.consume()
