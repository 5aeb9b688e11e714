"""Arrow tables and file plans: raw flow files, event files and ground-truth tables."""

from __future__ import annotations

import gzip
import hashlib
import json
from typing import Iterator

import numpy as np
import pyarrow as pa

from flowlake.capture.roll import capture_metadata
from flowlake.contracts import (
    ACTION_ASSIGN,
    ACTION_UNASSIGN,
    DIRECTION_INBOUND,
    DIRECTION_OUTBOUND,
    IP_EVENT_SCHEMA,
    PROTOCOL_TCP,
    RAW_FLOW_SCHEMA,
    ip_events_key,
    raw_flow_key,
)
from flowlake.sim.events import Events, Holdings
from flowlake.sim.fleet import FOREVER, KINDS, Fleet
from flowlake.sim.flows import Records
from flowlake.sim.params import SimParams, Window
from flowlake.sim.truth import EVIDENCE, Evidence

TRUTH_FLOWS_PREFIX = "truth/flows"
TRUTH_OWNERSHIP_PREFIX = "truth/ownership"
TRUTH_MANIFEST_KEY = "truth/manifest.json"

RECORD_KEY_COLUMNS = ["instance_id", "interval_start_ms", "local_ip", "local_port", "remote_ip", "remote_port", "direction"]


class Lookup:
    """Arrow string arrays of the fleet's names, for vectorised take()."""

    def __init__(self, fleet: Fleet, params: SimParams) -> None:
        self.instance = pa.array(fleet.h_instance, pa.string())
        self.instance_or_null = pa.array([i or None for i in fleet.h_instance], pa.string())
        self.workload = pa.array([w.name for w in fleet.workloads], pa.string())
        self.kind = pa.array(list(KINDS), pa.string())
        self.az = pa.array(list(params.availability_zones) + [None], pa.string())
        self.ip = pa.array(fleet.ips, pa.string())
        self.direction = pa.array([DIRECTION_OUTBOUND, DIRECTION_INBOUND], pa.string())
        self.fleet = fleet
        self.region = params.region

    def holder_az(self, holder: np.ndarray) -> pa.Array:
        az = self.fleet.h_az[holder].astype(np.int64)
        return self.az.take(pa.array(np.where(az < 0, len(self.az) - 1, az)))


def flows_table(rec: Records, lk: Lookup, window: Window) -> pa.Table:
    """All raw records as one table in the contract schema (sorted by holder, interval, key)."""
    h = rec.holder
    istart = window.start_ms + rec.interval.astype(np.int64) * window.interval_ms
    n = len(rec)
    cols = {
        "instance_id": lk.instance.take(pa.array(h)),
        "local_workload": lk.workload.take(pa.array(lk.fleet.h_workload[h])),
        "region": pa.repeat(pa.scalar(lk.region, pa.string()), n),
        "availability_zone": lk.holder_az(h),
        "interval_start_ms": pa.array(istart),
        "interval_end_ms": pa.array(istart + window.interval_ms),
        "local_ip": lk.ip.take(pa.array(rec.local_ip)),
        "local_port": pa.array(np.where(rec.direction == 1, rec.port, 0).astype(np.int32)),
        "remote_ip": lk.ip.take(pa.array(rec.remote_ip)),
        "remote_port": pa.array(np.where(rec.direction == 0, rec.port, 0).astype(np.int32)),
        "direction": lk.direction.take(pa.array(rec.direction.astype(np.int64))),
        "protocol": pa.array([PROTOCOL_TCP]).take(pa.array(np.zeros(n, dtype=np.int64))),
        "first_start_ms": pa.array(rec.first_start.astype(np.int64)),
        "connections_opened": pa.array(rec.opened.astype(np.int32)),
        "connections_closed": pa.array(rec.closed.astype(np.int32)),
        "bytes_sent": pa.array(rec.bytes_sent.astype(np.int64)),
        "bytes_received": pa.array(rec.bytes_received.astype(np.int64)),
        "segments_sent": pa.array(rec.segments_sent.astype(np.int64)),
        "segments_received": pa.array(rec.segments_received.astype(np.int64)),
        "retransmits": pa.array(rec.retransmits.astype(np.int64)),
        "srtt_us_max": pa.array(rec.srtt_us_max.astype(np.int64)),
    }
    return pa.Table.from_arrays([cols[f.name] for f in RAW_FLOW_SCHEMA], schema=RAW_FLOW_SCHEMA)


