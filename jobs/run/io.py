"""The few Delta read/write patterns the stages share, on the lake catalog's tables."""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from flowlake.lake import Lake, Table


def exists(spark: SparkSession, lake: Lake, table: Table) -> bool:
    """Whether the table has been written yet."""
    return DeltaTable.isDeltaTable(spark, lake.path(table))


def read(spark: SparkSession, lake: Lake, table: Table) -> DataFrame:
    """The table, or an empty DataFrame of its ``ddl`` if it does not exist yet."""
    if exists(spark, lake, table):
        return spark.read.format("delta").load(lake.path(table))
    if table.ddl is None:
        raise FileNotFoundError(f"no Delta table at {lake.path(table)}: run the stage that writes {table.name} first")
    return spark.createDataFrame([], table.ddl)


def replace_where(df: DataFrame, lake: Lake, table: Table, *, predicate: str) -> None:
    """Atomically replace the rows matching ``predicate`` with ``df`` (creating the table if needed).

    Every row of ``df`` must match ``predicate``; re-running with the same
    input leaves the table as one run did.
    """
    writer = df.write.format("delta").mode("overwrite").option("replaceWhere", predicate)
    if table.partition_by:
        writer = writer.partitionBy(*table.partition_by)
    writer.save(lake.path(table))


def overwrite(df: DataFrame, lake: Lake, table: Table) -> None:
    """Replace the whole table (small whole-lake tables)."""
    df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(lake.path(table))


def append(df: DataFrame, lake: Lake, table: Table) -> None:
    writer = df.write.format("delta").mode("append")
    if table.partition_by:
        writer = writer.partitionBy(*table.partition_by)
    writer.save(lake.path(table))


def sql_in(column: str, values: list[str]) -> str:
    """``column IN ('a', 'b')`` with values quoted for Spark SQL."""
    quoted = ", ".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)
    return f"{column} IN ({quoted})"
