"""The one place a SparkSession is built: Delta enabled, UTC, jars from the setup step, s3a wired.

Local mode (the default, ``FLOWLAKE_SPARK_MASTER`` or ``master=`` to change):
Delta's jars go on ``spark.jars``, hadoop-aws and the AWS SDK bundle on the
driver class path (they must be loaded with Hadoop's own classes). A
standalone master (``spark://host:7077``) works the same way when every
worker sees the jars at the same path (one machine, or a shared install).
Under ``spark-submit`` the jars and master come from its command line
(scripts/flowlake-submit.sh builds it). ``FLOWLAKE_SPARK_CONF`` (a JSON
object) adds or overrides Spark settings. S3 timeouts and retries come from
:class:`flowlake.storage.S3Params` (conf/jobs.yaml ``storage:``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import SparkSession

from flowlake.storage import S3Params, spark_s3a_conf, use_s3_params

JARS_DIR_ENV = "FLOWLAKE_JARS_DIR"
DEFAULT_JARS_DIR = Path(__file__).resolve().parent.parent / ".cache" / "jars"
# Spark's JVM log settings for local sessions: errors only on the terminal (no start-up banner)
LOG4J2_CONF = Path(__file__).resolve().parent.parent / "conf" / "log4j2.properties"
REQUIRED_JAR_PREFIXES = ("delta-spark_", "delta-storage-")
S3_JAR_PREFIXES = ("hadoop-aws-", "bundle-")
SPARK_CONF_ENV = "FLOWLAKE_SPARK_CONF"
# Variables the Python tasks need to reach S3 (raw files are read in tasks with pyarrow).
AWS_ENV_PREFIXES = ("AWS_",)


def jars_dir() -> Path:
    """Folder the setup step (``flowlake setup``) copied the JVM jars into."""
    return Path(os.environ.get(JARS_DIR_ENV, DEFAULT_JARS_DIR))


def _is_s3_jar(path: str) -> bool:
    return Path(path).name.startswith(S3_JAR_PREFIXES)


def s3_jars() -> list[str]:
    """hadoop-aws and the AWS SDK bundle from the jars folder (empty if setup predates them)."""
    folder = jars_dir()
    return sorted(str(p) for p in folder.glob("*.jar") if _is_s3_jar(str(p))) if folder.is_dir() else []


def local_jars() -> list[str]:
    """The jars to put on ``spark.jars`` (all but the S3 ones); a clear error if setup never ran."""
    folder = jars_dir()
    jars = sorted(str(p) for p in folder.glob("*.jar") if not _is_s3_jar(str(p))) if folder.is_dir() else []
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
    storage: S3Params | None = None,
    log_file: str | None = None,
    console_level: str = "fatal",
) -> SparkSession:
    """Return the active SparkSession, or build one with Delta and UTC.

    ``storage`` (conf/jobs.yaml ``storage:``) sets the S3 timeouts and retries; the defaults apply
    otherwise. ``FLOWLAKE_SPARK_CONF`` and ``extra_conf`` override single s3a keys.

    ``log_file`` (a new local session only): Spark's warnings and errors go to that file, and to the
    terminal only at ``console_level`` or above (conf/log4j2.properties); without it the terminal
    gets Spark's errors.

    Under ``spark-submit`` (a session or ``spark.master`` already configured)
    the jars come from ``--jars``/``--packages`` and ``master`` is left alone.
    """
    if storage is not None:
        use_s3_params(storage)
    active = SparkSession.getActiveSession()
    if active is not None:
        if storage is not None:
            configure_storage(active, storage=storage)
        return active
    builder = SparkSession.builder.appName(app_name)
    submitted = "SPARK_SUBMIT_OPTS" in os.environ or os.environ.get("PYSPARK_GATEWAY_PORT")
    if not submitted:
        chosen = master or os.environ.get("FLOWLAKE_SPARK_MASTER", "local[*]")
        builder = builder.master(chosen)
        if chosen.startswith("local"):  # a local driver talks to itself only: keep it on loopback
            builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
        builder = builder.config("spark.jars", ",".join(local_jars()))
        if s3_jars():  # same JVM in local mode; same paths on each worker of a one-machine cluster
            builder = builder.config("spark.driver.extraClassPath", os.pathsep.join(s3_jars()))
            builder = builder.config("spark.executor.extraClassPath", os.pathsep.join(s3_jars()))
        builder = builder.config("spark.driver.memory", os.environ.get("FLOWLAKE_DRIVER_MEMORY", "4g"))
        # Python workers run this interpreter (the project's environment), not `python3` from PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.config("spark.ui.enabled", "false")
        builder = builder.config("spark.ui.showConsoleProgress", "false")
        if LOG4J2_CONF.is_file():
            options = f"-Dlog4j2.configurationFile={LOG4J2_CONF}"
            if log_file:
                os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
                options += (f" -Dflowlake.log.file={os.path.abspath(log_file)} -Dflowlake.log.level=warn"
                            f" -Dflowlake.console.level={console_level}")
            builder = builder.config("spark.driver.extraJavaOptions", options)
    conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.shuffle.partitions": str(shuffle_partitions or 8),
        # Delta rebuilds a table's file list (its snapshot) in this many tasks on every read after a
        # commit; its default, 50, is sized for huge logs and cost a run over this lake's small tables
        # ~2x its time (bench/rerun_profile.py). Maintenance keeps the file counts small.
        "spark.databricks.delta.snapshotPartitions": str(shuffle_partitions or 8),
        # VACUUM lists a table's folders in this many tasks (Spark's default is 10,000, nearly all
        # empty): ~15 s of fixed cost per table, 24 tables per maintenance. 8 tasks: ~1-3 s.
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(shuffle_partitions or 8),
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        "spark.databricks.delta.optimizeWrite.enabled": "true",
        # A task writing a dt-partitioned table keeps a file open per partition value it meets, up to
        # this many, instead of sorting all its rows by dt first (Spark's default, 0: always sort). A run's
        # rows fall in one or two days; the sort spilled GiBs and took half of silver's write at 10M.
        "spark.sql.maxConcurrentOutputFileWriters": "4",
        # The driver keeps every finished query's plan and per-task metrics for the UI (1000 queries by
        # default) even with the UI off; a run's plans are large, and a long session (a backfill, the
        # test suite) filled a 4 GiB driver with them. Keep the recent ones only.
        "spark.sql.ui.retainedExecutions": "50",
        "spark.ui.retainedJobs": "200",
        "spark.ui.retainedStages": "200",
        "spark.ui.retainedTasks": "20000",
        # Sorts, hash aggregates and joins take on-heap memory in pages; Spark sizes them from the heap
        # and cores (64 MiB here), so a few small operators at once held GiBs of a 4 GiB driver.
        # Records here are well under a KiB: 2 MiB pages cost nothing in speed.
        "spark.buffer.pageSize": "2m",
    }
    conf.update(spark_s3a_conf())
    conf.update({f"spark.executorEnv.{k}": v for k, v in aws_env().items()})
    conf.update(env_spark_conf())
    conf.update(extra_conf or {})
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    default_level = "WARN" if log_file else "ERROR"  # with a log file, the console filters by its own level
    spark.sparkContext.setLogLevel(os.environ.get("FLOWLAKE_SPARK_LOG_LEVEL", default_level))
    return spark


def env_spark_conf() -> dict[str, str]:
    """Spark settings from ``FLOWLAKE_SPARK_CONF`` (a JSON object of strings)."""
    text = os.environ.get(SPARK_CONF_ENV, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("not an object")
    except ValueError as err:
        raise ValueError(f"{SPARK_CONF_ENV} must be a JSON object like {{\"spark.x\": \"1\"}}: {err}") from err
    return {str(k): str(v) for k, v in value.items()}


def aws_env() -> dict[str, str]:
    """The AWS_* variables of this process (endpoint, region, credentials) for the Python tasks."""
    return {k: v for k, v in os.environ.items() if k.startswith(AWS_ENV_PREFIXES)}


def configure_storage(spark: SparkSession, *, storage: S3Params | None = None) -> None:
    """Point a running session at the S3 endpoint and credentials of this process's environment,
    with the S3 timeouts and retries of ``storage`` (default: those in use, see :func:`use_s3_params`).

    Sets the s3a settings on the Hadoop configuration (file systems created
    from now on use them) and hands the AWS_* variables to the Python tasks,
    which read raw files with pyarrow. A no-op for what is already set.
    """
    if storage is not None:
        use_s3_params(storage)
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in {**spark_s3a_conf(), **_spark_hadoop(env_spark_conf())}.items():
        hadoop.set(key.removeprefix("spark.hadoop."), value)
    spark.sparkContext.environment.update(aws_env())


def _spark_hadoop(conf: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in conf.items() if k.startswith("spark.hadoop.")}


def require_s3(spark: SparkSession) -> None:
    """Raise a clear error when the session cannot open s3a:// paths (hadoop-aws not on its class path)."""
    try:
        spark.sparkContext._jvm.java.lang.Class.forName("org.apache.hadoop.fs.s3a.S3AFileSystem")
        spark.sparkContext._jvm.java.lang.Class.forName("software.amazon.awssdk.services.s3.S3Client")
    except Exception as err:  # noqa: BLE001 - py4j wraps ClassNotFoundException
        raise RuntimeError(
            "this Spark session cannot read s3a:// paths: hadoop-aws and the AWS SDK bundle are not on its "
            f"class path. Run `flowlake setup` (it fetches them into {jars_dir()}) and start a new session; "
            "under spark-submit use scripts/flowlake-submit.sh, which adds them."
        ) from err


@contextmanager
def jvm_console_captured(spark: SparkSession) -> Iterator[list[str]]:
    """Lines the JVM prints with Scala's ``println`` on this thread (Delta's VACUUM prints "Deleted N
    files ..." to stdout, past log4j) go into the yielded list, filled on exit, not to the terminal.

    Scala's console is a per-thread variable read at each print: it is swapped for a buffer and put back.
    """
    jvm = spark.sparkContext._jvm
    field = jvm.java.lang.Class.forName("scala.Console$").getDeclaredField("outVar")
    field.setAccessible(True)
    console = field.get(None)
    before = console.value()
    buffer = jvm.java.io.ByteArrayOutputStream()
    getattr(console, "value_$eq")(jvm.java.io.PrintStream(buffer, True, "UTF-8"))
    lines: list[str] = []
    try:
        yield lines
    finally:
        getattr(console, "value_$eq")(before)
        lines.extend(line for line in buffer.toString("UTF-8").splitlines() if line.strip())
