"""Vectorised flow records: conversations (pairs of holders), the daily cycle, connections
per interval, and aggregation into contract records (one per side, per interval, per key).

Two kinds of conversation: *bursty* pairs open short connections (opened = closed
within one interval), *persistent* pairs keep a chain of long connections (a
connection pool) that spans intervals; an interval it was already open in gets
first_start_ms = interval start. Connections exist only while both holders are
between ready (assign + boot) and drain (release - drain).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowlake.sim.fleet import EXTERNAL_CLASSES, K_EXTERNAL, Fleet
from flowlake.sim.params import DAY_MS, HOUR_MS, SimParams, Window

MSS = 1448
TREND_STREAM = 17  # seeds the random stream that picks the trending edges
EXTERNAL_RTT_US = {"external:aws-s3": 1_200.0, "external:github": 18_000.0,
                   "external:cloudflare": 4_000.0, "external:internet": 35_000.0}
assert set(EXTERNAL_RTT_US) == set(EXTERNAL_CLASSES)


@dataclass
class Pairs:
    client: np.ndarray
    server: np.ndarray
    c_ip: np.ndarray
    s_ip: np.ndarray
    port: np.ndarray
    ov_start: np.ndarray
    ov_end: np.ndarray
    rate: np.ndarray
    persistent: np.ndarray
    c_side: np.ndarray
    s_side: np.ndarray
    rtt_us: np.ndarray
    loss: np.ndarray
    resp_scale: np.ndarray
    trend: np.ndarray  # daily growth of the pair's bytes (0 = none; a planted trend on some edges)
    first_i: np.ndarray  # first/last window interval the pair can talk in
    last_i: np.ndarray

    def __len__(self) -> int:
        return len(self.client)

    def take(self, keep: np.ndarray) -> "Pairs":
        return Pairs(**{k: v[keep] for k, v in self.__dict__.items()})

    @property
    def sides(self) -> np.ndarray:
        return self.c_side.astype(np.int64) + self.s_side.astype(np.int64)


@dataclass
class Records:
    """Aggregated raw records (numpy columns, sorted by holder, interval, key)."""

    holder: np.ndarray
    interval: np.ndarray  # window interval index
    direction: np.ndarray  # 0 outbound, 1 inbound
    local_ip: np.ndarray
    remote_ip: np.ndarray
    port: np.ndarray  # the server's port
    first_start: np.ndarray
    opened: np.ndarray
    closed: np.ndarray
    bytes_sent: np.ndarray
    bytes_received: np.ndarray
    segments_sent: np.ndarray
    segments_received: np.ndarray
    retransmits: np.ndarray
    srtt_us_max: np.ndarray
    remote_holder: np.ndarray  # true holder of remote_ip at first_start

    def __len__(self) -> int:
        return len(self.holder)


def cycle_weights(params: SimParams, window: Window) -> np.ndarray:
    """Relative traffic per window interval: daily cycle x weekend dip x growth."""
    mid = window.start_ms + window.interval_ms * (np.arange(window.n_intervals) + 0.5)
    hour = (mid % DAY_MS) / HOUR_MS
    daily = 1.0 + params.daily_amplitude * np.cos(2 * np.pi * (hour - params.daily_peak_hour_utc) / 24.0)
    weekday = ((mid // DAY_MS).astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    weekly = np.where(weekday >= 5, 1.0 - params.weekend_dip, 1.0)
    growth = (1.0 + params.growth_per_day) ** ((mid - window.start_ms) / DAY_MS)
    return daily * weekly * growth


def _overlapping(fleet: Fleet, C: np.ndarray, S: np.ndarray, w0: int, w1: int,
                 block: int = 2_000_000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(client, server, talk start, talk end) of holder pairs that can talk > 2 s inside the window.

    Built in blocks of client holders so that long windows with many short-lived
    holders never materialise the full cross product."""
    out = []
    step = max(1, block // len(S))
    for k in range(0, len(C), step):
        c, s = (a.ravel() for a in np.meshgrid(C[k:k + step], S, indexing="ij"))
        ov_start = np.maximum(fleet.h_ready[c], fleet.h_ready[s])
        ov_end = np.minimum(fleet.h_drain[c], fleet.h_drain[s])
        ok = (np.minimum(ov_end, w1) - np.maximum(ov_start, w0)) > 2_000
        out.append((c[ok], s[ok], ov_start[ok], ov_end[ok]))
    return tuple(np.concatenate(cols) for cols in zip(*out))  # type: ignore[return-value]


def _concurrent(fleet: Fleet, holders: np.ndarray, w0: int, w1: int) -> float:
    """Average number of the holders alive in the window (load is spread over them)."""
    alive = np.minimum(fleet.h_drain[holders], w1) - np.maximum(fleet.h_ready[holders], w0)
    return max(1.0, float(np.clip(alive, 0, None).sum()) / (w1 - w0))


def build_pairs(fleet: Fleet, params: SimParams, window: Window, *, rng: np.random.Generator) -> Pairs:
    """Every (client holder, server holder) of an edge whose talking times overlap the window."""
    parts: list[dict[str, np.ndarray]] = []
    w0, w1, I = window.start_ms, window.end_ms, window.interval_ms
    # own random stream: planting a trend leaves every other draw (and the default output) as it was
    trending = np.random.default_rng([params.seed, TREND_STREAM]).random(len(fleet.edges)) < params.trend_edge_share
    for j, edge in enumerate(fleet.edges):
        C, S = fleet.holders_of(edge.client), fleet.holders_of(edge.server)
        if len(C) == 0 or len(S) == 0:
            continue
        c, s, ov_start, ov_end = _overlapping(fleet, C, S, w0, w1)
        keep = np.ones(len(c), dtype=bool)
        if fleet.workloads[edge.server].kind == K_EXTERNAL:  # each client uses a few peer addresses
            keep &= rng.random(len(c)) < min(1.0, 5.0 / len(S))
        if fleet.workloads[edge.client].kind == K_EXTERNAL:
            keep &= rng.random(len(c)) < min(1.0, 8.0 / len(C))
        v4 = (fleet.h_v4[c] >= 0) & (fleet.h_v4[s] >= 0)
        v6 = (fleet.h_v6[c] >= 0) & (fleet.h_v6[s] >= 0)
        use6 = v6 & (~v4 | (rng.random(len(c)) < params.ipv6_flow_share))
        keep &= v4 | v6
        c_side, s_side = fleet.h_sidecar[c], fleet.h_sidecar[s]
        keep &= c_side | s_side
        ext_c = fleet.h_kind[c] == K_EXTERNAL
        ext_s = fleet.h_kind[s] == K_EXTERNAL
        if ext_c.any() or ext_s.any():
            name = fleet.workloads[edge.server if ext_s.any() else edge.client].name
            rtt = np.full(len(c), EXTERNAL_RTT_US[name])
            loss = np.full(len(c), 4e-3)
        else:
            same_az = fleet.h_az[c] == fleet.h_az[s]
            rtt = np.where(same_az, 250.0, 900.0)
            loss = np.where(same_az, 3e-4, 8e-4)
        n = len(c)
        parts.append({
            "client": c, "server": s,
            "c_ip": np.where(use6, fleet.h_v6[c], fleet.h_v4[c]).astype(np.int32),
            "s_ip": np.where(use6, fleet.h_v6[s], fleet.h_v4[s]).astype(np.int32),
            "port": np.full(n, edge.port, dtype=np.int32),
            "ov_start": ov_start, "ov_end": ov_end,
            "rate": edge.weight * rng.lognormal(0.0, 0.7, size=n) / _concurrent(fleet, S, w0, w1),
            "persistent": (rng.random(n) < params.persistent_pair_share) & ~ext_c & ~ext_s,
            "c_side": c_side, "s_side": s_side, "rtt_us": rtt, "loss": loss,
            "resp_scale": np.full(n, fleet.workloads[edge.server].resp_scale),
            "trend": np.full(n, params.trend_per_day if trending[j] else 0.0),
            "keep": keep,
        })
    if not parts:
        raise RuntimeError("the fleet has no conversations: raise n_workloads or edges_per_workload")
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    keep = cols.pop("keep")
    cols = {k: v[keep] for k, v in cols.items()}
    cols["first_i"] = (np.maximum(cols["ov_start"], w0) - w0) // I
    cols["last_i"] = (np.minimum(cols["ov_end"], w1) - 1 - w0) // I
    return Pairs(**cols)


def expected_records(pairs: Pairs, weights: np.ndarray, base: float) -> float:
    """Expected record count of bursty pairs at rate multiplier ``base`` (duplicates merge)."""
    cum = np.concatenate([[0.0], np.cumsum(weights)])
    n = (pairs.last_i - pairs.first_i + 1).astype(float)
    mass = cum[pairs.last_i + 1] - cum[pairs.first_i]
    return float(np.sum(pairs.sides * n * -np.expm1(-base * pairs.rate * mass / n)))


def saturation(pairs: Pairs) -> float:
    return float(np.sum(pairs.sides * (pairs.last_i - pairs.first_i + 1)))


def calibrate(pairs: Pairs, weights: np.ndarray, target: float) -> float:
    """Rate multiplier giving ``target`` expected bursty records (bisection, log scale)."""
    if target <= 0 or len(pairs) == 0:
        return 0.0
    lo, hi = 1e-9, 1.0
    while expected_records(pairs, weights, hi) < target and hi < 1e12:
        hi *= 4
    for _ in range(60):
        mid = np.sqrt(lo * hi)
        if expected_records(pairs, weights, mid) < target:
            lo = mid
        else:
            hi = mid
    return float(hi)


def _bursty(pairs: Pairs, weights: np.ndarray, base: float, window: Window, rng: np.random.Generator,
            i0: int, i1: int) -> dict:
    """Short connections of bursty pairs in window intervals [i0, i1)."""
    cum = np.concatenate([[0.0], np.cumsum(weights)])
    a, b = np.maximum(pairs.first_i, i0), np.minimum(pairs.last_i, i1 - 1)
    mass = np.where(b >= a, cum[np.maximum(b, a) + 1] - cum[a], 0.0)
    k = rng.poisson(base * pairs.rate * mass)
    p = np.repeat(np.arange(len(pairs)), k)
    u = cum[a[p]] + rng.random(len(p)) * mass[p]
    i = np.clip(np.searchsorted(cum, u, side="right") - 1, a[p], b[p])
    istart = window.start_ms + i * window.interval_ms
    lo = np.maximum(istart, pairs.ov_start[p])
    hi = np.minimum(istart + window.interval_ms, pairs.ov_end[p]) - 4
    ok = hi > lo
    p, i, lo, hi = p[ok], i[ok], lo[ok], hi[ok]
    t = lo + (rng.random(len(p)) * (hi - lo)).astype(np.int64)
    conns = 1 + rng.poisson(0.5 * weights[i])
    req = np.rint(conns * rng.lognormal(6.5, 1.0, size=len(p))).astype(np.int64)
    resp = np.rint(conns * rng.lognormal(8.0, 1.2, size=len(p)) * pairs.resp_scale[p]).astype(np.int64)
    d = rng.integers(0, 4, size=len(p))
    return {"pair": p, "i": i, "first_c": t, "first_s": t + d, "opened": conns, "closed": conns,
            "req": req, "resp": resp}


@dataclass
class Connections:
    """Long connections of persistent pairs (a chain per pair), with the window intervals they touch."""

    pair: np.ndarray
    start: np.ndarray
    end: np.ndarray
    ia: np.ndarray
    ib: np.ndarray
    d: np.ndarray  # server-side handshake offset, ms
    req_rate: np.ndarray  # bytes/s
    resp_rate: np.ndarray


def persistent_connections(pairs: Pairs, params: SimParams, window: Window, *, rng: np.random.Generator) -> Connections:
    """Chains of long connections of every persistent pair, closing before either side drains."""
    w0, w1, I = window.start_ms, window.end_ms, window.interval_ms
    idx = np.flatnonzero(pairs.persistent)
    n = len(idx)
    s0 = np.maximum(pairs.ov_start[idx] + rng.integers(0, 5_000, size=n), w0 - 2 * HOUR_MS)
    e0 = np.minimum(pairs.ov_end[idx], w1 + I)
    ok = e0 - s0 > 2_000
    idx, s0, e0 = idx[ok], s0[ok], e0[ok]
    mean_ms = params.persistent_conn_mean_min * 60_000
    m = rng.poisson((e0 - s0) / mean_ms)
    bp = np.repeat(np.arange(len(idx)), m)
    breaks = s0[bp] + (rng.random(len(bp)) * (e0[bp] - s0[bp])).astype(np.int64)
    owner = np.concatenate([np.arange(len(idx)), bp])
    start = np.concatenate([s0, breaks])
    order = np.lexsort((start, owner))
    owner, start = owner[order], start[order]
    last = np.ones(len(owner), dtype=bool)
    last[:-1] = owner[1:] != owner[:-1]
    nxt = np.empty_like(start)
    nxt[:-1] = start[1:]
    gap = np.minimum(rng.integers(100, 3_000, size=len(start)), np.maximum(nxt - start, 0) // 2)
    end = np.where(last, e0[owner], nxt - gap)
    # a start in the last 4 ms of an interval moves to the next interval (both sides in one interval)
    late = (start - w0) % I > I - 4
    start = np.where(late, start + (I - (start - w0) % I), start)
    good = end - start > 50
    owner, start, end = owner[good], start[good], end[good]
    pair = idx[owner]
    k = len(pair)
    return Connections(
        pair=pair, start=start, end=end,
        ia=np.maximum((start - w0) // I, 0), ib=np.minimum((end - w0) // I, window.n_intervals - 1),
        d=rng.integers(0, 4, size=k), req_rate=rng.lognormal(4.0, 1.0, size=k),
        resp_rate=rng.lognormal(6.0, 1.2, size=k) * pairs.resp_scale[pair],
    )


def _persistent(conns: Connections, weights: np.ndarray, window: Window, i0: int, i1: int) -> dict:
    """The persistent connections' share of window intervals [i0, i1)."""
    w0, I = window.start_ms, window.interval_ms
    ia, ib = np.maximum(conns.ia, i0), np.minimum(conns.ib, i1 - 1)
    cnt = np.maximum(ib - ia + 1, 0)
    c = np.repeat(np.arange(len(cnt)), cnt)
    offs = np.arange(len(c)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    i = ia[c] + offs
    cs, ce = conns.start[c], conns.end[c]
    istart = w0 + i * I
    iend = istart + I
    opened = cs >= istart
    closed = ce < iend
    secs = (np.minimum(ce, iend) - np.maximum(cs, istart)) / 1000.0
    return {"pair": conns.pair[c], "i": i, "first_c": np.where(opened, cs, istart),
            "first_s": np.where(opened, cs + conns.d[c], istart),
            "opened": opened.astype(np.int64), "closed": closed.astype(np.int64),
            "req": np.rint(conns.req_rate[c] * secs * weights[i]).astype(np.int64),
            "resp": np.rint(conns.resp_rate[c] * secs * weights[i]).astype(np.int64)}


def generate_records(pairs: Pairs, conns: Connections, weights: np.ndarray, *, base: float, window: Window,
                     rng: np.random.Generator, i0: int = 0, i1: int | None = None) -> Records:
    """Connections of every pair in window intervals [i0, i1), aggregated into contract records."""
    i1 = window.n_intervals if i1 is None else i1
    bursty = np.flatnonzero(~pairs.persistent)
    xb = _bursty(pairs.take(bursty), weights, base, window, rng, i0, i1)
    xb["pair"] = bursty[xb["pair"]]
    xp = _persistent(conns, weights, window, i0, i1)
    x = {k: np.concatenate([xb[k], xp[k]]) for k in xb}
    del xb, xp
    p = x["pair"]
    n = len(p)
    if pairs.trend.any():  # a planted trend: the bytes of trending pairs grow by day
        growth = (1.0 + pairs.trend[p]) ** (x["i"] * window.interval_ms / DAY_MS)
        x["req"], x["resp"] = (np.rint(x[k] * growth).astype(np.int64) for k in ("req", "resp"))
    req, resp, ctrl = x["req"], x["resp"], x["opened"] + x["closed"]
    data_c, data_s = -(-req // MSS), -(-resp // MSS)
    ack_c, ack_s = -(-data_s // 2), -(-data_c // 2)
    retx_c = rng.poisson(data_c * pairs.loss[p])
    retx_s = rng.poisson(data_s * pairs.loss[p])
    rtt = pairs.rtt_us[p]
    srtt_c = np.rint(rtt * rng.lognormal(0.0, 0.25, size=n) * (1 + (retx_c > 0))).astype(np.int64)
    srtt_s = np.rint(rtt * rng.lognormal(0.0, 0.25, size=n) * (1 + (retx_s > 0))).astype(np.int64)

    mc, ms = pairs.c_side[p], pairs.s_side[p]

    def both(client_vals: np.ndarray, server_vals: np.ndarray) -> np.ndarray:
        return np.concatenate([client_vals[mc], server_vals[ms]])

    holder = both(pairs.client[p], pairs.server[p]).astype(np.int64)
    interval = both(x["i"], x["i"]).astype(np.int64)
    direction = np.concatenate([np.zeros(mc.sum(), dtype=np.int64), np.ones(ms.sum(), dtype=np.int64)])
    remote_ip = both(pairs.s_ip[p], pairs.c_ip[p]).astype(np.int64)
    port = both(pairs.port[p], pairs.port[p]).astype(np.int64)
    first = both(x["first_c"], x["first_s"])

    k1 = holder * window.n_intervals + interval
    k2 = (remote_ip * 65536 + port) * 2 + direction
    order = np.lexsort((first, k2, k1))
    k1, k2 = k1[order], k2[order]
    starts = np.concatenate([[0], np.flatnonzero((k1[1:] != k1[:-1]) | (k2[1:] != k2[:-1])) + 1]).astype(np.int64)
    if n == 0:
        starts = starts[:0]
    del k1, k2

    def agg_sum(client_vals: np.ndarray, server_vals: np.ndarray) -> np.ndarray:
        v = both(client_vals, server_vals)[order]
        return np.add.reduceat(v, starts) if len(starts) else v[:0]

    first_o = order[starts]
    srtt = both(srtt_c, srtt_s)[order]
    return Records(
        holder=holder[first_o].astype(np.int32),
        interval=interval[first_o].astype(np.int32),
        direction=direction[first_o].astype(np.int8),
        local_ip=both(pairs.c_ip[p], pairs.s_ip[p])[first_o],
        remote_ip=remote_ip[first_o].astype(np.int32),
        port=port[first_o].astype(np.int32),
        first_start=first[first_o],
        opened=agg_sum(x["opened"], x["opened"]),
        closed=agg_sum(x["closed"], x["closed"]),
        bytes_sent=agg_sum(req, resp),
        bytes_received=agg_sum(resp, req),
        segments_sent=agg_sum(data_c + ack_c + ctrl + retx_c, data_s + ack_s + ctrl + retx_s),
        segments_received=agg_sum(data_s + ack_s + ctrl, data_c + ack_c + ctrl),
        retransmits=agg_sum(retx_c, retx_s),
        srtt_us_max=np.maximum.reduceat(srtt, starts) if len(starts) else srtt[:0],
        remote_holder=both(pairs.server[p], pairs.client[p])[first_o].astype(np.int32),
    )


def chunks(window: Window, params: SimParams, target: int) -> list[tuple[int, int]]:
    """Window interval ranges generated (and written) one at a time, aligned to file batches.

    Sized from params only (about ``chunk_records`` records each), so output never depends
    on the machine."""
    per_interval = max(1.0, target / window.n_intervals)
    batches = max(1, int(params.chunk_records / (per_interval * params.batch_intervals)))
    span = batches * params.batch_intervals
    first_abs = window.start_ms // window.interval_ms
    out, i = [], 0
    while i < window.n_intervals:
        nxt = ((first_abs + i) // span + 1) * span - first_abs
        out.append((i, min(nxt, window.n_intervals)))
        i = nxt
    return out


def plan_traffic(fleet: Fleet, params: SimParams, window: Window, *, target: int,
                 rng: np.random.Generator) -> tuple[Pairs, np.ndarray, float, float]:
    """Pairs, cycle weights, bursty rate multiplier and the fleet's saturation ratio for ``target`` records."""
    pairs = build_pairs(fleet, params, window, rng=rng)
    weights = cycle_weights(params, window)
    pers = pairs.persistent
    pers_records = float(np.sum((pairs.sides * (pairs.last_i - pairs.first_i + 1))[pers]))
    cap = params.persistent_record_share_max * target
    if pers_records > cap:  # too many connection pools for this target: demote some to bursty
        demote = pers & (rng.random(len(pairs)) >= cap / pers_records)
        pairs.persistent = pers & ~demote
        pers_records = float(np.sum((pairs.sides * (pairs.last_i - pairs.first_i + 1))[pairs.persistent]))
    bursty = pairs.take(~pairs.persistent)
    remaining = max(0.0, target - pers_records)
    sat = saturation(bursty)
    base = calibrate(bursty, weights, min(remaining, 0.95 * sat))
    return pairs, weights, base, remaining / max(sat, 1.0)