def flow_files(rec: Records, lk: Lookup, window: Window, params: SimParams,
               next_seq: np.ndarray, next_interval: np.ndarray | None = None) -> list[tuple[str, int, int, bytes]]:
    """(key, offset, length, capture metadata) of each raw file: one per holder per batch of intervals.

    ``next_seq`` (per holder) numbers each instance's files and is advanced.
    ``next_interval`` (per holder, -1 = no file yet) is the first window
    interval no file of the holder covered yet: as with the sidecar, a file's
    ``flowlake.capture`` ``intervals`` are its batch's plus the empty batches
    since the holder's previous file. The metadata has a ``run_id`` per holder
    (one sidecar process for the whole window) and zero drops."""
    if len(rec) == 0:
        return []
    if next_interval is None:
        next_interval = np.full(len(next_seq), -1, dtype=np.int64)
    first_abs = window.start_ms // window.interval_ms
    batch = (first_abs + rec.interval.astype(np.int64)) // params.batch_intervals
    h = rec.holder.astype(np.int64)
    change = np.flatnonzero((h[1:] != h[:-1]) | (batch[1:] != batch[:-1])) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(rec)]])
    new_holder = np.ones(len(starts), dtype=bool)
    new_holder[1:] = h[starts[1:]] != h[starts[:-1]]
    group_id = np.cumsum(new_holder) - 1
    holder = h[starts]
    seq = np.arange(len(starts)) - np.flatnonzero(new_holder)[group_id] + next_seq[holder]
    np.maximum.at(next_seq, holder, seq + 1)
    out = []
    for s, e, q in zip(starts.tolist(), ends.tolist(), seq.tolist()):
        hs = int(h[s])
        instance = lk.fleet.h_instance[hs]
        first_ms = window.start_ms + int(rec.interval[s]) * window.interval_ms
        key = raw_flow_key(instance_id=instance, first_interval_start_ms=first_ms, seq=q)
        b0 = int(batch[s]) * params.batch_intervals - first_abs
        b1 = min(b0 + params.batch_intervals, window.n_intervals)
        i0 = max(0, b0 if next_interval[hs] < 0 else int(next_interval[hs]))
        next_interval[hs] = b1
        intervals = [window.start_ms + i * window.interval_ms for i in range(i0, b1)]
        run_id = hashlib.md5(f"{params.seed}/{instance}".encode()).hexdigest()
        meta = capture_metadata(run_id=run_id, seq=q, instance_id=instance, intervals=intervals, drops={},
                                records=e - s)
        out.append((key, s, e - s, meta))
    return out


def truth_flows_table(rec: Records, lk: Lookup, window: Window, evidence: Evidence) -> pa.Table:
    """One row per raw record: its key, the true remote workload and kind, and the evidence naming it."""
    rh = rec.remote_holder
    istart = window.start_ms + rec.interval.astype(np.int64) * window.interval_ms
    fleet = lk.fleet
    return pa.table({
        "instance_id": lk.instance.take(pa.array(rec.holder)),
        "interval_start_ms": pa.array(istart),
        "local_ip": lk.ip.take(pa.array(rec.local_ip)),
        "local_port": pa.array(np.where(rec.direction == 1, rec.port, 0).astype(np.int32)),
        "remote_ip": lk.ip.take(pa.array(rec.remote_ip)),
        "remote_port": pa.array(np.where(rec.direction == 0, rec.port, 0).astype(np.int32)),
        "direction": lk.direction.take(pa.array(rec.direction.astype(np.int64))),
        "first_start_ms": pa.array(rec.first_start.astype(np.int64)),
        "true_local_workload": lk.workload.take(pa.array(fleet.h_workload[rec.holder])),
        "true_remote_workload": lk.workload.take(pa.array(fleet.h_workload[rh])),
        "true_remote_kind": lk.kind.take(pa.array(fleet.h_kind[rh].astype(np.int64))),
        "true_remote_instance_id": lk.instance_or_null.take(pa.array(rh)),
        "true_remote_availability_zone": lk.holder_az(rh),
        "remote_has_sidecar": pa.array(fleet.h_sidecar[rh]),
        "truth_evidence": pa.array(list(EVIDENCE), pa.string()).take(pa.array(evidence.code.astype(np.int64))),
        "truth_assign_event_ms": pa.array(evidence.assign_event_ms, mask=evidence.assign_event_ms < 0),
    })


