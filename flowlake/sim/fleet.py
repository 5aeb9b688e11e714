"""The simulated fleet: workloads in planted domains, their dependency graph, and every
holder of an IP address (instances, containers, load-balancer nodes, NAT gateways,
external peers) with its true holding period.

Holders are planned per slot (a replica that is replaced over time); addresses are
handed out by a time-ordered sweep that enforces the invariants: an address has at
most one holder at a time, and a released address is reused only after
``min_reuse_gap_ms``. A share of releases is handed to a new holder of another
workload (a scale-out task) after a short (3-10 s) or long (minutes) gap.
"""

from __future__ import annotations

import bisect
import heapq
import ipaddress
from dataclasses import dataclass, field

import numpy as np

from flowlake.contracts import canonical_ip
from flowlake.sim.params import DAY_MS, HOUR_MS, SimParams, Window

FOREVER = np.int64(2**62)

KINDS = ("instance", "container", "load_balancer", "nat_gateway", "external")
K_INSTANCE, K_CONTAINER, K_LB, K_NAT, K_EXTERNAL = range(len(KINDS))

DOMAIN_POOLS: dict[str, list[str]] = {
    "commerce": ["api", "billing", "payments", "orders", "cart", "checkout", "invoices", "pricing",
                 "inventory", "shipping", "tax", "coupons", "refunds", "ledger", "fraud"],
    "identity": ["auth", "users", "sessions", "profile", "permissions", "tokens", "sso", "mfa",
                 "audit", "consent", "directory", "keys"],
    "media": ["catalog", "search", "recommend", "thumbnails", "transcoder", "playback", "artwork",
              "subtitles", "ratings", "metadata", "encoder", "drm"],
    "platform": ["config", "discovery", "metrics", "logging", "queue", "cache", "scheduler",
                 "notify", "mailer", "gateway", "edge", "flags"],
    "data": ["ingest", "etl", "warehouse", "stream", "reports", "exporter", "lake", "quality"],
    "messaging": ["chat", "push", "inbox", "presence", "webhooks", "sms"],
    "ads": ["bidder", "adserver", "targeting", "campaigns", "budget", "clicks"],
    "support": ["tickets", "helpdesk", "kb", "survey", "feedback", "crm"],
}

# name -> (networks, weight among external edges)
EXTERNAL_CLASSES: dict[str, tuple[tuple[str, ...], float]] = {
    "external:aws-s3": (("52.216.0.0/15",), 0.5),
    "external:github": (("140.82.112.0/20",), 0.15),
    "external:cloudflare": (("2606:4700::/32",), 0.15),
    "external:internet": (("198.51.100.0/24", "2001:db8:ffff::/48"), 0.2),
}
EXTERNAL_IPS_PER_NETWORK = 24
INTERNAL_V6_PREFIX = "2600:1f18:4a1b"
SERVER_PORTS = (8080, 8080, 8080, 8080, 7001, 9090, 443, 6379, 5432)


@dataclass
class WorkloadSpec:
    name: str
    kind: int
    domain: str | None = None
    port: int = 443
    dual_stack: bool = False
    replicas: int = 0
    lifetime_ms: float = 0.0
    resp_scale: float = 1.0
    fronts: str | None = None  # load balancers: the workload behind it


@dataclass
class Edge:
    client: int
    server: int
    port: int
    weight: float


@dataclass
class Fleet:
    """Workloads, edges, address table and holders (one row per holder, numpy columns)."""

    workloads: list[WorkloadSpec]
    edges: list[Edge]
    ips: list[str]
    ip_family: np.ndarray
    h_workload: np.ndarray
    h_kind: np.ndarray
    h_az: np.ndarray
    h_sidecar: np.ndarray
    h_v4: np.ndarray
    h_v6: np.ndarray
    h_from: np.ndarray
    h_to: np.ndarray
    h_ready: np.ndarray
    h_drain: np.ndarray
    h_instance: list[str]
    reuse_gaps_ms: list[int] = field(default_factory=list)

    @property
    def n_holders(self) -> int:
        return len(self.h_instance)

    def holders_of(self, workload: int) -> np.ndarray:
        return np.flatnonzero(self.h_workload == workload)


