"""Event ranges: who held each IP according to the tracker's assign/unassign events.

Per IP, in event-time order (never arrival order), with duplicates removed
(see :mod:`flowlake.jobs.silver.ownership` for the rules). The tracker's
``event_ms`` lags the true change by up to the lag margin ``M`` (learned per UTC
hour from the sidecar holdings of a fixed lookback, see
:mod:`flowlake.jobs.silver.tracker_lag`; an event at ``t`` uses the margin of the
hour of ``t - lag_margin_cap_ms``, the earliest point any of its cuts can fall,
so the margin a cut uses does not depend on how time was cut into runs).
Cuts are asymmetric: a range loses time to the margin only where another
workload could have taken the address.

* Holder A unassigned at ``u``, next assign of another workload B at ``a``:
  A ends at ``min(u, a - M)``; B starts at ``a``, or earlier at ``max(u, a - M)``
  when A's unassign came first (A had released by ``u``, B's assign lags it by
  at most ``M``). ``[a - M, u)``, if not empty, is doubt (``lag margin``).
* A unassigned and no assign within ``M`` after: A keeps every second until ``u``.
* A's unassign lost, next assign B at ``a``: A ends at ``a - M``, ``[a - M, a)``
  is doubt (``lag margin``).
* The next holder is the same workload (another instance): no margin, the
  address stays that workload's either way.
* A lag-margin doubt right after the range it cut names the assign's holder
  (``next_*``); where that holder's sidecar shows when it arrived, the doubt is
  dated (:mod:`flowlake.jobs.silver.successor`).
* An unassign at ``u`` naming an instance that did not hold the address within
  ``seen_within_ms`` before (its assign was lost), after more than ``M`` of A's
  holding: another holder C came after A (a double loss). C released by ``u``
  and held for at most the lifetime bound ``L`` (a high quantile of holding
  lifetimes), so it began no earlier than ``u - M - L``; A, also held at most
  ``L``, keeps ``[a, min(a + L, u - M - L))`` and the rest up to ``u`` is doubt
  (``guard: stale range``). Without a bound, C could have begun at any time
  after A's assign: all of A's range is doubt. A run that ingests such an
  unassign recomputes back to A's start (:mod:`flowlake.jobs.silver.orphans`).
* An instance counts as seen on the address at its own events and where a
  range of it ends. ``seen`` rows (``ACTION_SEEN``) only say that, before
  the events a run replays: a run seeded from published holdings passes the
  events and holding ends of ``seen_within_ms`` before its span that way
  (:mod:`flowlake.jobs.silver.seed`).
"""

from __future__ import annotations

import pandas as pd
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from flowlake.contracts import ACTION_ASSIGN, ACTION_UNASSIGN
from flowlake.lake import IP_EVENT_HOLDINGS, ddl_columns
from flowlake.timeutil import HOUR_MS, floor_to

EVENT_BUCKETS = 16
KIND_RANGE = "range"
KIND_DOUBT = "doubt"
NOTE_LAG_MARGIN = "lag margin"
NOTE_STALE_RANGE = "guard: stale range"
HOLDER_COLUMNS = ["workload", "instance_id", "kind", "region", "availability_zone"]
ACTION_SEEN = "seen"  # not a tracker action: an earlier event of the instance, before the events replayed
EVENT_RANGE_DDL = IP_EVENT_HOLDINGS.ddl
EVENT_RANGE_COLUMNS = IP_EVENT_HOLDINGS.columns
# ranges and doubts of one pass: row_kind "range" (a holding) or "doubt" (reason in `note`); a lag-margin
# doubt right after the range it cut names the holder whose assign made it (next_*: see successor.py)
EVENT_ROWS_DDL = EVENT_RANGE_DDL + ", row_kind string, note string, next_workload string, next_instance_id string"


@dataclass(frozen=True)
class Margins:
    """The lag margin and stale-range bound per UTC hour (epoch ms of the hour's start -> (margin_ms,
    stale_after_ms or None)). An event at ``t`` uses the hour of ``t - key_offset_ms`` (the run passes
    ``lag_margin_cap_ms``), clamped to the first and last hour given: events outside them cut only
    outside the run's span, which publishes nothing there."""

    by_hour: dict[int, tuple[int, int | None]]
    key_offset_ms: int = 0

    def __post_init__(self) -> None:
        if not self.by_hour:
            raise ValueError("Margins needs at least one hour")

    def at(self, event_ms: int) -> tuple[int, int | None]:
        hours = self.by_hour
        hour = min(max(floor_to(int(event_ms) - self.key_offset_ms, HOUR_MS), min(hours)), max(hours))
        return hours[hour]