def ownership_table(held: Holdings, lk: Lookup, window: Window) -> pa.Table:
    """True holding periods; to_ms null when still held at the window end."""
    fleet = lk.fleet
    h = held.holder
    has_un = held.to_ms < FOREVER
    return pa.table({
        "ip": lk.ip.take(pa.array(held.ip)),
        "workload": lk.workload.take(pa.array(fleet.h_workload[h])),
        "instance_id": lk.instance.take(pa.array(h)),
        "kind": lk.kind.take(pa.array(fleet.h_kind[h].astype(np.int64))),
        "region": pa.repeat(pa.scalar(lk.region, pa.string()), len(h)),
        "availability_zone": lk.holder_az(h),
        "from_ms": pa.array(held.from_ms),
        "to_ms": pa.array(held.to_ms, mask=~has_un),
        "ready_ms": pa.array(fleet.h_ready[h]),
        "drain_ms": pa.array(fleet.h_drain[h], mask=~has_un),
        "has_sidecar": pa.array(fleet.h_sidecar[h]),
        "assign_event_lost": pa.array(held.assign_lost),
        "unassign_event_lost": pa.array(held.unassign_lost, mask=~has_un),
        "assign_event_ms": pa.array(held.assign_event_ms),
        "unassign_event_ms": pa.array(held.unassign_event_ms, mask=~has_un),
    })


def events_table(ev: Events, lk: Lookup) -> pa.Table:
    fleet = lk.fleet
    h = ev.holder
    n = len(h)
    return pa.Table.from_arrays([
        pa.array(ev.event_ms), pa.array(ev.published_ms), lk.ip.take(pa.array(ev.ip)),
        pa.array(np.where(ev.assign, ACTION_ASSIGN, ACTION_UNASSIGN).astype(object), pa.string()),
        lk.workload.take(pa.array(fleet.h_workload[h].astype(np.int64), mask=~ev.assign)),
        lk.instance.take(pa.array(h)),
        lk.kind.take(pa.array(fleet.h_kind[h].astype(np.int64))),
        pa.repeat(pa.scalar(lk.region, pa.string()), n),
        lk.holder_az(h),
    ], schema=IP_EVENT_SCHEMA)


def event_files(ev: Events, lk: Lookup, params: SimParams) -> Iterator[tuple[str, pa.Table | bytes]]:
    """(key, parquet table or gzip JSON Lines bytes) per published time bucket."""
    if len(ev.ip) == 0:
        return
    table = events_table(ev, lk)
    bucket_ms = params.event_file_minutes * 60_000
    bucket = ev.file_ms // bucket_ms
    order = np.lexsort((ev.ip, ev.event_ms, ev.published_ms, ev.file_ms))
    table = table.take(pa.array(order))
    bucket = bucket[order]
    change = np.flatnonzero(bucket[1:] != bucket[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(bucket)]])
    for s, e in zip(starts.tolist(), ends.tolist()):
        b = int(bucket[s])
        start_ms = b * bucket_ms
        part = table.slice(s, e - s)
        jsonl = np.random.default_rng([params.seed, b]).random() < params.event_jsonl_share
        name = f"tracker-{start_ms}.{'jsonl.gz' if jsonl else 'parquet'}"
        key = ip_events_key(published_day_ms=start_ms, name=name)
        if jsonl:
            lines = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in part.to_pylist())
            yield key, gzip.compress(lines.encode(), mtime=0)
        else:
            yield key, part
