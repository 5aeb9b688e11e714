"""A run's plan (span + ingest results) is worked out once and kept for the run id's later stages."""

from __future__ import annotations

import os

import pytest

from flowlake.jobs.bronze.ingest import IngestResult
from flowlake.jobs.bronze.rawfiles import KIND_EVENTS, KIND_FLOWS
from flowlake.jobs.config import load_insight_config, load_jobs_config, load_quality_config
from flowlake.jobs.run.context import RunContext
from flowlake.jobs.run.plan import drop_plan, load_plan, plan, save_plan
from flowlake.jobs.run.span import Span
from flowlake.lake import Lake

H = 3_600_000
T = 1_748_822_400_000  # 2025-06-02T00:00Z


def _ingested(min_flow_ms: int | None) -> tuple[IngestResult, IngestResult]:
    flows = IngestResult(kind=KIND_FLOWS, files_seen=3, files_ingested=2, rows_ingested=40, min_time_ms=min_flow_ms,
                         quarantined=[{"source_file": "flows/v1/x.parquet", "reason": "bad footer",
                                       "quarantine_path": None}])
    return flows, IngestResult(kind=KIND_EVENTS)


def _ctx(spark, lake_root: str, run_id: str = "hour-1") -> RunContext:
    return RunContext(spark=spark, lake=Lake(lake_root), raw_root="", start_ms=T + H, end_ms=T + 2 * H, run_id=run_id,
                      config=load_jobs_config(), quality=load_quality_config(), insight=load_insight_config())


def test_a_plan_round_trips_and_is_dropped(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    assert load_plan(lake, "r1", start_ms=T, end_ms=T + H) is None  # none kept yet
    span = Span(start_ms=T, end_ms=T + H, from_ms=T - 2 * H, pad_ms=600_000)
    save_plan(lake, "r1", span, _ingested(T - 2 * H + 5))
    assert load_plan(lake, "r1", start_ms=T, end_ms=T + H) == (span, _ingested(T - 2 * H + 5))
    drop_plan(lake, "r1")
    assert load_plan(lake, "r1", start_ms=T, end_ms=T + H) is None
    drop_plan(lake, "r1")  # dropping what is not there is fine


def test_a_run_id_reused_for_another_window_is_a_clear_error(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    save_plan(lake, "r1", Span(start_ms=T, end_ms=T + H, from_ms=T), _ingested(None))
    with pytest.raises(ValueError, match="use a new --run-id"):
        load_plan(lake, "r1", start_ms=T + H, end_ms=T + 2 * H)


def test_a_later_stage_uses_the_kept_plan_without_replanning(spark, tmp_path):
    """The kept span reaches back an hour; replanning over this empty lake would not (nothing late ingested)."""
    ctx = _ctx(spark, str(tmp_path / "lake"))
    kept = Span(start_ms=T + H, end_ms=T + 2 * H, from_ms=T, pad_ms=600_000)
    save_plan(ctx.lake, ctx.run_id, kept, _ingested(T + 30_000))
    assert plan(ctx) == (kept, _ingested(T + 30_000))


def test_a_stage_after_an_ingest_in_the_same_process_plans_anew_and_keeps_that(spark, tmp_path):
    """An ingest of this run id ran here (its results are in hand): a plan kept before it is not used."""
    ctx = _ctx(spark, str(tmp_path / "lake"))
    save_plan(ctx.lake, ctx.run_id, Span(start_ms=T + H, end_ms=T + 2 * H, from_ms=T), _ingested(T + 30_000))
    ctx.results["ingest"] = _ingested(None)
    span, ingested = plan(ctx)
    assert (span.from_ms, ingested) == (T + H, _ingested(None))  # nothing late: the window itself
    assert load_plan(ctx.lake, ctx.run_id, start_ms=T + H, end_ms=T + 2 * H) == (span, ingested)


def test_a_plan_is_kept_on_s3(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    lake = Lake(f"s3://{s3_server.new_bucket()}/lake")
    assert load_plan(lake, "r1", start_ms=T, end_ms=T + H) is None
    span = Span(start_ms=T, end_ms=T + H, from_ms=T)
    save_plan(lake, "r1", span, _ingested(None))
    assert load_plan(lake, "r1", start_ms=T, end_ms=T + H) == (span, _ingested(None))
    drop_plan(lake, "r1")
    assert load_plan(lake, "r1", start_ms=T, end_ms=T + H) is None


def test_maintenance_deletes_plans_older_than_the_time_travel_it_keeps(spark, tmp_path):
    from flowlake.jobs.config import MaintenanceParams
    from flowlake.jobs.run.maintain import maintain, summary
    from flowlake.jobs.run.plan import PLANS_DIR, prune_plans

    lake = Lake(str(tmp_path / "lake"))
    assert prune_plans(lake, older_than_hours=168) == 0  # no plan folder yet
    for run_id in ("old", "new"):
        save_plan(lake, run_id, Span(start_ms=T, end_ms=T + H, from_ms=T), _ingested(None))
    old = tmp_path / "lake" / PLANS_DIR / "old.json"
    week_and_an_hour_ago = old.stat().st_mtime - 169 * 3600
    os.utime(old, (week_and_an_hour_ago, week_and_an_hour_ago))
    done = maintain(spark, lake, params=MaintenanceParams(vacuum_retain_hours=168))  # a lake with no table yet
    assert summary(done).endswith("; 1 old run plan(s) deleted") and summary(done).startswith("maintain: 0 table(s)")
    assert sorted(p.name for p in old.parent.iterdir()) == ["new.json"]
    assert load_plan(lake, "new", start_ms=T, end_ms=T + H) is not None
