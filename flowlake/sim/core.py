"""``simulate()``: fleet -> conversations -> records + tracker events -> files + ground truth."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from flowlake.contracts import IP_EVENTS_PREFIX, RAW_FLOWS_PREFIX
from flowlake.sim.events import holdings, track
from flowlake.sim.fleet import K_EXTERNAL, K_LB, K_NAT, build_fleet
from flowlake.sim.flows import generate_records, plan_traffic
from flowlake.sim.params import SimParams, Window, iso_utc
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
from flowlake.sim.write import Output, run_parallel

OUTPUT_PREFIXES = (RAW_FLOWS_PREFIX, IP_EVENTS_PREFIX, "truth")
MAX_SCALE_TRIES = 6


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

    def lines(self) -> list[str]:
        rate = self.records / self.seconds if self.seconds > 0 else 0.0
        return [
            f"window   {self.window_start} .. {self.window_end}",
            f"records  {self.records:,} in {self.flow_files:,} flow files",
            f"events   {self.events_written:,} rows in {self.event_files:,} files "
            f"({self.events_lost:,} lost, {self.events_duplicated:,} duplicated)",
            f"fleet    {self.workloads} workloads, {self.holders:,} holders (scale {self.fleet_scale:.2f})",
            f"wrote    {self.out} in {self.seconds:.1f}s ({rate:,.0f} records/s)",
        ]


def _rngs(seed: int, attempt: int) -> tuple[np.random.Generator, ...]:
    seqs = np.random.SeedSequence([seed, attempt]).spawn(4)
    return tuple(np.random.default_rng(s) for s in seqs)


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
    bar = tqdm(total=6, desc="planning fleet", unit="step", disable=not progress, leave=False)

    scale = params.fleet_scale or 1.0
    for attempt in range(MAX_SCALE_TRIES):
        r_fleet, r_pairs, r_flows, r_events = _rngs(params.seed, attempt)
        fleet = build_fleet(params, window, rng=r_fleet, scale=scale)
        pairs, weights, base, load = plan_traffic(fleet, params, window, target=target, rng=r_pairs)
        if params.fleet_scale is not None or load <= 0.5:
            break
        scale *= float(np.sqrt(load / 0.35))
    bar.update(1)

    bar.set_description("generating records")
    rec = generate_records(pairs, weights, base=base, params=params, window=window, rng=r_flows)
    bar.update(1)
    bar.set_description("tracking events")
    held = holdings(fleet, window)
    ev = track(held, params, rng=r_events)
    bar.update(1)

    lk = Lookup(fleet, params)
    bar.set_description("building tables")
    table = flows_table(rec, lk, window)
    files = list(flow_files(rec, lk, window, params))
    ev_files = list(event_files(ev, lk, params))
    truth = truth_flows_table(rec, lk, window)
    bar.update(1)
    bar.close()

    step = params.truth_rows_per_file
    n_truth = max(1, -(-len(truth) // step))
    writes = tqdm(total=len(files) + len(ev_files) + n_truth + 2, desc="writing", unit="file", disable=not progress)
    jobs = [lambda k=k, s=s, n=n: output.write_table(k, table.slice(s, n)) for k, s, n in files]
    for key, payload in ev_files:
        if isinstance(payload, pa.Table):
            jobs.append(lambda k=key, t=payload: output.write_table(k, t))
        else:
            jobs.append(lambda k=key, b=payload: output.write_bytes(k, b))
    for part in range(n_truth):
        jobs.append(lambda part=part: output.write_table(f"{TRUTH_FLOWS_PREFIX}/part-{part:05d}.parquet",
                                                         truth.slice(part * step, step)))
    jobs.append(lambda: output.write_table(f"{TRUTH_OWNERSHIP_PREFIX}/part-00000.parquet", ownership_table(held, lk, window)))
    run_parallel(jobs, threads=params.write_threads, on_done=lambda: writes.update(1))

    manifest = _manifest(params, window, fleet, rec, files, ev, ev_files, scale, target)
    output.write_bytes(TRUTH_MANIFEST_KEY, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    writes.update(1)
    writes.close()
    return SimSummary(
        out=out, window_start=iso_utc(window.start_ms), window_end=iso_utc(window.end_ms),
        records=len(rec), flow_files=len(files), events_written=len(ev.ip), event_files=len(ev_files),
        events_lost=ev.lost, events_duplicated=ev.duplicated, holders=int(np.sum(fleet.h_kind != K_EXTERNAL)),
        workloads=sum(1 for w in fleet.workloads if w.domain is not None), fleet_scale=scale,
        seconds=time.monotonic() - t0,
    )


def _manifest(params, window, fleet, rec, files, ev, ev_files, scale, target) -> dict:
    gaps = np.array(fleet.reuse_gaps_ms, dtype=np.int64)
    real = fleet.h_kind != K_EXTERNAL
    kinds = {}
    for k in np.unique(fleet.h_kind[real]):
        from flowlake.sim.fleet import KINDS
        kinds[KINDS[int(k)]] = int(np.sum(fleet.h_kind == k))
    return {
        "seed": params.seed,
        "params": params.model_dump(mode="json", exclude={"s3_endpoint", "write_threads"}),
        "window": {"start_ms": window.start_ms, "end_ms": window.end_ms, "interval_ms": window.interval_ms,
                   "start": iso_utc(window.start_ms), "end": iso_utc(window.end_ms)},
        "fleet_scale": scale,
        "counts": {
            "records_target": target,
            "records": len(rec),
            "flow_files": len(files),
            "holders": int(real.sum()),
            "holders_by_kind": kinds,
            "holders_without_sidecar": int(np.sum(real & ~fleet.h_sidecar & (fleet.h_kind != K_LB) & (fleet.h_kind != K_NAT))),
            "ipv6_records": int(np.sum(fleet.ip_family[rec.remote_ip] == 6)),
            "events_true_changes": ev.true_changes,
            "events_written": len(ev.ip),
            "events_lost": ev.lost,
            "events_duplicated": ev.duplicated,
            "event_files": len(ev_files),
            "ip_reuses": int(len(gaps)),
            "ip_reuses_within_10s": int(np.sum(gaps <= 10_000)),
        },
        "workloads": {w.name: {"domain": w.domain, "port": w.port, "kind": ["instance", "container"][w.kind],
                               "dual_stack": w.dual_stack}
                      for w in fleet.workloads if w.domain is not None},
        "domains": {w.name: w.domain for w in fleet.workloads if w.domain is not None},
        "load_balancers": {w.name: w.fronts for w in fleet.workloads if w.kind == K_LB},
        "nat_gateways": sorted({w.name for w in fleet.workloads if w.kind == K_NAT}),
        "edges": [{"client": fleet.workloads[e.client].name, "server": fleet.workloads[e.server].name,
                   "port": e.port, "weight": round(e.weight, 6)} for e in fleet.edges],
    }


def summary_dict(summary: SimSummary) -> dict:
    return asdict(summary)
