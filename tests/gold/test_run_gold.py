"""run_gold on a tiny Delta lake: every insight table written, re-runs idempotent, report renders."""

from __future__ import annotations

from flowlake.jobs import dependencies, gold
from flowlake.jobs import lake as lk
from flowlake.jobs.config import JobsConfig
from flowlake.jobs.insight_config import DeclaredPath, InsightConfig, PolicyRule
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


def _counts(spark, lake):
    return {name: lk.read(spark, gold.table(lake, name)).count() for name in gold.TABLES}


def test_run_gold_writes_every_table_and_rerun_is_idempotent(spark, tmp_path):
    lake = lk.Lake(str(tmp_path / "lake"))
    silver = _silver(spark)
    lk.replace_where(silver, lake.flows_attributed, predicate="interval_start_ms >= 0", partition_by=["dt"])
    lk.replace_where(dependencies.transform(silver), lake.app_dependencies, predicate="hour_start_ms >= 0")
    seconds = gold.run_gold(spark, lake, h0_ms=T0, h1_ms=T0 + 3 * HOUR, config=JobsConfig(), insight=INSIGHT)
    assert {"gold_rollups", "gold_crosszone", "gold_policy", "gold_segments", "gold_forecast"} <= set(seconds)
    first = _counts(spark, lake)
    assert first["traffic_hourly"] == 9 and first["traffic_daily"] == 3 and first["link_hourly"] > 0
    assert first["policy_breaches"] == 3  # b -> db in each of the three hours
    summary = lk.read(spark, gold.table(lake, "capacity_forecast_summary")).collect()
    assert summary and {r.status for r in summary} == {"insufficient_history"}
    assert first["capacity_forecast"] == 0
    paths = {r.path: r.status for r in lk.read(spark, gold.table(lake, "path_validation")).collect()}
    assert paths == {"a-db": "observed", "c-db": "no_traffic"}
    # re-run of the last hour only, then of everything: same tables
    gold.run_gold(spark, lake, h0_ms=T0 + 2 * HOUR, h1_ms=T0 + 3 * HOUR, config=JobsConfig(), insight=INSIGHT)
    gold.rebuild(spark, lake, config=JobsConfig(), insight=INSIGHT)
    assert _counts(spark, lake) == first
    daily = lk.read(spark, gold.table(lake, "traffic_daily")).groupBy().sum("bytes_to_dst").first()[0]
    assert daily == 3 * 1000 * (1 + 2 + 3)

    from flowlake import notebook, report

    view = notebook.open_lake(str(tmp_path / "lake"), config=INSIGHT, spark=spark)
    page = report.build(view)
    assert page.count("data:image/png;base64,") >= 4
    assert "insufficient_history" in page and "no-db-from-b" in page
    up, down = notebook.neighbourhood(view.table("app_dependencies"), "db")
    assert set(up.src_workload) == {"a", "b"} and down.empty
