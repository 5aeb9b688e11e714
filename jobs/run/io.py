"""The few Delta read/write patterns the stages share, on the lake catalog's tables."""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, DataFrameWriter, SparkSession
from pyspark.sql import functions as F

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


def having(df: DataFrame, column: str, values: list) -> DataFrame:
    """The rows of ``df`` whose ``column`` is one of ``values`` (strings), as a broadcast semi-join.

    Not ``isin()``: over thousands of values, Delta's data skipping and Spark's cached-table scan
    turn it into one min/max test per value, whose generated code passes the JVM's 64 KB method
    limit (a logged ERROR, then a slow interpreted fallback)."""
    wanted = df.sparkSession.createDataFrame([(v,) for v in values], f"`{column}` string")
    return df.join(F.broadcast(wanted), on=column, how="left_semi")


def replace_where(df: DataFrame, lake: Lake, table: Table, *, predicate: str,
                  optimize_write: bool | None = None) -> None:
    """Atomically replace the rows matching ``predicate`` with ``df`` (creating the table, with its
    ``properties``, if needed); ``optimize_write`` as in :func:`append`.

    Every row of ``df`` must match ``predicate``; re-running with the same
    input leaves the table as one run did.
    """
    writer = _writer(df, table, mode="overwrite", optimize_write=optimize_write)
    writer.option("replaceWhere", predicate).save(lake.path(table))


def overwrite(df: DataFrame, lake: Lake, table: Table) -> None:
    """Replace the whole table (small whole-lake tables)."""
    _writer(df, table, mode="overwrite").option("overwriteSchema", "true").save(lake.path(table))


def append(df: DataFrame, lake: Lake, table: Table, *, optimize_write: bool | None = None,
           merge_schema: bool = False) -> None:
    """Append ``df``; ``optimize_write`` overrides the session's Delta optimized writes for this write
    (False: ``df``'s own partitions lay the files out, with no shuffle to bin them: for rows that come
    out of a shuffle already, in a few partitions); ``merge_schema`` adds ``df``'s new columns to the table."""
    writer = _writer(df, table, mode="append", optimize_write=optimize_write)
    (writer.option("mergeSchema", "true") if merge_schema else writer).save(lake.path(table))


def _writer(df: DataFrame, table: Table, *, mode: str, optimize_write: bool | None = None) -> DataFrameWriter:
    """The Delta writer of ``table``: its partitioning, and its ``properties`` (Delta keeps them when the
    write creates the table)."""
    writer = df.write.format("delta").mode(mode).options(**table.properties)
    if optimize_write is not None:
        writer = writer.option("optimizeWrite", str(optimize_write).lower())
    return writer.partitionBy(*table.partition_by) if table.partition_by else writer


def sql_in(column: str, values: list[str]) -> str:
    """``column IN ('a', 'b')`` with values quoted for Spark SQL."""
    quoted = ", ".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)
    return f"{column} IN ({quoted})"
