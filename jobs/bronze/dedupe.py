"""No record twice: which new flow rows are already in bronze, or repeated among themselves."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from flowlake.contracts import RECORD_KEY
from flowlake.jobs.run import io
from flowlake.lake import BRONZE_FLOWS, Lake, Table


def mark_duplicates(spark: SparkSession, lake: Lake, rows: DataFrame, *, target: Table) -> DataFrame:
    """Good new rows with ``_dup`` (true = this record is in bronze already, or an earlier copy of it
    is among these rows: the lowest ``source_file`` wins). Bronze is read only in the rows' dt partitions."""
    key = RECORD_KEY if target is BRONZE_FLOWS else None
    if key is None:
        return rows.withColumn("_dup", F.lit(False))
    order = [F.col("source_file"), *[F.col(c) for c in rows.columns if c not in ("source_file", "_reason")]]
    first = F.row_number().over(Window.partitionBy(*key).orderBy(*order)) > 1
    rows = rows.withColumn("_dup", first)
    if not io.exists(spark, lake, target):
        return rows
    days = [r[0] for r in rows.select("dt").distinct().collect() if r[0] is not None]
    if not days:
        return rows
    present = (io.read(spark, lake, target).where(F.col("dt").isin(days))
               .select(*key).distinct().withColumn("_in_bronze", F.lit(True)))
    return (rows.join(present, on=key, how="left")
            .withColumn("_dup", F.col("_dup") | F.coalesce(F.col("_in_bronze"), F.lit(False))).drop("_in_bronze"))
