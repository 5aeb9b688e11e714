"""Per-record evidence truth: does ANY evidence name the true remote owner at first_start_ms?

``truth_evidence`` of a record (about its remote side):

* ``heartbeat``: the true remote holder runs a sidecar and that sidecar wrote at least one
  record with ``local_ip`` = the record's ``remote_ip`` in the same interval;
* ``event``: otherwise, the tracker delivered the assign event of that holding (the
  (remote_ip, true holder) pair) - in any file, at any publication time;
* ``none``: otherwise (an internal address): no heartbeat and the holding's assign event
  was lost, so no method can name the owner: the floor for unattributed records;
* ``cidr``: the remote is an external peer (known from its address block, no holder).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowlake.sim.events import Holdings
from flowlake.sim.fleet import K_EXTERNAL, Fleet
from flowlake.sim.flows import Records
from flowlake.sim.params import Window

EVIDENCE = ("heartbeat", "event", "none", "cidr")
E_HEARTBEAT, E_EVENT, E_NONE, E_CIDR = range(len(EVIDENCE))
NO_EVENT = np.int64(-1)


@dataclass
class Evidence:
    """Per record: evidence code (index into EVIDENCE) and the delivered assign's event_ms (-1: none)."""

    code: np.ndarray
    assign_event_ms: np.ndarray


class HoldingIndex:
    """Finds the holding row of (holder, ip) pairs; built once per run."""

    def __init__(self, held: Holdings, n_ips: int) -> None:
        self.n_ips = np.int64(max(n_ips, 1))
        key = held.holder.astype(np.int64) * self.n_ips + held.ip.astype(np.int64)
        self.order = np.argsort(key, kind="stable")
        self.keys = key[self.order]
        if len(self.keys) > 1 and np.any(self.keys[1:] == self.keys[:-1]):
            raise RuntimeError("a holder holds one address twice (simulator bug)")
        self.held = held

    def rows(self, holder: np.ndarray, ip: np.ndarray) -> np.ndarray:
        """Holding row per (holder, ip), -1 where there is none."""
        key = holder.astype(np.int64) * self.n_ips + ip.astype(np.int64)
        pos = np.clip(np.searchsorted(self.keys, key), 0, max(len(self.keys) - 1, 0))
        hit = (self.keys[pos] == key) if len(self.keys) else np.zeros(len(key), dtype=bool)
        return np.where(hit, self.order[pos], -1)


def record_evidence(rec: Records, index: HoldingIndex, fleet: Fleet, window: Window) -> Evidence:
    """Evidence codes of one chunk's records (a chunk holds whole intervals, so the heartbeat
    test needs no other chunk)."""
    rh = rec.remote_holder.astype(np.int64)
    n = len(rh)
    code = np.full(n, E_NONE, dtype=np.int8)
    external = fleet.h_kind[rh] == K_EXTERNAL
    code[external] = E_CIDR

    # heartbeat: a record of the remote holder's own sidecar on remote_ip in the same interval
    n_int = np.int64(window.n_intervals)
    n_ips = index.n_ips
    own = (rec.holder.astype(np.int64) * n_ips + rec.local_ip.astype(np.int64)) * n_int + rec.interval
    own = np.unique(own)
    ask = (rh * n_ips + rec.remote_ip.astype(np.int64)) * n_int + rec.interval
    pos = np.clip(np.searchsorted(own, ask), 0, max(len(own) - 1, 0))
    beat = ~external & fleet.h_sidecar[rh] & (own[pos] == ask if len(own) else False)
    code[beat] = E_HEARTBEAT

    # event: the holding's assign was delivered
    row = index.rows(rh, rec.remote_ip)
    internal = ~external
    if np.any(internal & (row < 0)):
        raise RuntimeError("a record's remote holder has no holding of remote_ip (simulator bug)")
    r = np.where(row < 0, 0, row)
    delivered = internal & ~index.held.assign_lost[r]
    code[delivered & ~beat] = E_EVENT
    assign_ms = np.where(delivered, index.held.assign_event_ms[r], NO_EVENT)
    return Evidence(code=code, assign_event_ms=assign_ms)