def text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _range_frame(rows: list[dict], ddl: str = EVENT_RANGE_DDL) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=ddl_columns(ddl))
    return frame.astype({"valid_from_ms": "int64", "valid_to_ms": "Int64"})


def event_ranges_for_ip(events: pd.DataFrame, *, lag_margin_ms: int,
                        stale_after_ms: int | None = None) -> pd.DataFrame:
    """Holding ranges of one ip from its (deduplicated) events; pure Python, unit-testable.

    ``events`` has the contract's event columns. Returns EVENT_RANGE_DDL rows
    with valid_to_ms = None for a holding still open after the last event.
    """
    rows = event_rows(events, lag_margin_ms=lag_margin_ms, stale_after_ms=stale_after_ms)
    return _range_frame([r for r in rows if r["row_kind"] == KIND_RANGE])


def event_rows(events: pd.DataFrame, *, lag_margin_ms: int, stale_after_ms: int | None = None,
               margins: Margins | None = None, seen_within_ms: int | None = None) -> list[dict]:
    """Ranges and doubts (EVENT_ROWS_DDL dicts) of one ip, by the rules of the module doc.

    ``stale_after_ms``: a holding longer than this whose end another holder's
    unassign proves is only trusted this long (None: no such guard).
    ``margins``: per-hour margin and stale bound, looked up at each event
    (overrides ``lag_margin_ms`` and ``stale_after_ms``).
    ``seen_within_ms``: an instance counts as having held the address if it had an event on it, or a
    range of it ended, this long before (None: ever, among ``events``).
    """
    order = events.assign(_unassign_first=(events["action"] != ACTION_UNASSIGN).astype(int))
    order = order.sort_values(["event_ms", "_unassign_first", "published_ms"], kind="mergesort")
    m = lag_margin_ms
    out: list[dict] = []
    current: dict | None = None
    seen: dict[str | None, int] = {}  # instances seen on the address -> their latest event or range end (ms)

    def unseen(inst: str | None, at: int) -> bool:
        last = seen.get(inst)
        return last is None or (seen_within_ms is not None and last < at - seen_within_ms)

    def mark(inst: str | None, at: int) -> None:
        seen[inst] = max(at, seen.get(inst, at))
    # the last holding ended by its own unassign, while no event followed: (row in out, unassign ms)
    released: tuple[dict, int] | None = None

    def emit(holding: dict, end: int | None) -> dict | None:
        if end is not None:
            mark(holding["instance_id"], end)  # it held the address until then
        if end is not None and end <= holding["valid_from_ms"]:
            return None
        row = {**holding, "valid_to_ms": end, "row_kind": KIND_RANGE, "note": None, "next_workload": None,
               "next_instance_id": None}
        out.append(row)
        return row

    def doubt(ip: str, start: int, end: int, note: str, after: dict | None = None, by: tuple = (None, None),
              holder: dict | None = None) -> None:
        # after: the range this doubt was cut from, when it ends where the doubt starts; by: who cut it;
        # holder: whose time it may be until the unknown holder `by` shows up (successor.py dates it)
        nxt = by if holder is not None or (after is not None and after["valid_to_ms"] == start) else (None, None)
        who = {c: holder[c] for c in HOLDER_COLUMNS} if holder is not None else dict.fromkeys(HOLDER_COLUMNS)
        if end > start:
            out.append({"ip": ip, **who, "valid_from_ms": int(start), "valid_to_ms": int(end),
                        "row_kind": KIND_DOUBT, "note": note, "next_workload": nxt[0], "next_instance_id": nxt[1]})

    for ev in order.itertuples(index=False):
        inst, workload, at = text_or_none(ev.instance_id), text_or_none(ev.workload), int(ev.event_ms)
        if ev.action == ACTION_SEEN:
            mark(inst, at)
            continue
        if margins is not None:
            m, stale_after_ms = margins.at(at)
        if ev.action == ACTION_ASSIGN:
            if workload is None:
                continue  # an assign must name a workload; ingest quarantines such rows
            if current is not None and current["workload"] == workload and current["instance_id"] == inst:
                continue  # the same holder again (refresh, duplicate or re-send)
            start = at
            if current is not None:  # the previous holder's unassign is lost (or lags behind this assign)
                if current["workload"] == workload:
                    emit(current, at)  # same workload: the address is that workload's either way
                else:
                    end = at - m
                    if stale_after_ms is not None and end - current["valid_from_ms"] > stale_after_ms:
                        end = current["valid_from_ms"] + stale_after_ms
                        doubt(ev.ip, end, at - m, NOTE_STALE_RANGE)
                    row = emit(current, end)
                    doubt(ev.ip, max(at - m, current["valid_from_ms"]), at, NOTE_LAG_MARGIN, row, (workload, inst))
            elif released is not None:
                row, u = released
                if row["workload"] == workload:
                    start = u
                elif at - m < u:  # another workload could have taken the address before u
                    cut = max(at - m, row["valid_from_ms"])
                    if cut > row["valid_from_ms"]:
                        row["valid_to_ms"] = cut
                    else:
                        out.remove(row)
                        row = None
                    doubt(ev.ip, cut, u, NOTE_LAG_MARGIN, row, (workload, inst))
                    start = u
                else:
                    start = max(u, at - m)  # the assign lags the change by at most m; the address was free
            current = {
                "ip": ev.ip, "workload": workload, "instance_id": inst, "kind": text_or_none(ev.kind),
                "region": text_or_none(ev.region), "availability_zone": text_or_none(ev.availability_zone),
                "valid_from_ms": int(start),
            }
            mark(inst, at)
            released = None
        elif ev.action == ACTION_UNASSIGN:
            if current is not None and (inst is None or current["instance_id"] is None
                                        or inst == current["instance_id"]):
                row = emit(current, at)
                released = (row, at) if row is not None else None
                current = None
            elif current is not None and unseen(inst, at) and at - current["valid_from_ms"] > m:
                # the unassign of a holder whose assign was lost, after ours: it held at most a lifetime
                # before its release (>= at - m); without a lifetime bound, any time after our start
                start = current["valid_from_ms"]
                lived = at if stale_after_ms is None else min(at, start + stale_after_ms)  # our holder's last
                end = max(start, min(lived, at - m - (stale_after_ms or at)))
                # until the unknown holder's own sidecar shows it, [end, lived) may still be ours
                doubt(ev.ip, end, lived, NOTE_STALE_RANGE, by=(None, inst), holder=current)
                doubt(ev.ip, lived, at, NOTE_STALE_RANGE)
                emit(current, end)
                current, released = None, None
            elif current is None and unseen(inst, at):
                released = None  # an unseen holder came after the last release
            # else: the unassign of an earlier holder arriving after the next assign (reordered lag): ignored
            mark(inst, at)
    if current is not None:
        emit(current, None)
    return out


