"""The lake's table paths and the few Delta read/write patterns the jobs share."""

from __future__ import annotations

from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from flowlake.storage import join, spark_path


@dataclass(frozen=True)
class Lake:
    """Paths of every table under a lake root (contracts §3 plus flowlake's own)."""

    root: str

    def table(self, name: str) -> str:
        return spark_path(join(self.root, name))

    @property
    def bronze_flows(self) -> str:
        return self.table("bronze/flows")

    @property
    def bronze_ip_events(self) -> str:
        return self.table("bronze/ip_events")

    @property
    def ingested_files(self) -> str:
        return self.table("_meta/ingested_files")

    @property
    def quarantine_files(self) -> str:
        return self.table("quarantine/files")

    def quarantine_copy_root(self, run_id: str) -> str:
        return join(self.root, "quarantine/raw", run_id)

    @property
    def ip_ownership(self) -> str:
        return self.table("silver/ip_ownership")

    @property
    def ownership_conflicts(self) -> str:
        return self.table("silver/ip_ownership_conflicts")

    @property
    def flows_attributed(self) -> str:
        return self.table("silver/flows_attributed")

    @property
    def app_dependencies(self) -> str:
        return self.table("gold/app_dependencies")

    @property
    def runs(self) -> str:
        return self.table("_meta/runs")


def exists(spark: SparkSession, path: str) -> bool:
    """Whether a Delta table exists at ``path``."""
    return DeltaTable.isDeltaTable(spark, path)


def read(spark: SparkSession, path: str, *, ddl: str | None = None) -> DataFrame:
    """A Delta table, or an empty DataFrame of ``ddl`` if it does not exist yet."""
    if exists(spark, path):
        return spark.read.format("delta").load(path)
    if ddl is None:
        raise FileNotFoundError(f"no Delta table at {path}: run the job that writes it first")
    return spark.createDataFrame([], ddl)


def replace_where(df: DataFrame, path: str, *, predicate: str, partition_by: list[str] | None = None) -> None:
    """Atomically replace the rows matching ``predicate`` with ``df`` (creating the table if needed).

    Every row of ``df`` must match ``predicate``; re-running with the same
    input leaves the table as one run did.
    """
    writer = df.write.format("delta").mode("overwrite").option("replaceWhere", predicate)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


def append(df: DataFrame, path: str, *, partition_by: list[str] | None = None) -> None:
    writer = df.write.format("delta").mode("append")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


def sql_in(column: str, values: list[str]) -> str:
    """``column IN ('a', 'b')`` with values quoted for Spark SQL."""
    quoted = ", ".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)
    return f"{column} IN ({quoted})"
