"""flowlake status: runs and freshness, quality, quarantine, completeness, table sizes from the
Delta log, the writer lock; text and --json; no JVM; a lake on a real S3 server on loopback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner
from tests.report.lake import END, HOUR, write
from deltalake import DeltaTable, write_deltalake

from flowlake import lakeread, status


def test_status_json_has_every_part(lake):
    st = status.collect(str(lake), last=2, now_ms=END + 6 * HOUR)
    assert [r["run_id"] for r in st["runs"]] == ["run-2", "run-1"]
    assert st["runs"][0]["window_start"] == "2025-06-16T00:00:00Z" and st["runs"][0]["seconds"] == 90.0
    f = st["freshness"]
    assert f["newest_data_end"] == "2025-06-23T00:00:00Z" and f["lag_s"] == 6 * 3600 and f["runs"] == 3
    assert st["quality"]["latest_run"] == "run-2"
    assert st["quality"]["stages"][0].items() >= {"stage": "silver", "passed": 1, "failed": 1, "warnings": 1}.items()
    assert st["quality"]["runs_with_blocking_failures"] == ["run-2"]
    assert st["quarantine"]["files"] == 1 and st["quarantine"]["by_reason"] == {"not a parquet file": 1}
    assert st["completeness"] is None  # no silver/capture_completeness
    assert st["lock"].items() >= {"held": True, "owner": "run-3", "host": "worker-7", "pid": 4242, "age_s": 3600}.items()
    json.dumps(st)  # JSON-ready


def test_table_sizes_and_files_come_from_the_delta_log(lake):
    st = status.collect(str(lake))
    tables = {t["table"]: t for t in st["tables"]}
    assert set(tables) >= {"gold/app_dependencies", "silver/flows_attributed", "_meta/runs", "quarantine/files"}
    pb = tables["gold/policy_breaches"]
    dt = DeltaTable(str(lake / "gold/policy_breaches"))
    on_disk = sum(p.stat().st_size for p in (lake / "gold/policy_breaches").glob("*.parquet"))
    assert pb["files"] == 2 and pb["rows"] == 2 and pb["version"] == dt.version() == 1
    assert pb["bytes"] == on_disk
    assert tables["silver/flows_attributed"]["rows"] == 6
    assert tables["silver/flows_attributed"]["files"] == len(list((lake / "silver/flows_attributed").rglob("*.parquet")))


def test_overwritten_files_no_longer_count(tmp_path):
    # edge case: files removed by an overwrite stay on disk until vacuum but are not the table's
    t = str(tmp_path / "gold/x")
    write_deltalake(t, pa.table({"a": [1, 2, 3]}))
    write_deltalake(t, pa.table({"a": [4]}), mode="overwrite")
    s = lakeread.table_stats(str(tmp_path), "gold/x")
    assert (s.files, s.rows, s.version) == (1, 1, 1)


def test_text_output(lake):
    res = CliRunner().invoke(status.status, ["--lake", str(lake)])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "writer lock: HELD by run run-3 (pid 4242 on worker-7" in out
    assert "freshness: data up to 2025-06-23 00:00:00 UTC" in out
    assert "run-2 (all): 2025-06-16 00:00:00 UTC → 2025-06-23 00:00:00 UTC" in out
    assert "run-2 silver: FAILED, 1 passed, 1 blocking, 1 warnings (silver.attributed_share" in out
    assert "quarantined files: 1 (not a parquet file: 1)" in out
    assert "gold/policy_breaches" in out and "2 files" in out
    assert "1748" not in out  # no epoch ms


def test_json_flag_and_a_free_lock(lake, tmp_path):
    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    (copy / "_meta/writer.lock").unlink()
    res = CliRunner().invoke(status.status, ["--lake", str(copy), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["lock"] == {"held": False}
    assert "writer lock: free" in CliRunner().invoke(status.status, ["--lake", str(copy)]).output


def test_unreadable_lock_is_reported_not_hidden(lake, tmp_path):
    # edge case: a truncated lock file still means "held", with the reason
    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    (copy / "_meta/writer.lock").write_text('{"owner": "run-')
    lock = status.collect(str(copy))["lock"]
    assert lock["held"] is True and lock["owner"] == "unknown" and "unreadable lock file" in lock["error"]


def test_completeness_per_instance_when_present(lake, tmp_path):
    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    write(copy, "silver/capture_completeness", pd.DataFrame({
        "instance_id": ["i-1", "i-1", "i-2"], "hour_start_ms": [END - HOUR, END, END],
        "completeness": [0.4, 0.9, 1.0]}))
    comp = status.collect(str(copy))["completeness"]
    assert comp == [
        {"instance_id": "i-1", "latest": 0.9, "lowest": 0.4, "rows": 2, "latest_at": "2025-06-23T00:00:00Z"},
        {"instance_id": "i-2", "latest": 1.0, "lowest": 1.0, "rows": 1, "latest_at": "2025-06-23T00:00:00Z"}]
    assert "i-1: latest 90.00%" in status.render_text(status.collect(str(copy)))


def test_empty_and_missing_lakes(tmp_path):
    # edge case: a folder with nothing in it yet is a lake with no runs; a missing one is an error
    (tmp_path / "empty").mkdir()
    st = status.collect(str(tmp_path / "empty"))
    assert st["runs"] == [] and st["tables"] == [] and st["lock"] == {"held": False}
    assert "no run recorded" in status.render_text(st)
    res = CliRunner().invoke(status.status, ["--lake", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "no lake at" in res.output


def test_status_starts_no_jvm(lake):
    code = ("import sys; from flowlake.cli import cli; "
            f"cli(['status', '--lake', {str(lake)!r}, '--json'], standalone_mode=False); "
            "assert 'pyspark' not in sys.modules, 'status imported pyspark'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["lock"]["owner"] == "run-3"


def test_status_of_a_lake_on_s3(s3_server, lake, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    bucket = s3_server.new_bucket()
    root = f"s3://{bucket}/lake"
    opts = lakeread.storage_options(root)
    for rel in ("_meta/runs", "gold/policy_breaches"):
        src = DeltaTable(str(lake / rel)).to_pyarrow_table()
        write_deltalake(lakeread.table_uri(root, rel), src, storage_options=opts)
    s3 = s3_server.client()
    s3.put_object(Bucket=bucket, Key="lake/_meta/writer.lock", Body=(lake / "_meta/writer.lock").read_bytes())
    s3.put_object(Bucket=bucket, Key="lake/_quality/run-2/silver.json",
                  Body=(lake / "_quality/run-2/silver.json").read_bytes())
    st = status.collect(root.replace("s3://", "s3a://"))
    assert {t["table"] for t in st["tables"]} == {"_meta/runs", "gold/policy_breaches"}
    assert st["freshness"]["newest_data_end"] == "2025-06-23T00:00:00Z"
    assert st["lock"]["owner"] == "run-3" and st["quality"]["latest_run"] == "run-2"


@pytest.fixture
def no_aws_env(monkeypatch):
    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k, raising=False)


def test_storage_options_follow_the_aws_environment(monkeypatch, no_aws_env):
    assert lakeread.storage_options("/tmp/lake") is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    opts = lakeread.storage_options("s3a://b/lake")
    assert opts == {"AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ALLOW_HTTP": "true",
                    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false"}
    assert lakeread.table_uri("s3a://b/lake", "gold/x") == "s3://b/lake/gold/x"


def test_a_run_of_some_stages_is_listed_but_freshness_counts_complete_windows(lake, tmp_path):
    """The DAG's next hour has run ingest and ownership (a row each), not gold: it is among the last runs,
    with its stages, but the newest complete window is still the one before (legacy rows: complete)."""
    root = tmp_path / "lake"
    (root / "_meta").mkdir(parents=True)
    shutil.copytree(lake / "_meta/runs", root / "_meta/runs")
    old = DeltaTable(str(root / "_meta/runs")).to_pandas()
    end = int(old.end_ms.max())
    dag = pd.DataFrame([{
        "run_id": "airflow-next", "start_ms": end, "end_ms": end + HOUR, "recomputed_from_ms": end,
        "flow_files": 7 if stage == "ingest" else None, "flow_rows": 70 if stage == "ingest" else None,
        "event_files": 1 if stage == "ingest" else None, "quarantined_files": 0 if stage == "ingest" else None,
        "attributed_rows": None, "started_at_ms": END + 10 * HOUR + k, "finished_at_ms": END + 10 * HOUR + k + 1,
        "stages": [stage]} for k, stage in enumerate(("ingest", "ownership"))])
    table = pa.Table.from_pandas(dag, preserve_index=False).cast(pa.schema(
        [(c, pa.string() if c == "run_id" else pa.list_(pa.string()) if c == "stages" else pa.int64())
         for c in dag.columns]))
    write_deltalake(str(root / "_meta/runs"), table, mode="append", schema_mode="merge")
    st = status.collect(str(root), last=3, now_ms=END + 11 * HOUR)
    assert [(r["run_id"], r["stages"], r["flow_rows"]) for r in st["runs"]] == [
        ("airflow-next", "ownership", None), ("airflow-next", "ingest", 70), ("run-2", "all", 5000)]
    assert st["freshness"]["newest_data_end"] == "2025-06-23T00:00:00Z" and st["freshness"]["runs"] == 3
    text = status.render_text(st)
    assert "airflow-next (ownership): 2025-06-23 00:00:00 UTC" in text and "airflow-next (ingest)" in text
    assert "run-2 (all)" in text and "5,000 flow rows" in text