# --------------------------------------------------------------------------- workloads and edges

def _workload_names(n: int, n_domains: int) -> list[tuple[str, str]]:
    domains = list(DOMAIN_POOLS)[:n_domains]
    out: list[tuple[str, str]] = []
    for i in range(n):
        domain = domains[i % n_domains]
        k = i // n_domains
        pool = DOMAIN_POOLS[domain]
        out.append((pool[k] if k < len(pool) else f"{domain}-svc{k}", domain))
    return out


def plan_workloads(params: SimParams, rng: np.random.Generator, *, scale: float) -> tuple[list[WorkloadSpec], list[Edge]]:
    """Workloads in planted domains and the dependency graph (mostly intra-domain edges)."""
    specs: list[WorkloadSpec] = []
    for name, domain in _workload_names(params.n_workloads, params.n_domains):
        container = rng.random() < params.container_workload_share
        base = params.replicas_min + (params.replicas_max - params.replicas_min) * rng.random() ** 2
        specs.append(WorkloadSpec(
            name=name, domain=domain, kind=K_CONTAINER if container else K_INSTANCE,
            port=int(rng.choice(SERVER_PORTS)), dual_stack=bool(rng.random() < params.dual_stack_workload_share),
            replicas=max(1, int(round(base * scale))),
            lifetime_ms=(params.container_lifetime_h if container else params.instance_lifetime_h) * HOUR_MS,
            resp_scale=float(rng.lognormal(0.0, 0.8)),
        ))
    n = len(specs)
    by_domain: dict[str, list[int]] = {}
    for i, s in enumerate(specs):
        by_domain.setdefault(s.domain or "", []).append(i)

    pairs: dict[tuple[int, int], float] = {}
    for c in range(n):
        for _ in range(int(rng.poisson(params.edges_per_workload))):
            same = by_domain[specs[c].domain or ""]
            if rng.random() < params.intra_domain_edge_share and len(same) > 1:
                cands = [i for i in same if i != c]
            else:
                cands = [i for i in range(n) if specs[i].domain != specs[c].domain] or [i for i in range(n) if i != c]
            # hubs: earlier workloads of a domain are called more (zipf over rank)
            ranks = np.array([by_domain[specs[i].domain or ""].index(i) for i in cands], dtype=float)
            p = 1.0 / (ranks + 1.0)
            s = cands[int(rng.choice(len(cands), p=p / p.sum()))]
            pairs[(c, s)] = pairs.get((c, s), 0.0) + float(rng.lognormal(0.0, 1.0))
    edges = [Edge(c, s, specs[s].port, w) for (c, s), w in sorted(pairs.items())]

    # load balancers in front of the most-called workloads
    indeg = np.zeros(n)
    for e in edges:
        indeg[e.server] += 1
    fronted = [int(i) for i in np.argsort(-indeg, kind="stable")[: params.n_load_balancers] if indeg[i] > 0]
    for w in fronted:
        lb = len(specs)
        specs.append(WorkloadSpec(name=f"{specs[w].name}-lb", kind=K_LB, port=443, dual_stack=specs[w].dual_stack,
                                  replicas=len(params.availability_zones), lifetime_ms=params.lb_node_lifetime_h * HOUR_MS,
                                  fronts=specs[w].name))
        total = 0.0
        for e in edges:
            if e.server == w:
                e.server, e.port = lb, 443
                total += e.weight
        for c in rng.choice([i for i in range(n) if i != w], size=min(3, n - 1), replace=False):
            if not any(e.client == c and e.server == lb for e in edges):
                edges.append(Edge(int(c), lb, 443, float(rng.lognormal(0.0, 1.0))))
                total += edges[-1].weight
        edges.append(Edge(lb, w, specs[w].port, 2.0 * total))

    # NAT gateways: hot remote of inbound records of a few ingest-like services
    if params.nat_gateways_per_az > 0:
        nat = len(specs)
        specs.append(WorkloadSpec(name="nat-gateway", kind=K_NAT, port=0,
                                  replicas=params.nat_gateways_per_az * len(params.availability_zones)))
        for s in rng.choice(n, size=min(2, n), replace=False):
            edges.append(Edge(nat, int(s), specs[int(s)].port, 6.0))

    # external peers
    ext_index: dict[str, int] = {}
    for name in EXTERNAL_CLASSES:
        ext_index[name] = len(specs)
        specs.append(WorkloadSpec(name=name, kind=K_EXTERNAL, port=443, dual_stack=True))
    names = list(EXTERNAL_CLASSES)
    probs = np.array([EXTERNAL_CLASSES[k][1] for k in names])
    for c in range(n):
        if rng.random() < params.external_client_share:
            for k in sorted(set(rng.choice(len(names), size=int(rng.integers(1, 3)), p=probs / probs.sum()).tolist())):
                edges.append(Edge(c, ext_index[names[k]], 443, float(rng.lognormal(-0.5, 0.8))))
    for s in rng.choice(n, size=min(2, n), replace=False):  # internet clients of public services
        edges.append(Edge(ext_index["external:internet"], int(s), specs[int(s)].port, 1.5))
    return specs, edges


