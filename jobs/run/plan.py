"""A run's plan: its span and what its ingest did, worked out once and kept for the run's later stages.

The span (:mod:`flowlake.jobs.run.span`) depends on what this run id ingested
(the processed-files log) and on the unassigns its ownership meets, including
the holdings earlier runs published. Stages run apart (the Airflow DAG: one
process a stage, one run id) would each work it out again after the stages
before them had published, at a cost of several Spark queries a process, and
could widen it differently than one run over all stages does. So the first
stage that needs the span plans it and keeps the plan under
``<lake>/_meta/plans/<run_id>.json``; later stages of that run id read it. An
ingest of the run id drops the plan (what it ingested may have changed).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

from pyarrow.fs import FileSelector, FileType
from pyspark.sql import functions as F

from flowlake.contracts import ACTION_UNASSIGN
from flowlake.jobs.bronze import ingest
from flowlake.jobs.bronze.rawfiles import KIND_EVENTS, KIND_FLOWS
from flowlake.jobs.run import runs
from flowlake.jobs.run.context import RunContext
from flowlake.jobs.run.span import Span
from flowlake.jobs.silver.orphans import orphan_reach
from flowlake.jobs.silver.ownership import event_reach_ms, evidence_pad_ms
from flowlake.jobs.silver.tracker_lag import lookback_ms
from flowlake.lake import BRONZE_IP_EVENTS, INGESTED_FILES, IP_EVENT_HOLDINGS, Lake
from flowlake.timeutil import HOUR_MS, floor_to

PLANS_DIR = "_meta/plans"
PLAN_VERSION = 1
Ingested = tuple[ingest.IngestResult, ingest.IngestResult]  # flows, events


def ingest_results_from_log(ctx: RunContext) -> Ingested:
    """What the ingest stage of this run id did, from the processed-files log (stages run apart)."""
    rows = ctx.read(INGESTED_FILES).where(F.col("run_id") == ctx.run_id).collect()
    out = []
    for kind in (KIND_FLOWS, KIND_EVENTS):
        mine = [r for r in rows if r["kind"] == kind]
        ok = [r for r in mine if r["status"] == ingest.STATUS_INGESTED]
        mins = [r["min_time_ms"] for r in ok if r["min_time_ms"] is not None]
        out.append(ingest.IngestResult(
            kind=kind, files_seen=len(mine), files_ingested=len(ok), rows_ingested=sum(r["rows"] or 0 for r in ok),
            quarantined=[{"source_file": r["source_file"], "reason": r["reason"], "quarantine_path": None}
                         for r in mine if r["status"] == ingest.STATUS_QUARANTINED],
            min_time_ms=min(mins) if mins else None))
    return out[0], out[1]


def orphan_reach_ms(ctx: RunContext) -> int | None:
    """Where the earliest range an unknown holder's unassign may cut began (:mod:`flowlake.jobs.silver.orphans`),
    among the unassigns this run's ownership meets: those of its window and what its margins reach past it,
    and those it ingested late. None: no such unassign."""
    params, floor_ms = ctx.config.attribution, _floor_ms(ctx)
    within = lookback_ms(params)
    reach_end = ctx.end_ms + event_reach_ms(params)
    events = ctx.read(BRONZE_IP_EVENTS)
    mine = (ctx.read(INGESTED_FILES).where((F.col("run_id") == ctx.run_id) & (F.col("kind") == KIND_EVENTS))
            .select("source_file", F.lit(True).alias("_mine")))
    unassigns = (events.where((F.col("action") == ACTION_UNASSIGN) & (F.col("event_ms") >= floor_ms)
                              & (F.col("event_ms") < reach_end))
                 .join(F.broadcast(mine), "source_file", "left")
                 .where((F.col("event_ms") >= ctx.start_ms) | F.col("_mine").isNotNull())).localCheckpoint()
    if not unassigns.take(1):
        return None
    ips = unassigns.select("ip").distinct()
    known = events.where((F.col("event_ms") >= floor_ms - within) & (F.col("event_ms") < reach_end)).join(
        ips, "ip", "left_semi")
    return orphan_reach(unassigns, known, ctx.read(IP_EVENT_HOLDINGS).join(ips, "ip", "left_semi"),
                        seen_within_ms=within, cap_ms=params.lag_margin_cap_ms).agg(F.min("reach_ms")).first()[0]


def _floor_ms(ctx: RunContext) -> int:
    return ctx.start_ms - ctx.config.ingest.late_arrival_lookback_hours * HOUR_MS


def plan_span(ctx: RunContext, *, late_ms: list[int | None]) -> Span:
    """The run's span: the window, reaching back to the earliest late data this run ingested when an
    earlier run (within the late-arrival lookback) already published tables derived from that time
    (:func:`~flowlake.jobs.run.runs.published`: whether or not its gold ran)."""
    start_ms = ctx.start_ms
    floor_ms = _floor_ms(ctx)
    from_ms = start_ms
    late = [t for t in late_ms if t is not None and t < start_ms]
    if late:
        candidate = max(floor_ms, floor_to(min(late), HOUR_MS))
        published = runs.read(ctx.spark, ctx.lake).where(runs.published())
        earliest = (published.where((F.col("end_ms") > candidate) & (F.col("start_ms") < start_ms))
                    .agg(F.min("start_ms")).first()[0])
        if earliest is not None:
            from_ms = min(start_ms, max(candidate, floor_to(earliest, HOUR_MS)))
    return Span(start_ms=start_ms, end_ms=ctx.end_ms, from_ms=from_ms, pad_ms=evidence_pad_ms(ctx.config.attribution))


def plan(ctx: RunContext) -> tuple[Span, Ingested]:
    """The run's span and ingest results: kept by an earlier stage of this run id, or planned (and kept) now."""
    if "ingest" not in ctx.results:
        kept = load_plan(ctx.lake, ctx.run_id, start_ms=ctx.start_ms, end_ms=ctx.end_ms)
        if kept is not None:
            return kept
    flows, events = ctx.results.get("ingest") or ingest_results_from_log(ctx)
    span = plan_span(ctx, late_ms=[flows.min_time_ms, events.min_time_ms, orphan_reach_ms(ctx)])
    save_plan(ctx.lake, ctx.run_id, span, (flows, events))
    return span, (flows, events)


