"""The maintain stage compacts small files (Z-ordering silver), keeps every row, and is due by data time."""

from flowlake.jobs.config import MaintenanceParams
from flowlake.jobs.run import io
from flowlake.jobs.run.maintain import maintain, summary, vacuum
from flowlake.lake import FLOWS_ATTRIBUTED, Lake
from tests.jobs.helpers import MIN, T0, flow, flows_df


def test_small_files_are_compacted_and_silver_z_ordered_without_changing_a_row(spark, tmp_path, capfd):
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    lake = Lake(str(tmp_path / "lake"))
    for i in range(6):  # six appends: six small files in one dt partition
        rows = flows_df(spark, [flow(interval_start_ms=T0 + i * MIN, remote_port=1000 + i)])
        rows = (rows.withColumn("source_file", F.lit(f"file:///raw/{i}.parquet"))
                .withColumn("local_workload_resolved", F.col("local_workload"))
                .withColumn("remote_workload", F.lit(f"w{i % 2}")).withColumn("remote_attribution", F.lit("event"))
                .withColumn("remote_availability_zone", F.lit(None).cast("string"))
                .withColumn("remote_kind", F.lit("instance"))
                .withColumn("dt", F.to_date(F.timestamp_millis("interval_start_ms"))))
        io.append(rows, lake, FLOWS_ATTRIBUTED)
    before = io.read(spark, lake, FLOWS_ATTRIBUTED).localCheckpoint()
    files = spark.read.format("delta").load(lake.path(FLOWS_ATTRIBUTED)).inputFiles()
    assert len(files) == 6

    done = maintain(spark, lake, params=MaintenanceParams(compact_min_files=4), days=("2026-01-01", "2026-01-02"))
    assert [str(m) for m in done] == [
        f"{FLOWS_ATTRIBUTED.name}: compacted 6 file(s) into 1; vacuumed (keeping 168 h, 0 file(s) deleted)"]
    assert summary(done) == "maintain: 1 table(s); compacted 1 (6 file(s) into 1); vacuumed (keeping 168 h, 0 file(s) deleted)"
    after = io.read(spark, lake, FLOWS_ATTRIBUTED)
    assert len(after.inputFiles()) == 1
    assert sorted(before.collect()) == sorted(after.collect())
    # a second pass finds nothing to do (below the file threshold) and the checkpoint interval is set
    assert str(maintain(spark, lake, params=MaintenanceParams(compact_min_files=4))[0]).endswith(
        "no compaction needed; vacuumed (keeping 168 h, 0 file(s) deleted)")
    props = spark.sql(f"DESCRIBE DETAIL delta.`{lake.path(FLOWS_ATTRIBUTED)}`").first()["properties"]
    assert props["delta.checkpointInterval"] == "10"
    assert props["delta.deletedFileRetentionDuration"] == "interval 168 hours"  # VACUUM's retention
    # past a zero retention the six compacted-away files go: the count is Delta's, read off its console
    # line, and that line stays off the terminal
    capfd.readouterr()
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        deleted = vacuum(spark, DeltaTable.forPath(spark, lake.path(FLOWS_ATTRIBUTED)), retain_hours=0)
    finally:
        spark.conf.unset("spark.databricks.delta.retentionDurationCheck.enabled")
    assert deleted == 6
    assert "Deleted" not in capfd.readouterr().out
    assert io.read(spark, lake, FLOWS_ATTRIBUTED).count() == 6