# --------------------------------------------------------------------------- addresses

class _AddressSpace:
    """Hands out fresh addresses deterministically; keeps the table of all addresses."""

    def __init__(self, n_az: int, rng: np.random.Generator) -> None:
        self.ips: list[str] = []
        self.family: list[int] = []
        self.rng = rng
        self._next_v4 = [int(rng.integers(256, 4096)) for _ in range(n_az)]
        self._seen: set[str] = set()

    def add(self, text: str, family: int) -> int:
        text = canonical_ip(text)
        if text in self._seen:
            raise RuntimeError(f"address {text} handed out twice as fresh (simulator bug)")
        self._seen.add(text)
        self.ips.append(text)
        self.family.append(family)
        return len(self.ips) - 1

    def fresh_v4(self, az: int) -> int:
        k = self._next_v4[az]
        self._next_v4[az] = k + 1 + int(self.rng.integers(0, 3))
        if k >= 65000:
            raise RuntimeError("an availability zone ran out of IPv4 addresses: lower fleet size or window")
        return self.add(f"10.{10 * (az + 1)}.{k // 256}.{k % 256}", 4)

    def fresh_v6(self, az: int) -> int:
        while True:
            host = int(self.rng.integers(1, 2**63))
            text = str(ipaddress.IPv6Address(f"{INTERNAL_V6_PREFIX}:{az + 1:x}00::") + host)
            if text not in self._seen:
                return self.add(text, 6)

    def external(self, network: str, count: int) -> list[int]:
        net = ipaddress.ip_network(network)
        out: list[int] = []
        while len(out) < count:
            offset = int(self.rng.integers(1, min(net.num_addresses - 1, 2**62)))
            text = str(net.network_address + offset)
            if canonical_ip(text) not in self._seen:
                out.append(self.add(text, net.version))
        return out


# --------------------------------------------------------------------------- holders

def _hex_id(rng: np.random.Generator, digits: int, used: set[str], prefix: str) -> str:
    while True:
        text = prefix + "".join("0123456789abcdef"[int(d)] for d in rng.integers(0, 16, size=digits))
        if text not in used:
            used.add(text)
            return text