def _path(lake: Lake, run_id: str) -> str:
    return f"{lake.location.path}/{PLANS_DIR}/{run_id}.json"


def save_plan(lake: Lake, run_id: str, span: Span, ingested: Ingested) -> None:
    """Keep the run's plan (replacing one kept before)."""
    body = {"version": PLAN_VERSION, "run_id": run_id, "span": asdict(span),
            "ingest": [asdict(result) for result in ingested]}
    fs, path = lake.location.fs, _path(lake, run_id)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(json.dumps(body).encode())


def load_plan(lake: Lake, run_id: str, *, start_ms: int, end_ms: int) -> tuple[Span, Ingested] | None:
    """The plan an earlier stage of ``run_id`` kept; None if there is none. A plan for another window
    (a run id reused with other --start/--end) is a clear error: run ids name one window."""
    fs, path = lake.location.fs, _path(lake, run_id)
    if fs.get_file_info(path).type == FileType.NotFound:
        return None
    with fs.open_input_stream(path) as f:
        body = json.loads(f.read())
    span = Span(**body["span"])
    if (span.start_ms, span.end_ms) != (start_ms, end_ms):
        raise ValueError(f"run id {run_id!r} was planned for [{span.start_ms}, {span.end_ms}) ms, not "
                         f"[{start_ms}, {end_ms}): stages run apart share one window; use a new --run-id")
    flows, events = (ingest.IngestResult(**result) for result in body["ingest"])
    return span, (flows, events)


def drop_plan(lake: Lake, run_id: str) -> None:
    """Forget the run's plan (its ingest ran again)."""
    fs, path = lake.location.fs, _path(lake, run_id)
    if fs.get_file_info(path).type != FileType.NotFound:
        fs.delete_file(path)


def prune_plans(lake: Lake, *, older_than_hours: int, now_s: float | None = None) -> int:
    """Delete the plans last written more than ``older_than_hours`` ago (maintenance); returns how many."""
    fs, folder = lake.location.fs, f"{lake.location.path}/{PLANS_DIR}"
    if fs.get_file_info(folder).type != FileType.Directory:
        return 0
    cutoff_s = (time.time() if now_s is None else now_s) - older_than_hours * 3600
    old = [info.path for info in fs.get_file_info(FileSelector(folder))
           if info.type == FileType.File and info.path.endswith(".json") and info.mtime.timestamp() < cutoff_s]
    for path in old:
        fs.delete_file(path)
    return len(old)
