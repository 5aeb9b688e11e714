"""The wide record tables keep Delta statistics only on the columns runs and analysts filter on."""

import json

from pyspark.sql import functions as F

from flowlake.jobs.config import MaintenanceParams
from flowlake.jobs.run import io
from flowlake.jobs.run.maintain import maintain
from flowlake.lake import BRONZE_FLOWS, RECORD_STATS, STATS_COLUMNS_PROPERTY, Lake
from tests.jobs.helpers import MIN, T0, flow, flows_df


def _bronze_rows(spark, i: int):
    return (flows_df(spark, [flow(interval_start_ms=T0 + i * MIN, remote_port=1000 + i)])
            .withColumn("source_file", F.lit(f"file:///raw/flows/{i}.parquet"))
            .withColumn("dt", F.to_date(F.timestamp_millis("interval_start_ms"))))


def _stats_of_added_files(path: str) -> list[dict]:
    from pathlib import Path

    stats = []
    for commit in sorted(Path(path, "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            add = json.loads(line).get("add")
            if add and add.get("stats"):
                stats.append(json.loads(add["stats"]))
    return stats


def test_a_new_table_keeps_statistics_on_its_named_columns_only(spark, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    io.append(_bronze_rows(spark, 0), lake, BRONZE_FLOWS)  # creates the table: the property comes with it
    io.append(_bronze_rows(spark, 1), lake, BRONZE_FLOWS)  # and a later append on it is accepted
    props = spark.sql(f"DESCRIBE DETAIL delta.`{lake.path(BRONZE_FLOWS)}`").first()["properties"]
    assert props[STATS_COLUMNS_PROPERTY] == ",".join(RECORD_STATS)
    stats = _stats_of_added_files(lake.path(BRONZE_FLOWS))
    assert len(stats) == 2
    for s in stats:
        assert set(s["minValues"]) == set(RECORD_STATS)  # no statistics on bytes_sent, ports, counters...
        assert s["numRecords"] == 1
    # data skipping still works on a named column: one of the two files is read
    one = io.read(spark, lake, BRONZE_FLOWS).where(F.col("interval_start_ms") == T0 + MIN)
    assert one.count() == 1 and len(one.inputFiles()) == 1


def test_maintenance_names_the_statistics_columns_of_a_lake_made_before_them(spark, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    path = lake.path(BRONZE_FLOWS)
    _bronze_rows(spark, 0).write.format("delta").partitionBy("dt").save(path)  # as an older flowlake wrote it
    assert STATS_COLUMNS_PROPERTY not in spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()["properties"]
    maintain(spark, lake, params=MaintenanceParams())
    props = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()["properties"]
    assert props[STATS_COLUMNS_PROPERTY] == ",".join(RECORD_STATS)
    io.append(_bronze_rows(spark, 1), lake, BRONZE_FLOWS)
    assert set(_stats_of_added_files(path)[-1]["minValues"]) == set(RECORD_STATS)


def test_clustering_silver_on_a_column_without_statistics_is_refused_at_configuration():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"cluster_flows_by: \['bytes_sent'\] not among the columns"):
        MaintenanceParams(cluster_flows_by=["remote_workload", "bytes_sent"])