def dedup_events(events: DataFrame) -> DataFrame:
    """Identical rows and re-sends (same change, later publication) count once."""
    return events.dropDuplicates(["ip", "action", "event_ms", "workload", "instance_id"])


def per_ip_bucket(events: DataFrame, fn, schema: str) -> DataFrame:
    # Many IPs per Python call (an IP's events always land in one bucket): the per-call
    # overhead of grouped pandas UDFs would otherwise dominate.
    bucket = F.pmod(F.xxhash64("ip"), F.lit(EVENT_BUCKETS))
    return events.withColumn("_bucket", bucket).groupBy("_bucket").applyInPandas(
        lambda pdf: fn(pdf.drop(columns=["_bucket"])), schema=schema)


def event_rows_df(events: DataFrame, *, lag_margin_ms: int, stale_after_ms: int | None,
                  margins: Margins | None = None, seen_within_ms: int | None = None) -> DataFrame:
    """Ranges and doubts (EVENT_ROWS_DDL) of every ip's events (``margins``, ``seen_within_ms``: see
    :func:`event_rows`)."""
    def per_bucket(pdf: pd.DataFrame) -> pd.DataFrame:
        rows = [r for _, g in pdf.groupby("ip", sort=False)
                for r in event_rows(g, lag_margin_ms=lag_margin_ms, stale_after_ms=stale_after_ms, margins=margins,
                                    seen_within_ms=seen_within_ms)]
        return _range_frame(rows, EVENT_ROWS_DDL)

    return per_ip_bucket(dedup_events(events), per_bucket, EVENT_ROWS_DDL)
