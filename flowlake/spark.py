"""The one place a SparkSession is built: Delta enabled, UTC, jars from the setup step."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

JARS_DIR_ENV = "FLOWLAKE_JARS_DIR"
DEFAULT_JARS_DIR = Path(__file__).resolve().parent.parent / ".cache" / "jars"
REQUIRED_JAR_PREFIXES = ("delta-spark_", "delta-storage-")


def jars_dir() -> Path:
    """Folder the setup step (``flowlake setup``) copied the JVM jars into."""
    return Path(os.environ.get(JARS_DIR_ENV, DEFAULT_JARS_DIR))


def local_jars() -> list[str]:
    """The jars to put on Spark's classpath; a clear error if setup never ran."""
    folder = jars_dir()
    jars = sorted(str(p) for p in folder.glob("*.jar")) if folder.is_dir() else []
    missing = [p for p in REQUIRED_JAR_PREFIXES if not any(Path(j).name.startswith(p) for j in jars)]
    if missing:
        raise RuntimeError(
            f"Delta Lake jars ({', '.join(missing)}*) are not in {folder}. "
            "Run `flowlake setup` (or scripts/setup.sh) once to fetch them from Maven Central, "
            f"or point {JARS_DIR_ENV} at a folder that has them."
        )
    return jars


def get_spark(
    *,
    app_name: str = "flowlake",
    master: str | None = None,
    shuffle_partitions: int | None = None,
    extra_conf: dict[str, str] | None = None,
) -> SparkSession:
    """Return the active SparkSession, or build one with Delta and UTC.

    Under ``spark-submit`` (a session or ``spark.master`` already configured)
    the jars come from ``--jars``/``--packages`` and ``master`` is left alone.
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(app_name)
    submitted = "SPARK_SUBMIT_OPTS" in os.environ or os.environ.get("PYSPARK_GATEWAY_PORT")
    if not submitted:
        builder = builder.master(master or os.environ.get("FLOWLAKE_SPARK_MASTER", "local[*]"))
        builder = builder.config("spark.jars", ",".join(local_jars()))
        builder = builder.config("spark.driver.memory", os.environ.get("FLOWLAKE_DRIVER_MEMORY", "4g"))
        # Python workers run this interpreter (the project's environment), not `python3` from PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.config("spark.ui.enabled", "false")
        builder = builder.config("spark.ui.showConsoleProgress", "false")
    conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.shuffle.partitions": str(shuffle_partitions or 8),
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        "spark.databricks.delta.optimizeWrite.enabled": "true",
    }
    conf.update(extra_conf or {})
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("FLOWLAKE_SPARK_LOG_LEVEL", "ERROR"))
    return spark
