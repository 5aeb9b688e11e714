"""run_gold on a tiny Delta lake: every insight table written, re-runs idempotent, report renders."""

from __future__ import annotations

from flowlake.jobs.config import DeclaredPath, InsightConfig, JobsConfig, PolicyRule, QualityConfig
from flowlake.jobs.gold import dependencies
from flowlake.jobs.run import io
from flowlake.jobs.run.context import RunContext
from flowlake.jobs.run.gold_stage import insight_tables, rebuild_insight
from flowlake.jobs.run.span import Span
from flowlake.lake import APP_DEPENDENCIES, FLOWS_ATTRIBUTED, TABLES, Lake, table
from tests.gold.helpers import HOUR, MIN, T0, attributed, attributed_df

INSIGHT = InsightConfig(
    policies=[PolicyRule(name="no-db-from-b", src="b", dst="db", action="deny")],
    declared_paths=[DeclaredPath(name="a-db", src="a", dst="db"), DeclaredPath(name="c-db", src="c", dst="db")],
)


def _silver(spark):
    rows = []
    for h in range(3):
        for src, dst, az in [("a", "db", "us-east-1b"), ("b", "db", "us-east-1a"), ("a", "b", "us-east-1c")]:
            rows.append(attributed(interval_start_ms=T0 + h * HOUR + MIN, local_workload=src,
                                   local_workload_resolved=src, remote_workload=dst, remote_availability_zone=az,
                                   bytes_sent=1000 * (h + 1), bytes_received=10))
    return attributed_df(spark, rows)


INSIGHT_TABLES = [n.split("/", 1)[1] for n in TABLES if n.startswith("gold/") and n != APP_DEPENDENCIES.name]


def _read(spark, lake, name):
    return io.read(spark, lake, table(f"gold/{name}"))


def _counts(spark, lake):
    return {name: _read(spark, lake, name).count() for name in INSIGHT_TABLES}


def _run_gold(spark, lake, *, h0_ms, h1_ms, insight=INSIGHT):
    ctx = RunContext(spark=spark, lake=lake, raw_root="", start_ms=h0_ms, end_ms=h1_ms, run_id="test",
                     config=JobsConfig(), quality=QualityConfig(enabled=False), insight=insight,
                     span=Span(start_ms=h0_ms, end_ms=h1_ms, from_ms=h0_ms))
    insight_tables(ctx)
    return ctx


def test_run_gold_writes_every_table_and_rerun_is_idempotent(spark, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    silver = _silver(spark)
    io.replace_where(silver, lake, FLOWS_ATTRIBUTED, predicate="interval_start_ms >= 0")
    io.replace_where(dependencies.transform(silver), lake, APP_DEPENDENCIES, predicate="hour_start_ms >= 0")
    seconds = _run_gold(spark, lake, h0_ms=T0, h1_ms=T0 + 3 * HOUR).seconds
    assert {"gold_rollups", "gold_crosszone", "gold_policy", "gold_segments", "gold_forecast"} <= set(seconds)
    first = _counts(spark, lake)
    assert first["traffic_hourly"] == 9 and first["traffic_daily"] == 3 and first["link_hourly"] > 0
    assert first["policy_breaches"] == 3  # b -> db in each of the three hours
    summary = _read(spark, lake, "capacity_forecast_summary").collect()
    assert summary and {r.status for r in summary} == {"insufficient_history"}
    assert first["capacity_forecast"] == 0
    paths = {r.path: r.status for r in _read(spark, lake, "path_validation").collect()}
    assert paths == {"a-db": "observed", "c-db": "no_traffic"}
    # an hour with no traffic after them leaves the segments as they were: not even previous_segment is rewritten
    version = lambda name: spark.sql(f"DESCRIBE HISTORY delta.`{lake.path(table(name))}`").agg({"version": "max"}).first()[0]
    segment_versions = [version(f"gold/{n}") for n in ("segments", "segment_quality", "allow_rules")]
    _run_gold(spark, lake, h0_ms=T0 + 3 * HOUR, h1_ms=T0 + 4 * HOUR)
    assert [version(f"gold/{n}") for n in ("segments", "segment_quality", "allow_rules")] == segment_versions
    # re-run of the last hour only, then of everything: same tables
    ctx = _run_gold(spark, lake, h0_ms=T0 + 2 * HOUR, h1_ms=T0 + 3 * HOUR)
    assert version("gold/segments") > segment_versions[0]
    rebuild_insight(ctx)
    assert _counts(spark, lake) == first
    daily = _read(spark, lake, "traffic_daily").groupBy().sum("bytes_to_dst").first()[0]
    assert daily == 3 * 1000 * (1 + 2 + 3)

    from flowlake import notebook, report

    view = notebook.open_lake(str(tmp_path / "lake"), config=INSIGHT, spark=spark)
    page = report.build(view)
    assert page.count("data:image/png;base64,") >= 4
    assert "insufficient_history" in page and "no-db-from-b" in page
    up, down = notebook.neighbourhood(view.table("app_dependencies"), "db")
    assert set(up.src_workload) == {"a", "b"} and down.empty


def test_forecasts_refit_once_a_utc_day_or_when_an_hour_before_their_boundary_is_recomputed(spark, tmp_path):
    from delta.tables import DeltaTable

    from flowlake.jobs.gold import rollups
    from flowlake.lake import CAPACITY_FORECAST_SUMMARY, LINK_HOURLY

    lake = Lake(str(tmp_path / "lake"))
    rows = [attributed(interval_start_ms=T0 + h * HOUR + MIN, local_workload="a", local_workload_resolved="a",
                       remote_workload="db", remote_availability_zone="us-east-1b", bytes_sent=1000 + h)
            for h in range(26)]
    silver = attributed_df(spark, rows)
    io.replace_where(silver, lake, FLOWS_ATTRIBUTED, predicate="interval_start_ms >= 0")
    io.replace_where(dependencies.transform(silver), lake, APP_DEPENDENCIES, predicate="hour_start_ms >= 0")
    io.replace_where(rollups.link_hourly(silver), lake, LINK_HOURLY, predicate="hour_start_ms >= 0")

    def version():
        return DeltaTable.forPath(spark, lake.path(CAPACITY_FORECAST_SUMMARY)).history(1).first()["version"]

    only = INSIGHT.model_copy(update={"tables": ["forecast"]})
    _run_gold(spark, lake, h0_ms=T0, h1_ms=T0 + 26 * HOUR, insight=only)
    fitted = _read(spark, lake, "capacity_forecast_summary").collect()
    assert {r.fit_until_ms for r in fitted} == {T0 + 24 * HOUR}  # whole days only, not the latest hour
    before = version()
    _run_gold(spark, lake, h0_ms=T0 + 25 * HOUR, h1_ms=T0 + 26 * HOUR, insight=only)  # the next hourly run: no refit
    assert version() == before
    _run_gold(spark, lake, h0_ms=T0 + 23 * HOUR, h1_ms=T0 + 26 * HOUR, insight=only)  # late data before the boundary: refit
    assert version() > before
    assert sorted(_read(spark, lake, "capacity_forecast_summary").collect()) == sorted(fitted)
