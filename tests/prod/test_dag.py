"""The Airflow DAG, loaded by a real Airflow (its own venv, scripts/setup-airflow.sh): it catches up, and runs an interval."""

from __future__ import annotations

import json
import os
import subprocess

from flowlake.jobs.run.stage_names import STAGE_NAMES
from tests.prod.conftest import REPO, table_rows

AIRFLOW = REPO / ".venv-airflow" / "bin" / "airflow"


def test_dag_catches_up_from_its_first_interval_and_runs_every_stage_for_it(spark, demo_raw, clean_lake, tmp_path):
    assert AIRFLOW.exists(), "Airflow is not installed: run `bash scripts/setup-airflow.sh`"
    lake = tmp_path / "lake"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "SPARK_"))}
    env.update({
        "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "FLOWLAKE_RAW_ROOT": str(demo_raw),
        "FLOWLAKE_LAKE_ROOT": str(lake), "FLOWLAKE_DAG_RETRIES": "0", "FLOWLAKE_JOBS__SHUFFLE_PARTITIONS": "2",
        "FLOWLAKE_SPARK_MASTER": "local[2]",
    })
    subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    subprocess.run([str(AIRFLOW), "dags", "reserialize"], env=env, check=True, capture_output=True, timeout=600)
    # the scheduler's next run is the oldest interval not run yet (FLOWLAKE_DAG_START, 2025-06-02 by default),
    # not the latest one: missed intervals are caught up, not skipped (with catchup off it would be the last hour)
    details = subprocess.run([str(AIRFLOW), "dags", "details", "flowlake_hourly", "-o", "json"],
                             env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert details.returncode == 0, details.stderr[-3000:]
    assert [d["next_dagrun_data_interval_start"] for d in _json_list(details.stdout)] == ["2025-06-02 00:00:00+00:00"]
    # the first of those intervals as the scheduler runs it (logical date 01:00 = the data interval
    # [00:00, 01:00) of the hourly cron timetable); later intervals read what it published, as the hour-by-hour
    # runs of tests/jobs/test_pipeline_e2e.py do in process (a quiet hour included): each interval here costs
    # six flowlake processes, about 5 minutes of CI
    logical = "2025-06-02T01:00:00+00:00"
    done = subprocess.run([str(AIRFLOW), "dags", "test", "flowlake_hourly", logical],
                          env=env, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    # what Airflow recorded, not its log text: every stage's task instance succeeded
    states = subprocess.run([str(AIRFLOW), "tasks", "states-for-dag-run", "flowlake_hourly", logical, "-o", "json"],
                            env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert states.returncode == 0, states.stderr[-3000:]
    by_task = {t["task_id"]: t["state"] for t in _json_list(states.stdout)}
    assert by_task == {stage: "success" for stage in STAGE_NAMES}, by_task
    run_id = "airflow-20250602T000000Z"
    assert {p.name for p in (lake / "_quality" / run_id).glob("*.txt")} == {
        "ownership.txt", "attribute.txt", "quality.txt", "gold.txt"}
    for table in ("bronze/flows", "silver/ip_ownership", "silver/ip_ownership_doubts", "silver/ip_event_holdings",
                  "silver/flows_attributed", "gold/app_dependencies", "gold/traffic_daily"):
        assert table_rows(spark, lake / table) == table_rows(spark, clean_lake / table), table
    # a row a stage task in the runs log (maintain alone, with nothing due, writes none); gold's completes the window
    runs = spark.read.format("delta").load(str(lake / "_meta/runs")).orderBy("finished_at_ms").collect()
    assert [(r.run_id, r.start_ms, r.end_ms, tuple(r.stages)) for r in runs] == [
        (run_id, 1748822400000, 1748826000000, (stage,)) for stage in STAGE_NAMES if stage != "maintain"]


def _json_list(stdout: str) -> list[dict]:
    """The JSON list an Airflow CLI command printed (it may print notices before it, some with brackets)."""
    decoder = json.JSONDecoder()
    for at in (i for i, c in enumerate(stdout) if c == "["):
        try:
            found = decoder.raw_decode(stdout, at)[0]
        except json.JSONDecodeError:
            continue
        if isinstance(found, list) and all(isinstance(item, dict) for item in found):
            return found
    raise AssertionError(f"no JSON list in Airflow's output: {stdout[-3000:]}")
