"""The IP-assignment tracker's view: one event per true change of every holding, lagged,
published late, some duplicated, some lost (never both sides of a hand-over).

Loss rule: for consecutive holdings of one address, the unassign of the earlier
holder and the assign of the next are never both lost, and the assign of the
first holding of an address is never lost: no consumer could attribute through
such a loss, so the ground truth would be unreachable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowlake.sim.fleet import FOREVER, K_EXTERNAL, Fleet
from flowlake.sim.params import SimParams, Window


@dataclass
class Holdings:
    """True holding periods, one row per (ip, holder); to_ms = FOREVER when still held at window end."""

    ip: np.ndarray
    holder: np.ndarray
    from_ms: np.ndarray
    to_ms: np.ndarray
    assign_lost: np.ndarray
    unassign_lost: np.ndarray  # False where there is no unassign


@dataclass
class Events:
    """Event rows as written (duplicates included), plus the time that places each in a file."""

    event_ms: np.ndarray
    published_ms: np.ndarray
    file_ms: np.ndarray  # published_ms, or the re-publication time of a duplicate
    ip: np.ndarray
    assign: np.ndarray  # bool
    holder: np.ndarray
    true_changes: int
    lost: int
    duplicated: int


def holdings(fleet: Fleet, window: Window) -> Holdings:
    """One holding per address of each (non-external) holder, sorted by (ip, from)."""
    real = np.flatnonzero(fleet.h_kind != K_EXTERNAL)
    hs, ips = [], []
    for col in (fleet.h_v4, fleet.h_v6):
        has = real[col[real] >= 0]
        hs.append(has)
        ips.append(col[has])
    holder = np.concatenate(hs)
    ip = np.concatenate(ips)
    frm = fleet.h_from[holder]
    to = np.where(fleet.h_to[holder] >= window.end_ms, FOREVER, fleet.h_to[holder])
    order = np.lexsort((frm, ip))
    z = np.zeros(len(order), dtype=bool)
    return Holdings(ip=ip[order], holder=holder[order], from_ms=frm[order], to_ms=to[order],
                    assign_lost=z.copy(), unassign_lost=z.copy())


def track(held: Holdings, params: SimParams, *, rng: np.random.Generator) -> Events:
    """Events of every true change; decides loss (marked on ``held``) and duplication."""
    n = len(held.ip)
    has_un = held.to_ms < FOREVER
    first_of_ip = np.ones(n, dtype=bool)
    first_of_ip[1:] = held.ip[1:] != held.ip[:-1]
    a_lost = (rng.random(n) < params.event_loss_share) & ~first_of_ip
    u_lost = (rng.random(n) < params.event_loss_share) & has_un
    # never lose both the unassign of a holding and the assign of the next holding of that ip
    prev_u_lost = np.zeros(n, dtype=bool)
    prev_u_lost[1:] = u_lost[:-1] & ~first_of_ip[1:]
    a_lost &= ~prev_u_lost
    held.assign_lost[:] = a_lost
    held.unassign_lost[:] = u_lost

    idx_a = np.arange(n)
    idx_u = np.flatnonzero(has_un)
    true_ms = np.concatenate([held.from_ms[idx_a], held.to_ms[idx_u]])
    row = np.concatenate([idx_a, idx_u])
    assign = np.concatenate([np.ones(n, dtype=bool), np.zeros(len(idx_u), dtype=bool)])
    lost = np.concatenate([a_lost, u_lost[idx_u]])
    m = len(row)
    event_ms = true_ms + rng.integers(0, params.max_event_lag_ms + 1, size=m)
    lo, hi = max(params.publish_delay_min_ms, 1), max(params.publish_delay_max_ms, 1)
    delay = np.exp(rng.uniform(np.log(lo), np.log(hi) + 1e-12, size=m)).astype(np.int64)
    published = event_ms + np.clip(delay, params.publish_delay_min_ms, params.publish_delay_max_ms)
    dup = (rng.random(m) < params.event_duplicate_share) & ~lost
    # a re-publication lands in a later file than the first copy
    republish = published + params.event_file_minutes * 60_000 + rng.integers(0, params.republish_max_ms + 1, size=m)

    keep = ~lost
    d = np.flatnonzero(dup)
    k = np.flatnonzero(keep)
    sel = np.concatenate([k, d])
    file_ms = np.concatenate([published[k], republish[d]])
    return Events(event_ms=event_ms[sel], published_ms=published[sel], file_ms=file_ms,
                  ip=held.ip[row[sel]], assign=assign[sel], holder=held.holder[row[sel]],
                  true_changes=m, lost=int(lost.sum()), duplicated=int(dup.sum()))