def build_fleet(params: SimParams, window: Window, *, rng: np.random.Generator, scale: float,
                rng_extra: np.random.Generator | None = None) -> Fleet:
    """Plan workloads and holders and assign addresses over the window (and its history).

    ``rng_extra`` draws what only non-default knobs use (per-slot sidecars, NAT churn), so the
    default profile consumes ``rng`` exactly as before and its output stays identical."""
    extra = rng_extra if rng_extra is not None else np.random.default_rng([params.seed, 5])
    slot_sidecar = params.no_sidecar_lifetime_factor != 1.0
    specs, edges = plan_workloads(params, rng, scale=scale)
    n_az = len(params.availability_zones)
    w0, w1 = window.start_ms, window.end_ms
    space = _AddressSpace(n_az, rng)

    rows: list[dict] = []  # holders in creation order
    heap: list[tuple[int, int, int, int]] = []  # (time, order, seq, holder)  order 0 = release first
    seq = 0

    def add_holder(w: int, az: int, start: int, end: int, reserved_v4: int | None = None,
                   no_sidecar: bool | None = None) -> None:
        nonlocal seq
        rows.append({"w": w, "az": az, "from": int(start), "to": int(end), "v4": reserved_v4, "v6": None,
                     "nosc": no_sidecar})
        h = len(rows) - 1
        heapq.heappush(heap, (int(start), 1, seq, h))
        seq += 1
        if end < FOREVER:
            heapq.heappush(heap, (int(end), 0, seq, h))
            seq += 1

    history = int(params.history_days * DAY_MS)
    for w, s in enumerate(specs):
        if s.kind in (K_INSTANCE, K_CONTAINER, K_LB):
            for slot in range(s.replicas):
                az = (slot + w) % n_az
                life = s.lifetime_ms
                nosc = None
                if slot_sidecar and s.kind != K_LB:  # every holder of this slot alike
                    nosc = bool(extra.random() < params.no_sidecar_share)
                    if nosc:
                        life *= params.no_sidecar_lifetime_factor
                if s.kind == K_CONTAINER:
                    age = rng.uniform(0, min(2 * life, history))
                else:
                    age = rng.uniform(min(DAY_MS, history / 2), history)
                start = w0 - int(age)
                end = w0 + int(rng.exponential(life))
                while True:
                    add_holder(w, az, start, end if end < w1 + HOUR_MS else FOREVER, no_sidecar=nosc)
                    if end >= w1 + HOUR_MS:
                        break
                    start = end + int(rng.uniform(-30_000, 60_000))
                    if start >= w1:
                        break
                    end = start + max(60_000, int(rng.exponential(life)))
        elif s.kind == K_NAT and params.nat_lifetime_h is None:
            for slot in range(s.replicas):
                add_holder(w, slot % n_az, w0 - history, FOREVER)
        elif s.kind == K_NAT:  # NAT gateways replaced over time (mean life nat_lifetime_h)
            life = params.nat_lifetime_h * HOUR_MS
            for slot in range(s.replicas):
                start = w0 - history
                end = w0 + int(extra.exponential(life))
                while True:
                    add_holder(w, slot % n_az, start, end if end < w1 + HOUR_MS else FOREVER)
                    if end >= w1 + HOUR_MS:
                        break
                    start = end + int(extra.uniform(-30_000, 60_000))
                    if start >= w1:
                        break
                    end = start + max(60_000, int(extra.exponential(life)))

    reuse_targets = [i for i, s in enumerate(specs) if s.kind in (K_INSTANCE, K_CONTAINER)]
    # per az: free addresses and their release times, in release order (the sweep is chronological)
    free: list[tuple[list[int], list[int]]] = [([], []) for _ in range(n_az)]
    gaps: list[int] = []
    while heap:
        t, order, _, h = heapq.heappop(heap)
        row = rows[h]
        if order == 1:  # start: needs addresses
            if row["v4"] is None:
                ips, released = free[row["az"]]
                n_ok = bisect.bisect_right(released, t - params.min_reuse_gap_ms)
                if n_ok and rng.random() < 0.3:
                    i = int(rng.integers(n_ok))
                    row["v4"] = ips.pop(i)
                    gaps.append(t - released.pop(i))
                else:
                    row["v4"] = space.fresh_v4(row["az"])
            if specs[row["w"]].dual_stack:
                row["v6"] = space.fresh_v6(row["az"])
            continue
        # release
        ip = row["v4"]
        spec = specs[row["w"]]
        if t < w1 and reuse_targets and spec.kind != K_NAT and rng.random() < params.reuse_share:
            if rng.random() < params.fast_reuse_share:
                gap = int(rng.integers(params.min_reuse_gap_ms, params.fast_reuse_max_gap_ms + 1))
            else:
                gap = int(rng.integers(60_000, max(60_001, params.slow_reuse_max_gap_ms)))
            others = [i for i in reuse_targets if i != row["w"]]
            if others and t + gap < w1:
                w2 = others[int(rng.integers(len(others)))]
                life = min(specs[w2].lifetime_ms, params.container_lifetime_h * HOUR_MS)
                end = t + gap + max(60_000, int(rng.exponential(life)))
                add_holder(w2, row["az"], t + gap, end if end < w1 + HOUR_MS else FOREVER, reserved_v4=ip)
                gaps.append(gap)
                continue
        free[row["az"]][0].append(ip)
        free[row["az"]][1].append(t)

    n = len(rows)
    h_from = np.array([r["from"] for r in rows], dtype=np.int64)
    h_to = np.array([r["to"] for r in rows], dtype=np.int64)
    kind = np.array([specs[r["w"]].kind for r in rows], dtype=np.int8)
    lbnat = (kind == K_LB) | (kind == K_NAT)
    boot = np.where(lbnat, rng.integers(200, 2_000, size=n), rng.integers(500, max(501, params.boot_max_ms), size=n))
    drain = np.where(lbnat, rng.integers(200, 1_000, size=n), rng.integers(200, max(201, params.drain_max_ms), size=n))
    sidecar = ((kind == K_INSTANCE) | (kind == K_CONTAINER)) & (rng.random(n) >= params.no_sidecar_share)
    if slot_sidecar:  # slot holders follow their slot; reuse holders keep the per-holder draw
        nosc = np.array([r["nosc"] is True for r in rows], dtype=bool)
        by_slot = np.array([r["nosc"] is not None for r in rows], dtype=bool)
        sidecar = np.where(by_slot, ~nosc, sidecar) & ((kind == K_INSTANCE) | (kind == K_CONTAINER))
    used: set[str] = set()
    prefix = {K_INSTANCE: "i-", K_CONTAINER: "ctr-", K_LB: "eni-", K_NAT: "nat-"}
    digits = {K_INSTANCE: 17, K_CONTAINER: 16, K_LB: 17, K_NAT: 17}
    instance = [_hex_id(rng, digits[int(k)], used, prefix[int(k)]) for k in kind]

    # external peers: permanent pseudo-holders (never in events or ownership truth)
    ext_w, ext_v4, ext_v6 = [], [], []
    for w, s in enumerate(specs):
        if s.kind == K_EXTERNAL:
            for net in EXTERNAL_CLASSES[s.name][0]:
                for ip in space.external(net, EXTERNAL_IPS_PER_NETWORK):
                    ext_w.append(w)
                    four = space.family[ip] == 4
                    ext_v4.append(ip if four else -1)
                    ext_v6.append(-1 if four else ip)
    m = len(ext_w)
    return Fleet(
        workloads=specs,
        edges=edges,
        ips=space.ips,
        ip_family=np.array(space.family, dtype=np.int8),
        h_workload=np.concatenate([np.array([r["w"] for r in rows], dtype=np.int32), np.array(ext_w, dtype=np.int32)]),
        h_kind=np.concatenate([kind, np.full(m, K_EXTERNAL, dtype=np.int8)]),
        h_az=np.concatenate([np.array([r["az"] for r in rows], dtype=np.int8), np.full(m, -1, dtype=np.int8)]),
        h_sidecar=np.concatenate([sidecar, np.zeros(m, dtype=bool)]),
        h_v4=np.concatenate([np.array([r["v4"] for r in rows], dtype=np.int32), np.array(ext_v4, dtype=np.int32)]),
        h_v6=np.concatenate([np.array([-1 if r["v6"] is None else r["v6"] for r in rows], dtype=np.int32),
                             np.array(ext_v6, dtype=np.int32)]),
        h_from=np.concatenate([h_from, np.full(m, -FOREVER, dtype=np.int64)]),
        h_to=np.concatenate([h_to, np.full(m, FOREVER, dtype=np.int64)]),
        h_ready=np.concatenate([h_from + boot, np.full(m, -FOREVER, dtype=np.int64)]),
        h_drain=np.concatenate([np.where(h_to >= FOREVER, FOREVER, h_to - drain), np.full(m, FOREVER, dtype=np.int64)]),
        h_instance=instance + [""] * m,
        reuse_gaps_ms=gaps,
    )
