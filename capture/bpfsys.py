"""Just enough of the bpf(2) and perf_event_open(2) system calls to run a loaded program without BCC.

Used by the sidecar after a short-lived child process compiled the program
with BCC and handed over its file descriptors (capture/compile_child.py), so
the sidecar process never maps LLVM: map lookups, updates, deletes and
iteration; a BPF ring buffer reader (mmap); cgroup attach/detach; attaching a
tracepoint program through a perf event.
"""

from __future__ import annotations

import ctypes as ct
import ctypes.util
import fcntl
import mmap
import os
import select
import struct
from collections.abc import Callable, Iterator

SYS_BPF = 321
SYS_PERF_EVENT_OPEN = 298
BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM, BPF_MAP_GET_NEXT_KEY = 1, 2, 3, 4
BPF_PROG_ATTACH, BPF_PROG_DETACH = 8, 9
BPF_CGROUP_SOCK_OPS = 3
BPF_F_ALLOW_MULTI = 2
PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 8
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
RINGBUF_BUSY = 1 << 31
RINGBUF_DISCARD = 1 << 30
RINGBUF_HDR = 8

_libc = ct.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.syscall.restype = ct.c_long


def bpf(cmd: int, attr) -> int:
    """bpf(2); raises OSError with the errno."""
    res = _libc.syscall(SYS_BPF, cmd, ct.byref(attr), ct.sizeof(attr))
    if res < 0:
        err = ct.get_errno()
        raise OSError(err, f"bpf cmd {cmd}: {os.strerror(err)}")
    return res


class _ElemAttr(ct.Structure):
    _fields_ = [("map_fd", ct.c_uint32), ("pad", ct.c_uint32), ("key", ct.c_uint64), ("value", ct.c_uint64),
                ("flags", ct.c_uint64)]


def possible_cpus() -> int:
    """Number of possible CPUs (the per-CPU value count of per-CPU maps)."""
    text = open("/sys/devices/system/cpu/possible").read().strip()
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


class RawMap:
    """A map by file descriptor: fixed key and value sizes (per-CPU maps: one value per possible CPU)."""

    def __init__(self, *, fd: int, key_size: int, value_size: int, percpu: bool = False) -> None:
        self.fd = fd
        self.key_size = key_size
        self.value_size = value_size
        self.percpu = percpu
        self.ncpus = possible_cpus() if percpu else 1
        self._stride = (value_size + 7) & ~7 if percpu else value_size

    def _buf_value(self):
        return ct.create_string_buffer(self._stride * self.ncpus)

    def lookup(self, key: bytes) -> bytes | None:
        k = ct.create_string_buffer(key, self.key_size)
        v = self._buf_value()
        attr = _ElemAttr(self.fd, 0, ct.addressof(k), ct.addressof(v), 0)
        try:
            bpf(BPF_MAP_LOOKUP_ELEM, attr)
        except FileNotFoundError:
            return None
        return v.raw

    def lookup_percpu_u64_sum(self, key: bytes) -> int:
        raw = self.lookup(key)
        if raw is None:
            return 0
        return sum(struct.unpack_from("<Q", raw, i * self._stride)[0] for i in range(self.ncpus))

    def update(self, key: bytes, value: bytes) -> None:
        k = ct.create_string_buffer(key, self.key_size)
        v = ct.create_string_buffer(value, self.value_size)
        bpf(BPF_MAP_UPDATE_ELEM, _ElemAttr(self.fd, 0, ct.addressof(k), ct.addressof(v), 0))

    def delete(self, key: bytes) -> bool:
        k = ct.create_string_buffer(key, self.key_size)
        try:
            bpf(BPF_MAP_DELETE_ELEM, _ElemAttr(self.fd, 0, ct.addressof(k), 0, 0))
        except FileNotFoundError:
            return False
        return True

    def keys(self) -> Iterator[bytes]:
        cur = None
        nxt = ct.create_string_buffer(self.key_size)
        while True:
            k = ct.create_string_buffer(cur, self.key_size) if cur is not None else None
            attr = _ElemAttr(self.fd, 0, ct.addressof(k) if k is not None else 0, ct.addressof(nxt), 0)
            try:
                bpf(BPF_MAP_GET_NEXT_KEY, attr)
            except FileNotFoundError:
                return
            cur = nxt.raw[:self.key_size]
            yield cur

    def items(self) -> list[tuple[bytes, bytes]]:
        out = []
        for key in list(self.keys()):
            value = self.lookup(key)
            if value is not None:
                out.append((key, value))
        return out


