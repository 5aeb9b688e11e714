"""`flowlake capture doctor`: what this host lacks for the sidecar, and how to fix it."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

SETUP = "sudo bash scripts/setup-capture.sh"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def check_privileges() -> Check:
    ok = os.geteuid() == 0 or _has_caps()
    return Check("privileges", ok, "root" if os.geteuid() == 0 else f"uid {os.geteuid()}",
                 "run as root (or grant CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON)")


def _has_caps() -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                eff = int(line.split()[1], 16)
                return bool(eff & (1 << 39)) and bool(eff & (1 << 21))  # CAP_BPF, CAP_SYS_ADMIN
    except OSError:
        pass
    return False


def check_bcc() -> Check:
    try:
        import bcc  # noqa: F401, PLC0415
    except ImportError as exc:
        return Check("bcc", False, f"not importable ({exc})", f"{SETUP} (installs python3-bpfcc, links it into .venv)")
    return Check("bcc", True, f"importable from {Path(bcc.__file__).parent}")


def check_headers() -> Check:
    build = Path(f"/lib/modules/{platform.release()}/build")
    source = Path(f"/lib/modules/{platform.release()}/source")
    kconfig = [p for p in (build, source) if (p / "include/linux/kconfig.h").is_file()]
    if build.exists() and kconfig:
        return Check("kernel headers", True, f"{build} -> {os.path.realpath(build)} "
                     "(the program reads no kernel struct, so a version mismatch is harmless)")
    if Path("/sys/kernel/kheaders.tar.xz").exists():
        return Check("kernel headers", True, "in-kernel headers (CONFIG_IKHEADERS)")
    return Check("kernel headers", False, f"nothing usable at {build}", f"{SETUP} (links Debian linux-headers there)")


def check_tracefs() -> Check:
    ok = Path("/sys/kernel/tracing/events").is_dir() or Path("/sys/kernel/debug/tracing/events").is_dir()
    return Check("tracefs", ok, "mounted" if ok else "not mounted",
                 "mount -t tracefs nodev /sys/kernel/tracing (or run " + SETUP + ")")


def check_cgroup2(path: str = "/sys/fs/cgroup/unified") -> Check:
    mounts = Path("/proc/mounts").read_text().split("\n")
    v2 = [line.split()[1] for line in mounts if " cgroup2 " in line]
    ok = Path(path).is_dir() and path in v2
    return Check("cgroup v2", ok, f"mounted at {', '.join(v2) or 'nowhere'}",
                 f"mount -t cgroup2 none {path} (or set kernel.cgroup_path to a cgroup2 mount)")


def check_btf() -> Check:
    ok = Path("/sys/kernel/btf/vmlinux").exists()
    return Check("BTF", ok, "present" if ok else "missing (BCC still works; ring buffer needs kernel >= 5.8)")


def check_kernel() -> Check:
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    ok = (major, minor) >= (5, 10)
    return Check("kernel version", ok, platform.release(),
                 "needs Linux >= 5.10 (sock_ops header parsing, ring buffer)")


def run_checks(*, cgroup_path: str = "/sys/fs/cgroup/unified") -> list[Check]:
    """Every check, in the order they should be fixed."""
    return [check_privileges(), check_kernel(), check_bcc(), check_headers(), check_tracefs(),
            check_cgroup2(cgroup_path), check_btf()]


def format_report(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"[{'ok' if c.ok else 'MISSING'}] {c.name}: {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"    fix: {c.fix}")
    bad = [c for c in checks if not c.ok]
    lines.append("all good: `flowlake capture run` can start" if not bad else f"{len(bad)} problem(s) to fix")
    return "\n".join(lines)
