#!/usr/bin/env bash
# Install what the capture sidecar and its kernel tests need on a Debian host.
# Idempotent: safe to run again. Needs root.
#
#  - python3-bpfcc + bpfcc-tools (BCC; tcplife for the benchmark), bpftool and
#    gcc (benchmark: BPF run time, the C load generator)
#  - Debian linux-headers BCC compiles against, linked where BCC looks
#    (/lib/modules/$(uname -r)/build) when the running kernel has none.
#    The sidecar's eBPF code reads no kernel struct through these headers.
#  - iproute2 (ip netns, tc), nftables (packet loss where the kernel has no
#    sch_netem), curl and nginx-light (kernel tests)
#  - tracefs mounted at /sys/kernel/tracing
#  - BCC importable from .venv through a .pth that points at a folder
#    holding only a `bcc` symlink (not all of /usr/lib/python3/dist-packages)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FLOWLAKE_VENV:-$REPO/.venv}"

if [[ $EUID -ne 0 ]]; then
    echo "setup-capture.sh needs root (apt-get, mounts): run it with sudo" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
PKGS=(python3-bpfcc bpfcc-tools libbpfcc linux-headers-amd64
      iproute2 nftables curl nginx-light procps bpftool gcc libc6-dev)
# apt only when something is missing (apt-get update alone costs tens of seconds)
missing=()
for pkg in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
fi

# nginx is only a test fixture: do not leave the packaged one listening.
if pgrep -x nginx >/dev/null 2>&1 && [[ -f /run/nginx.pid ]]; then
    kill "$(cat /run/nginx.pid)" 2>/dev/null || true
fi

# Kernel headers where BCC looks for them.
KREL="$(uname -r)"
if [[ ! -e "/lib/modules/$KREL/build" || ! -e "/lib/modules/$KREL/source/include/linux/kconfig.h" ]]; then
    HDR="$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1)"
    if [[ -z "$HDR" ]]; then
        echo "no Debian linux-headers found under /usr/src after install" >&2
        exit 1
    fi
    mkdir -p "/lib/modules/$KREL"
    ln -sfn "$HDR" "/lib/modules/$KREL/build"
    # Debian splits the tree: arch build dir + a -common source dir.
    COMMON="${HDR%-amd64}-common"
    if [[ -d "$COMMON" ]]; then
        ln -sfn "$COMMON" "/lib/modules/$KREL/source"
    else
        ln -sfn "$HDR" "/lib/modules/$KREL/source"
    fi
    echo "linked /lib/modules/$KREL/build -> $HDR"
fi

# tracefs (BCC attaches tracepoints through it).
if [[ ! -e /sys/kernel/tracing/events ]]; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi
if [[ ! -e /sys/kernel/debug/tracing && -d /sys/kernel/debug ]]; then
    mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug 2>/dev/null || true
fi

# cgroup v2 (the sock_ops program attaches to its root).
if ! mount | grep -q ' type cgroup2 '; then
    mkdir -p /sys/fs/cgroup/unified
    mount -t cgroup2 none /sys/fs/cgroup/unified
fi

# BCC into the venv, and nothing else from dist-packages.
if [[ -x "$VENV/bin/python" ]]; then
    SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    SHIM="$VENV/bcc-shim"
    mkdir -p "$SHIM"
    ln -sfn /usr/lib/python3/dist-packages/bcc "$SHIM/bcc"
    echo "$SHIM" > "$SITE/flowlake-bcc.pth"
    "$VENV/bin/python" -c 'import bcc; print("bcc importable from", bcc.__file__)'
fi
echo "capture setup done"
