"""The runs log (_meta/runs): a row a finished run with its stages; what later runs read of it."""

from __future__ import annotations

from flowlake.jobs.bronze.ingest import IngestResult
from flowlake.jobs.bronze.rawfiles import KIND_EVENTS, KIND_FLOWS
from flowlake.jobs.config import load_insight_config, load_jobs_config, load_quality_config
from flowlake.jobs.run import runs
from flowlake.jobs.run.backfill import finished_runs
from flowlake.jobs.run.context import RunContext
from flowlake.jobs.run.plan import plan_span
from flowlake.jobs.run.span import Span
from flowlake.lake import RUNS, Lake, ddl_columns

H = 3_600_000
T = 1_748_822_400_000  # 2025-06-02T00:00Z
OLD_DDL = RUNS.ddl.rsplit(", stages", 1)[0]  # _meta/runs as lakes before the stages column have it


def _ctx(spark, lake_root: str, *, hour: int, run_id: str) -> RunContext:
    ctx = RunContext(spark=spark, lake=Lake(lake_root), raw_root="", start_ms=T + hour * H, end_ms=T + (hour + 1) * H,
                     run_id=run_id, config=load_jobs_config(), quality=load_quality_config(),
                     insight=load_insight_config())
    ctx.span = Span(start_ms=ctx.start_ms, end_ms=ctx.end_ms, from_ms=ctx.start_ms)
    ctx.results["ingest"] = (IngestResult(kind=KIND_FLOWS, files_seen=2, files_ingested=2, rows_ingested=30),
                             IngestResult(kind=KIND_EVENTS, files_seen=1, files_ingested=1, rows_ingested=4))
    return ctx


def _record(spark, lake_root: str, *, hour: int, stages: tuple[str, ...]) -> None:
    ctx = _ctx(spark, lake_root, hour=hour, run_id=f"hour-{hour}-{'-'.join(stages)}")
    runs.record(ctx, stages=stages, started_ms=T, finished_ms=T + 1)


def test_a_log_from_before_the_stages_column_gains_it_and_its_rows_count_as_every_stage(spark, tmp_path):
    lake_root = str(tmp_path / "lake")
    assert "stages" not in ddl_columns(OLD_DDL)
    old_row = ("before", T, T + H, T, 2, 30, 1, 0, 30, T, T + 1)
    spark.createDataFrame([old_row], OLD_DDL).write.format("delta").save(f"{lake_root}/_meta/runs")
    _record(spark, lake_root, hour=1, stages=("ingest", "ownership"))
    log = runs.read(spark, Lake(lake_root))
    rows = {r.run_id: r for r in log.collect()}
    _record(spark, lake_root, hour=2, stages=("gold",))  # gold alone: the next ownership must not seed from hour 2
    assert [r.run_id for r in log.where(~runs.finished("ownership")).collect()] == ["hour-2-gold"]
    assert finished_runs(spark, lake_root) == [(T, T + H), (T + 2 * H, T + 3 * H)]
    assert rows["before"].stages is None and rows["hour-1-ingest-ownership"].stages == ["ingest", "ownership"]
    # the run of some stages counts its ingest's files, has no attributed rows, and is not complete
    assert (rows["hour-1-ingest-ownership"].flow_rows, rows["hour-1-ingest-ownership"].attributed_rows) == (30, None)
    assert {r.run_id for r in log.where(runs.finished("ownership")).collect()} == set(rows)
    assert {r.run_id for r in log.where(runs.published()).collect()} == {*rows, "hour-2-gold"}


def test_a_stage_row_without_ingest_does_not_repeat_its_counts(spark, tmp_path):
    """The DAG's attribute task: the ingest counts belong to the ingest task's row, not to each row of the run id."""
    lake_root = str(tmp_path / "lake")
    ctx = _ctx(spark, lake_root, hour=0, run_id="dag-0")
    ctx.results["by_attribution"] = {"heartbeat": 20, "unattributed": 1}
    runs.record(ctx, stages=("attribute",), started_ms=T, finished_ms=T + 1)
    (row,) = runs.read(spark, Lake(lake_root)).collect()
    assert (row.stages, row.flow_files, row.flow_rows, row.attributed_rows) == (["attribute"], None, None, 21)


def test_late_data_reaches_back_into_a_window_published_without_its_gold(spark, tmp_path):
    """Hour 0 ran ownership and attribute (its gold not yet, as when the DAG's gold task failed); late
    files for it reach back from hour 1's run, so its silver gets their records. A window that only
    ingested has nothing derived to correct."""
    published, ingested = str(tmp_path / "published"), str(tmp_path / "ingested")
    _record(spark, published, hour=0, stages=("ingest", "ownership", "attribute", "quality"))
    _record(spark, ingested, hour=0, stages=("ingest",))
    late = [T + H // 2]
    assert plan_span(_ctx(spark, published, hour=1, run_id="h1"), late_ms=late).from_ms == T
    assert plan_span(_ctx(spark, ingested, hour=1, run_id="h1"), late_ms=late).from_ms == T + H
    assert finished_runs(spark, published) == []  # not complete: backfill runs it again