class RingBufReader:
    """Consumer of a BPF_MAP_TYPE_RINGBUF map (the kernel's documented mmap layout)."""

    def __init__(self, *, fd: int, data_size: int, handler: Callable[[bytes], None]) -> None:
        self.fd = fd
        self.size = data_size
        self.mask = data_size - 1
        page = mmap.PAGESIZE
        self.cons = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self.prod = mmap.mmap(fd, page + 2 * data_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self.page = page
        self.handler = handler
        self.poller = select.epoll()
        self.poller.register(fd, select.EPOLLIN)

    def consume(self) -> int:
        cons = struct.unpack_from("<Q", self.cons, 0)[0]
        n = 0
        while True:
            prod = struct.unpack_from("<Q", self.prod, 0)[0]
            if cons >= prod:
                break
            while cons < prod:
                off = self.page + (cons & self.mask)
                hdr = struct.unpack_from("<I", self.prod, off)[0]
                if hdr & RINGBUF_BUSY:
                    struct.pack_into("<Q", self.cons, 0, cons)
                    return n
                length = hdr & ~(RINGBUF_BUSY | RINGBUF_DISCARD)
                if not hdr & RINGBUF_DISCARD:
                    self.handler(self.prod[off + RINGBUF_HDR:off + RINGBUF_HDR + length])
                    n += 1
                cons += (length + RINGBUF_HDR + 7) & ~7
                struct.pack_into("<Q", self.cons, 0, cons)
        return n

    def poll(self, timeout_ms: int) -> int:
        if self.consume():
            return 1
        self.poller.poll(timeout_ms / 1000)
        return self.consume()

    def close(self) -> None:
        self.poller.close()
        self.cons.close()
        self.prod.close()


class _AttachAttr(ct.Structure):
    _fields_ = [("target_fd", ct.c_uint32), ("attach_bpf_fd", ct.c_uint32), ("attach_type", ct.c_uint32),
                ("attach_flags", ct.c_uint32)]


def cgroup_attach(*, prog_fd: int, cgroup_fd: int) -> None:
    bpf(BPF_PROG_ATTACH, _AttachAttr(cgroup_fd, prog_fd, BPF_CGROUP_SOCK_OPS, BPF_F_ALLOW_MULTI))


def cgroup_detach(*, prog_fd: int, cgroup_fd: int) -> None:
    bpf(BPF_PROG_DETACH, _AttachAttr(cgroup_fd, prog_fd, BPF_CGROUP_SOCK_OPS, 0))


def tracepoint_id(category: str, event: str) -> int:
    for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        path = f"{root}/events/{category}/{event}/id"
        if os.path.exists(path):
            return int(open(path).read())
    raise FileNotFoundError(
        f"tracepoint {category}:{event} not found: mount tracefs (mount -t tracefs nodev /sys/kernel/tracing)")


def attach_tracepoint(*, prog_fd: int, category: str, event: str) -> int:
    """Run ``prog_fd`` at the tracepoint (all CPUs); returns the perf event fd (close it to detach)."""
    attr = (ct.c_uint8 * 128)()
    struct.pack_into("<IIQQ", attr, 0, PERF_TYPE_TRACEPOINT, 128, tracepoint_id(category, event), 1)
    struct.pack_into("<I", attr, 48, 1)  # wakeup_events
    fd = _libc.syscall(SYS_PERF_EVENT_OPEN, ct.byref(attr), -1, 0, -1, PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        err = ct.get_errno()
        raise OSError(err, f"perf_event_open for {category}:{event}: {os.strerror(err)}")
    try:
        fcntl.ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog_fd)
        fcntl.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)
    except OSError:
        os.close(fd)
        raise
    return fd
