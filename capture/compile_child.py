"""Compile and load bpf/flow.bpf.c with BCC in a short-lived child, hand the fds to the parent.

Standard library and BCC only (no pyarrow): the child's peak is the compile's.

BCC compiles with LLVM/clang in-process, which costs about 190 MB of RSS at
its peak. Run here, that peak belongs to a child that exits right after; the
sidecar receives the loaded program and map file descriptors over a Unix
socket (SCM_RIGHTS) and drives them with plain system calls (bpfsys.py).

    python -m flowlake.capture.compile_child <socket fd> <json options>
"""

from __future__ import annotations

import ctypes as ct
import json
import mmap
import os
import socket
import subprocess
import sys
from pathlib import Path

BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"

# name -> (percpu, ringbuf)
MAPS = {"conns": (False, False), "flows0": (False, False), "flows1": (False, False), "ctl": (False, False),
        "drops": (True, False), "stats": (True, False), "events": (False, True)}
TRACEPOINT_FN = b"tracepoint__tcp__tcp_receive_reset"


def bpf_source_dir() -> Path:
    """Folder holding flow.bpf.c and flow.h ($FLOWLAKE_BPF_DIR overrides)."""
    return Path(os.environ.get("FLOWLAKE_BPF_DIR", BPF_DIR))


def import_bcc():
    """Import BCC or raise an error saying how to install it."""
    try:
        import bcc  # noqa: PLC0415
    except ImportError as exc:
        raise RuntimeError(
            "BCC is not importable: run `sudo bash scripts/setup-capture.sh` "
            f"(installs python3-bpfcc and links it into the venv) ({exc})"
        ) from None
    return bcc


def build_cflags(src: Path, *, max_conns: int, max_flows: int, ringbuf_pages: int) -> list[str]:
    """Compiler flags: map sizes are -D flags, never text substitution."""
    return [
        f"-I{src}",
        f"-DFLOWLAKE_MAX_CONNS={int(max_conns)}",
        f"-DFLOWLAKE_MAX_FLOWS={int(max_flows)}",
        f"-DFLOWLAKE_RINGBUF_PAGES={int(ringbuf_pages)}",
    ]


def compile_and_send(sock: socket.socket, *, max_conns: int, max_flows: int, ringbuf_pages: int) -> None:
    bcc = import_bcc()
    src = bpf_source_dir()
    b = bcc.BPF(src_file=str(src / "flow.bpf.c").encode(),
                cflags=build_cflags(src, max_conns=max_conns, max_flows=max_flows, ringbuf_pages=ringbuf_pages))
    sockops = b.load_func(b"flowlake_sockops", bcc.BPF.SOCK_OPS)
    tp = b.load_func(TRACEPOINT_FN, bcc.BPF.TRACEPOINT)
    fds, desc = [sockops.fd, tp.fd], {"progs": ["flowlake_sockops", "tcp_receive_reset"], "maps": {}}
    for name, (percpu, ringbuf) in MAPS.items():
        table = b[name.encode()]
        fds.append(table.map_fd)
        if ringbuf:
            info = {"ringbuf": True, "data_size": int(ringbuf_pages) * mmap.PAGESIZE}
        else:
            leaf = ct.sizeof(table.Leaf)
            if percpu:  # BCC's per-CPU Leaf is one value; the raw size is what the C declares (u64)
                leaf = 8
            info = {"key_size": ct.sizeof(table.Key), "value_size": leaf, "percpu": percpu}
        desc["maps"][name] = info
    desc["fd_order"] = ["flowlake_sockops", "tcp_receive_reset", *MAPS]
    socket.send_fds(sock, [json.dumps(desc).encode()], fds)


def receive(*, max_conns: int, max_flows: int, ringbuf_pages: int, timeout_s: float = 120.0) -> tuple[dict, dict]:
    """Run the child; returns (description, name -> fd). Raises RuntimeError with the child's error."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    opts = json.dumps({"max_conns": max_conns, "max_flows": max_flows, "ringbuf_pages": ringbuf_pages})
    proc = subprocess.Popen([sys.executable, "-m", "flowlake.capture.compile_child", str(child.fileno()), opts],
                            pass_fds=[child.fileno()], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    child.close()
    try:
        parent.settimeout(timeout_s)
        try:
            msg, fds, _flags, _addr = socket.recv_fds(parent, 1 << 16, 16)
        except (OSError, TimeoutError) as exc:
            msg, fds = b"", []
            err = exc
        else:
            err = None
        _, stderr = proc.communicate(timeout=timeout_s)
    finally:
        parent.close()
    if not msg or proc.returncode != 0:
        for fd in fds:
            os.close(fd)
        raise RuntimeError(f"compiling the BPF program in a child failed (exit {proc.returncode}, {err}):\n"
                           f"{stderr.decode(errors='replace')[-3000:]}")
    desc = json.loads(msg)
    return desc, dict(zip(desc["fd_order"], fds))


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    opts = json.loads(sys.argv[2])
    compile_and_send(sock, **opts)
    sock.close()


if __name__ == "__main__":
    main()
