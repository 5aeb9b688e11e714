"""Airflow DAG: flowlake's pipeline once per hour of data, one task per stage.

    ingest >> ownership >> attribute >> quality >> gold   (jobs/run/stage_names.py)

Every task runs `flowlake pipeline run --stages <stage>` for the run's data
interval (never the wall clock), with one run id per interval, so a retried
task or a re-run DAG run redoes the same window idempotently. A failed
blocking quality check fails its task (exit 3): gold is not published.
max_active_runs=1 keeps one writer per lake (the pipeline's lock enforces it too).

Catching up: an interval the scheduler missed (Airflow down, the DAG paused) is
not skipped. With catchup on (the default), the scheduler runs every interval
from FLOWLAKE_DAG_START on, oldest first and one at a time, each reading what the
one before published. Set FLOWLAKE_DAG_START to the first hour this lake should
hold: catchup starts there. To catch up days at once, pause the DAG and run
`flowlake pipeline backfill` (one Spark application for the whole range, whole
windows skipped), then unpause: the DAG's runs for those intervals redo them
idempotently (the same tables); mark them successful in Airflow to skip that.

Settings (environment of the Airflow workers):
  FLOWLAKE_RAW_ROOT, FLOWLAKE_LAKE_ROOT  raw and lake roots (folders or s3://bucket/prefix)
  FLOWLAKE_BIN                           the flowlake executable (default: <repo>/.venv/bin/flowlake)
  FLOWLAKE_DAG_START                     first data interval, ISO-8601 (default 2025-06-02T00:00:00Z)
  FLOWLAKE_DAG_RETRIES                   retries per task (default 2)
  FLOWLAKE_DAG_CATCHUP                   run missed intervals, oldest first (default true)
plus the usual AWS_* variables for S3 and FLOWLAKE_SPARK_MASTER for a cluster.
"""

from __future__ import annotations

import importlib.util
import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

REPO = Path(__file__).resolve().parent.parent


def _stage_names() -> tuple[str, ...]:
    """The pipeline's stages from its registry (a dependency-free module: Airflow's environment
    does not have flowlake's packages)."""
    spec = importlib.util.spec_from_file_location("flowlake_stage_names", REPO / "jobs" / "run" / "stage_names.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.STAGE_NAMES


STAGES = _stage_names()
FLOWLAKE_BIN = os.environ.get("FLOWLAKE_BIN", str(REPO / ".venv" / "bin" / "flowlake"))
START = datetime.fromisoformat(os.environ.get("FLOWLAKE_DAG_START", "2025-06-02T00:00:00Z").replace("Z", "+00:00"))

# keyed on the data interval: [data_interval_start, data_interval_end), one run id per interval
WINDOW = ("--start {{ data_interval_start.strftime('%Y-%m-%dT%H:%M:%SZ') }} "
          "--end {{ data_interval_end.strftime('%Y-%m-%dT%H:%M:%SZ') }} "
          "--run-id airflow-{{ data_interval_start.strftime('%Y%m%dT%H%M%SZ') }}")

with DAG(
    dag_id="flowlake_hourly",
    description="flowlake: raw flow logs -> attributed Delta tables, hourly",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=START,
    catchup=os.environ.get("FLOWLAKE_DAG_CATCHUP", "true").strip().lower() in ("1", "true", "yes"),
    max_active_runs=1,
    default_args={"retries": int(os.environ.get("FLOWLAKE_DAG_RETRIES", "2")),
                  "retry_delay": timedelta(minutes=2), "retry_exponential_backoff": True},
    tags=["flowlake"],
) as dag:
    previous = None
    for stage in STAGES:
        task = BashOperator(
            task_id=stage,
            bash_command=(f'"{FLOWLAKE_BIN}" pipeline run --raw "$FLOWLAKE_RAW_ROOT" --lake "$FLOWLAKE_LAKE_ROOT" '
                          f"{WINDOW} --stages {stage}"),
            cwd=str(REPO),  # conf/ of the checkout
        )
        if previous is not None:
            previous >> task
        previous = task
