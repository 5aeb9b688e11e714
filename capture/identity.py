"""Per-container local identity from a directory a container-runtime hook writes.

One file per container (``<name>.json``, ``.yaml`` or ``.yml``)::

    {"workload": "checkout-api", "ips": ["10.1.0.7", "fd00:1::7"], "container_id": "3f2a..."}

``workload`` and ``ips`` are required; other keys (container id, cgroup
path, ...) are kept for people, not used. The sidecar maps each record's
``local_ip`` to the workload of the file that lists it; IPs no file lists
keep the host's ``identity.local_workload``. A file that cannot be read is
reported and its previous good content is kept (nothing is dropped on a
half-written edit). When two files list one IP, the newest file wins: a
container restarted with another container's old IP takes it over.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

SUFFIXES = (".json", ".yaml", ".yml")


def canonical_ip(text: str) -> str:
    """Contract form of an address (IPv4-mapped IPv6 -> IPv4, RFC 5952 for IPv6)."""
    ip = ipaddress.ip_address(str(text).strip())
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def parse_identity_file(text: str, *, name: str) -> tuple[str, list[str]]:
    """(workload, canonical ips) of one identity file; ValueError says what is wrong."""
    try:
        data = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"{name}: not valid {'JSON' if name.endswith('.json') else 'YAML'} ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{name}: expected an object with 'workload' and 'ips'")
    workload = data.get("workload")
    if not isinstance(workload, str) or not workload.strip():
        raise ValueError(f"{name}: 'workload' must be a non-empty string")
    ips = data.get("ips")
    if not isinstance(ips, list) or not ips:
        raise ValueError(f"{name}: 'ips' must be a non-empty list of IP addresses")
    try:
        return workload.strip(), [canonical_ip(ip) for ip in ips]
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


class LocalIdentitySource:
    """IP -> workload from ``directory``; ``changed()`` is cheap (one stat per file)."""

    def __init__(self, *, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._good: dict[str, tuple[str, list[str]]] = {}  # file name -> last good content
        self._seen: dict[str, tuple[int, int]] = {}  # file name -> (mtime_ns, size) read
        self._signature: tuple | None = None
        self._missing_logged = False
        self.errors = 0

    def _files(self) -> list[tuple[str, int, int]]:
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            if not self._missing_logged:
                log.warning("identity directory %s does not exist yet: using the host identity", self.directory)
                self._missing_logged = True
            return []
        out = []
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(SUFFIXES) or not entry.is_file():
                continue
            st = entry.stat()
            out.append((entry.name, st.st_mtime_ns, st.st_size))
        return sorted(out, key=lambda f: (f[1], f[0]))  # oldest first: the newest file wins an IP

    def changed(self) -> bool:
        """Whether a file was added, removed or modified since the last ``load``."""
        return tuple(self._files()) != self._signature

    def load(self) -> dict[str, str]:
        """Read the directory: canonical local IP -> workload."""
        files = self._files()
        names = {name for name, _, _ in files}
        for name in [n for n in self._good if n not in names]:
            del self._good[name]
            self._seen.pop(name, None)
        mapping: dict[str, str] = {}
        for name, mtime_ns, size in files:
            if self._seen.get(name) != (mtime_ns, size):
                self._seen[name] = (mtime_ns, size)
                try:
                    self._good[name] = parse_identity_file((self.directory / name).read_text(), name=name)
                except (OSError, ValueError) as exc:
                    self.errors += 1
                    kept = "keeping its previous content" if name in self._good else "ignored"
                    log.error("identity file %s/%s unusable, %s: %s", self.directory, name, kept, exc)
            if name not in self._good:
                continue
            workload, ips = self._good[name]
            for ip in ips:
                if ip in mapping and mapping[ip] != workload:
                    log.warning("identity: %s is listed for %s and %s; the newer file %s wins",
                                ip, mapping[ip], workload, name)
                mapping[ip] = workload
        self._signature = tuple(files)
        return mapping
