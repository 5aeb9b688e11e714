"""The Airflow DAG, loaded by a real Airflow (its own venv, scripts/setup-airflow.sh) and run once on the demo data."""

from __future__ import annotations

import json
import os
import subprocess

from flowlake.jobs.run.stage_names import STAGE_NAMES
from tests.prod.conftest import REPO, table_rows

AIRFLOW = REPO / ".venv-airflow" / "bin" / "airflow"


def test_dag_runs_every_stage_for_its_data_interval(spark, demo_raw, clean_lake, tmp_path):
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
    # logical date 01:00 = the data interval [00:00, 01:00) of the hourly cron timetable
    done = subprocess.run([str(AIRFLOW), "dags", "test", "flowlake_hourly", "2025-06-02T01:00:00+00:00"],
                          env=env, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-5000:]
    # what Airflow recorded, not its log text: every stage's task instance succeeded
    states = subprocess.run([str(AIRFLOW), "tasks", "states-for-dag-run", "flowlake_hourly",
                             "2025-06-02T01:00:00+00:00", "-o", "json"],
                            env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert states.returncode == 0, states.stderr[-3000:]
    listing = states.stdout[states.stdout.index("["):]  # the JSON list (Airflow may print notices first)
    by_task = {t["task_id"]: t["state"] for t in json.JSONDecoder().raw_decode(listing)[0]}
    assert by_task == {stage: "success" for stage in STAGE_NAMES}, by_task
    run_id = "airflow-20250602T000000Z"
    assert {p.name for p in (lake / "_quality" / run_id).glob("*.txt")} == {
        "ownership.txt", "attribute.txt", "quality.txt", "gold.txt"}
    for table in ("bronze/flows", "silver/ip_ownership", "silver/flows_attributed", "gold/app_dependencies"):
        assert table_rows(spark, lake / table) == table_rows(spark, clean_lake / table), table
    runs = spark.read.format("delta").load(str(lake / "_meta/runs")).collect()
    assert [(r.run_id, r.start_ms, r.end_ms) for r in runs] == [(run_id, 1748822400000, 1748826000000)]
