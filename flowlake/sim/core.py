"""``simulate()``: fleet -> conversations -> records + tracker events -> files + ground truth.

Records are generated and written chunk by chunk (window slices aligned to file
batches, sized from params only), so memory stays bounded and the output does
not depend on the machine. Writing a chunk overlaps generating the next.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from flowlake.capture.roll import with_capture_metadata
from flowlake.contracts import IP_EVENTS_PREFIX, RAW_FLOWS_PREFIX
from flowlake.sim.events import Events, holdings, track
from flowlake.sim.fleet import K_EXTERNAL, K_LB, K_NAT, KINDS, Fleet, build_fleet
from flowlake.sim.flows import chunks, generate_records, persistent_connections, plan_traffic
from flowlake.sim.params import SimParams, Window, iso_utc
from flowlake.sim.truth import EVIDENCE, HoldingIndex, record_evidence
from flowlake.sim.tables import (
    TRUTH_FLOWS_PREFIX,
    TRUTH_MANIFEST_KEY,
    TRUTH_OWNERSHIP_PREFIX,
    Lookup,
    event_files,
    flow_files,
    flows_table,
    ownership_table,
    truth_flows_table,
)
from flowlake.sim.write import Output

OUTPUT_PREFIXES = (RAW_FLOWS_PREFIX, IP_EVENTS_PREFIX, "truth")
MAX_SCALE_TRIES = 6
TARGET_LOAD = 0.35  # wanted share of (pair, interval) slots with traffic; above 0.5 the fleet grows


@dataclass
class SimSummary:
    out: str
    window_start: str
    window_end: str
    records: int
    flow_files: int
    events_written: int
    event_files: int
    events_lost: int
    events_duplicated: int
    holders: int
    workloads: int
    fleet_scale: float
    seconds: float
    profile: str = "default"
    records_by_truth_evidence: dict[str, int] | None = None

    def lines(self) -> list[str]:
        rate = self.records / self.seconds if self.seconds > 0 else 0.0
        return [
            f"window   {self.window_start} .. {self.window_end}",
            f"records  {self.records:,} in {self.flow_files:,} flow files",
            f"events   {self.events_written:,} rows in {self.event_files:,} files "
            f"({self.events_lost:,} lost, {self.events_duplicated:,} duplicated)",
            f"fleet    {self.workloads} workloads, {self.holders:,} holders (scale {self.fleet_scale:.2f})",
            "truth    " + ", ".join(f"{k} {v / max(self.records, 1):.2%}"
                                    for k, v in (self.records_by_truth_evidence or {}).items())
            + f" of records by evidence (profile {self.profile})",
            f"wrote    {self.out} in {self.seconds:.1f}s ({rate:,.0f} records/s)",
        ]


def _rng(seed: int, *path: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *path]))


def simulate(*, out: str, params: SimParams, progress: bool = True, overwrite: bool = False) -> SimSummary:
    """Simulate the fleet over the params' window and write raw flows, events and truth under ``out``.

    Refuses to write into an output that already holds simulator files unless
    ``overwrite`` (which deletes only flows/v1, ip_events/v1 and truth/ there).
    """
    t0 = time.monotonic()
    output = Output(out, s3_endpoint=params.s3_endpoint)
    existing = [p for p in OUTPUT_PREFIXES if output.has_files(p)]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds {', '.join(existing)}: choose an empty --out or pass --overwrite")
    for p in existing:
        output.delete(p)

    window = Window.of(params)
    target = window.target_records(params)

    # fleet and traffic plan; the fleet grows until the record target fits comfortably
    scale = params.fleet_scale or 1.0
    for attempt in range(MAX_SCALE_TRIES):
        fleet = build_fleet(params, window, rng=_rng(params.seed, attempt, 1), scale=scale,
                            rng_extra=_rng(params.seed, attempt, 5))
        pairs, weights, base, load = plan_traffic(fleet, params, window, target=target, rng=_rng(params.seed, attempt, 2))
        if params.fleet_scale is not None or load <= 0.5:
            break
        scale *= float(np.sqrt(load / TARGET_LOAD))
    conns = persistent_connections(pairs, params, window, rng=_rng(params.seed, attempt, 3))
    held = holdings(fleet, window)
    ev = track(held, params, rng=_rng(params.seed, attempt, 4), rng_extra=_rng(params.seed, attempt, 6))
    lk = Lookup(fleet, params)
    index = HoldingIndex(held, len(fleet.ips))
    evidence_counts = np.zeros(len(EVIDENCE), dtype=np.int64)

    plan = chunks(window, params, target)
    bar = tqdm(total=window.n_intervals, desc="simulating", unit="interval", disable=not progress)
    next_seq = np.zeros(fleet.n_holders, dtype=np.int64)
    next_interval = np.full(fleet.n_holders, -1, dtype=np.int64)  # per holder: first interval no file covered
    n_records = n_files = 0
    pending: list[Future] = []
    written = 0  # intervals whose files are being written
    with ThreadPoolExecutor(max_workers=params.write_threads) as pool:
        for ci, (i0, i1) in enumerate(plan):
            rec = generate_records(pairs, conns, weights, base=base, window=window,
                                   rng=_rng(params.seed, attempt, 100 + ci), i0=i0, i1=i1)
            table = flows_table(rec, lk, window)
            files = flow_files(rec, lk, window, params, next_seq, next_interval)
            evidence = record_evidence(rec, index, fleet, window)
            evidence_counts += np.bincount(evidence.code, minlength=len(EVIDENCE))
            truth = truth_flows_table(rec, lk, window, evidence)
            n_records += len(rec)
            n_files += len(files)
            for fut in pending:  # at most one chunk in flight while the next is generated
                fut.result()
            bar.update(written)
            pending = [pool.submit(output.write_table, key, with_capture_metadata(table.slice(off, n), meta))
                       for key, off, n, meta in files]
            pending.append(pool.submit(output.write_table, f"{TRUTH_FLOWS_PREFIX}/part-{ci:05d}.parquet", truth))
            del rec
            written = i1 - i0
        ev_files = list(event_files(ev, lk, params))
        for key, payload in ev_files:
            if isinstance(payload, pa.Table):
                pending.append(pool.submit(output.write_table, key, payload))
            else:
                pending.append(pool.submit(output.write_bytes, key, payload))
        pending.append(pool.submit(output.write_table, f"{TRUTH_OWNERSHIP_PREFIX}/part-00000.parquet",
                                   ownership_table(held, lk, window)))
        for fut in pending:
            fut.result()
    bar.update(written)
    bar.close()

    manifest = _manifest(params, window, fleet, n_records, n_files, ev, len(ev_files), scale, target, len(plan))
    manifest["counts"]["records_by_truth_evidence"] = {k: int(v) for k, v in zip(EVIDENCE, evidence_counts)}
    output.write_bytes(TRUTH_MANIFEST_KEY, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return SimSummary(
        out=out, window_start=iso_utc(window.start_ms), window_end=iso_utc(window.end_ms),
        records=n_records, flow_files=n_files, events_written=len(ev.ip), event_files=len(ev_files),
        events_lost=ev.lost, events_duplicated=ev.duplicated, holders=int(np.sum(fleet.h_kind != K_EXTERNAL)),
        workloads=sum(1 for w in fleet.workloads if w.domain is not None), fleet_scale=scale,
        seconds=time.monotonic() - t0, profile=params.profile,
        records_by_truth_evidence=manifest["counts"]["records_by_truth_evidence"],
    )


def _manifest(params: SimParams, window: Window, fleet: Fleet, n_records: int, n_files: int, ev: Events,
              n_event_files: int, scale: float, target: int, n_chunks: int) -> dict:
    gaps = np.array(fleet.reuse_gaps_ms, dtype=np.int64)
    real = fleet.h_kind != K_EXTERNAL
    workers = real & (fleet.h_kind != K_LB) & (fleet.h_kind != K_NAT)
    return {
        "seed": params.seed,
        "params": params.model_dump(mode="json", exclude={"s3_endpoint", "write_threads", "component"}),
        "window": {"start_ms": window.start_ms, "end_ms": window.end_ms, "interval_ms": window.interval_ms,
                   "start": iso_utc(window.start_ms), "end": iso_utc(window.end_ms)},
        "fleet_scale": scale,
        "counts": {
            "records_target": target,
            "records": n_records,
            "flow_files": n_files,
            "chunks": n_chunks,
            "holders": int(real.sum()),
            "holders_by_kind": {KINDS[int(k)]: int(np.sum(fleet.h_kind == k)) for k in np.unique(fleet.h_kind[real])},
            "holders_without_sidecar": int(np.sum(workers & ~fleet.h_sidecar)),
            "events_true_changes": ev.true_changes,
            "events_written": len(ev.ip),
            "events_lost": ev.lost,
            "events_duplicated": ev.duplicated,
            "events_resent": ev.resent,
            "events_lag_tail": ev.lag_tail,
            "handovers_both_lost": ev.handovers_both_lost,
            "handovers_late_assign": ev.handovers_late_assign,
            "event_files": n_event_files,
            "ip_reuses": int(len(gaps)),
            "ip_reuses_within_10s": int(np.sum(gaps <= 10_000)),
        },
        "workloads": {w.name: {"domain": w.domain, "port": w.port, "kind": KINDS[w.kind], "dual_stack": w.dual_stack}
                      for w in fleet.workloads if w.domain is not None},
        "domains": {w.name: w.domain for w in fleet.workloads if w.domain is not None},
        "load_balancers": {w.name: w.fronts for w in fleet.workloads if w.kind == K_LB},
        "nat_gateways": sorted({w.name for w in fleet.workloads if w.kind == K_NAT}),
        "edges": [{"client": fleet.workloads[e.client].name, "server": fleet.workloads[e.server].name,
                   "port": e.port, "weight": round(e.weight, 6)} for e in fleet.edges],
    }
