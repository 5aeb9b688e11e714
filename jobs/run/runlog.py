"""The CLI's Spark session and logs: one log file per run for Spark's, Great Expectations' and Python's
warnings (and a failure's full trace); the terminal gets the run's own lines (``-v`` adds the logs)."""

from __future__ import annotations

import logging
import os
import tempfile

from flowlake.storage import is_s3


def cli_spark(config, *, log_to: str | None = None, verbose: bool = False):
    """The CLI's session: Spark's warnings and errors go to the run's log file ``log_to``, not the terminal
    (``-v`` shows its warnings there too); without a log file Spark's own log is off
    (FLOWLAKE_SPARK_LOG_LEVEL=WARN brings it back)."""
    from flowlake.spark import get_spark

    spark = get_spark(app_name="flowlake", shuffle_partitions=config.shuffle_partitions, storage=config.storage,
                      log_file=log_to, console_level="warn" if verbose else "fatal")
    if log_to is None:
        spark.sparkContext.setLogLevel(os.environ.get("FLOWLAKE_SPARK_LOG_LEVEL", "FATAL"))
    return spark


def setup_logging(*, log_to: str, verbose: bool) -> None:
    """Python's logs: warnings on the terminal (everything from INFO with ``-v``), INFO and up in ``log_to``."""
    os.makedirs(os.path.dirname(os.path.abspath(log_to)), exist_ok=True)
    terminal = logging.StreamHandler()
    terminal.setLevel(logging.INFO if verbose else logging.WARNING)
    to_file = logging.FileHandler(log_to)
    to_file.setLevel(logging.INFO)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[terminal, to_file])
    terminal.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for noisy in ("py4j", "urllib3", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log_path(*, lake_root: str, run_id: str, log_file: str | None) -> str:
    """The run's log file (Spark's warnings, Python's logs, a failure's full trace): ``--log-file``, else
    ``<lake>/_logs/<run_id>.log`` for a local lake, else a file in the temp folder (the run names it)."""
    if log_file:
        return log_file
    if not is_s3(lake_root):
        return os.path.join(os.path.abspath(lake_root), "_logs", f"{run_id}.log")
    return os.path.join(tempfile.gettempdir(), f"flowlake-{run_id}.log")


def quiet_spark_errors() -> None:
    """PySpark logs every failed DataFrame call's Java trace to stderr; the CLI says it in one line and
    puts the trace in the log file instead."""
    logging.getLogger("DataFrameQueryContextLogger").setLevel(logging.CRITICAL)
