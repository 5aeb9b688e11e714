"""The IP-assignment tracker's view: one event per true change of every holding, lagged,
published late, some duplicated, some lost.

Loss rule: random losses (``event_loss_share``) never take both the unassign of
one holder and the assign of the next holder of that address, and the assign of
the first holding of an address is never lost. The planted handover patterns of
non-default profiles break that on purpose: ``handover_both_lost_share`` loses
both sides of a handover, ``handover_late_assign_share`` loses the unassign and
lags the next assign from the heavy tail. The ground truth marks every loss.
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
    assign_event_ms: np.ndarray  # event_ms the tracker gave the assign (also when that event was lost)
    unassign_event_ms: np.ndarray  # same for the unassign; FOREVER where there is none


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
    resent: int = 0  # sent again with a later published_ms (not identical rows)
    lag_tail: int = 0  # events (lost ones included) whose lag came from the heavy tail
    handovers_both_lost: int = 0
    handovers_late_assign: int = 0


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
                    assign_lost=z.copy(), unassign_lost=z.copy(),
                    assign_event_ms=np.zeros(len(order), dtype=np.int64),
                    unassign_event_ms=np.full(len(order), FOREVER, dtype=np.int64))


def track(held: Holdings, params: SimParams, *, rng: np.random.Generator,
          rng_extra: np.random.Generator | None = None) -> Events:
    """Events of every true change; decides loss (marked on ``held``) and duplication.

    ``rng_extra`` draws only what the non-default knobs (lag tail, handover patterns,
    re-sends) use, so the default profile consumes ``rng`` exactly as before."""
    extra = rng_extra if rng_extra is not None else np.random.default_rng([params.seed, 6])
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
    # planted handover patterns (issue 12): holding j takes over from holding j-1 of its ip
    both = late = np.zeros(n, dtype=bool)
    if params.handover_both_lost_share > 0 or params.handover_late_assign_share > 0:
        u = extra.random(n)
        both = ~first_of_ip & (u < params.handover_both_lost_share)
        late = ~first_of_ip & ~both & (u < params.handover_both_lost_share + params.handover_late_assign_share)
        u_lost[:-1] |= (both | late)[1:]
        a_lost = (a_lost & ~late) | both
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
    n_tail = 0
    if params.event_lag_tail_share > 0 or late.any():
        tail = (extra.random(m) < params.event_lag_tail_share) | np.concatenate([late, np.zeros(len(idx_u), bool)])
        t_lo, t_hi = max(params.max_event_lag_ms, 1), max(params.event_lag_tail_max_ms, 1)
        tail_ms = true_ms + np.exp(extra.uniform(np.log(t_lo), np.log(t_hi) + 1e-12, size=m)).astype(np.int64)
        # the tracker reports an assign before that holder's own release (its events stay in order)
        cap = np.where(assign & has_un[row], held.to_ms[row] - 1, FOREVER)
        event_ms = np.where(tail, np.maximum(event_ms, np.minimum(tail_ms, cap)), event_ms)
        # and its unassign after its assign, also for holdings shorter than the ordinary lag
        event_ms[n:] = np.maximum(event_ms[n:], event_ms[idx_u] + 1)
        n_tail = int(tail.sum())
    published = event_ms + np.clip(delay, params.publish_delay_min_ms, params.publish_delay_max_ms)
    dup = (rng.random(m) < params.event_duplicate_share) & ~lost
    # a re-publication lands in a later file than the first copy
    republish = published + params.event_file_minutes * 60_000 + rng.integers(0, params.republish_max_ms + 1, size=m)
    held.assign_event_ms[:] = event_ms[:n]
    held.unassign_event_ms[idx_u] = event_ms[n:]

    keep = ~lost
    d = np.flatnonzero(dup)
    k = np.flatnonzero(keep)
    sel = np.concatenate([k, d])
    file_ms = np.concatenate([published[k], republish[d]])
    pub = np.concatenate([published[k], published[d]])
    r = np.zeros(0, dtype=np.int64)
    if params.event_resend_share > 0:  # the tracker sends an event again: same row, later published_ms
        r = np.flatnonzero((extra.random(m) < params.event_resend_share) & keep)
        again = published[r] + params.event_file_minutes * 60_000 + extra.integers(0, params.republish_max_ms + 1,
                                                                                   size=len(r))
        sel = np.concatenate([sel, r])
        file_ms = np.concatenate([file_ms, again])
        pub = np.concatenate([pub, again])
    return Events(event_ms=event_ms[sel], published_ms=pub, file_ms=file_ms,
                  ip=held.ip[row[sel]], assign=assign[sel], holder=held.holder[row[sel]],
                  true_changes=m, lost=int(lost.sum()), duplicated=int(dup.sum()), resent=len(r),
                  lag_tail=n_tail, handovers_both_lost=int(both.sum()), handovers_late_assign=int(late.sum()))
