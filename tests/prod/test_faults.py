"""Faults: a run killed mid-write, the S3 server down mid-run, a concurrent writer, late data, backfill resume."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.prod.conftest import BIN, END, END_MS, REPO, START, START_MS, TcpProxy, table_rows, upload_tree

HOUR = 3_600_000


def _same_tables(spark, lake, clean_lake, *, drop=()):
    for table in ("bronze/flows", "silver/ip_ownership", "silver/flows_attributed", "gold/app_dependencies"):
        got = table_rows(spark, f"{lake}/{table}", drop=drop)
        want = table_rows(spark, f"{clean_lake}/{table}", drop=drop)
        assert got == want, f"{table}: {len(got)} rows, a clean run has {len(want)}"


def test_killed_mid_write_then_rerun_equals_one_clean_run(spark, demo_raw, clean_lake, tmp_path):
    lake = tmp_path / "lake"
    cmd = [str(BIN), "pipeline", "run", "--raw", str(demo_raw), "--lake", str(lake), "--start", START, "--end", END]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    marker = lake / "silver/ip_ownership/_delta_log"   # bronze written, silver being written
    deadline = time.monotonic() + 600
    while not marker.is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (lake / "_meta/writer.lock").exists()  # the dead run's lock is left behind ...
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)  # ... and taken over: its pid is gone
    assert done.returncode == 0, done.stderr[-3000:]
    _same_tables(spark, lake, clean_lake, drop=["source_file"])
    assert not (lake / "_meta/writer.lock").exists()


def test_s3_down_mid_run_fails_cleanly_and_a_rerun_completes(spark, s3_env, demo_raw, clean_lake, jobs_config,
                                                             quality_config, monkeypatch):
    from flowlake.jobs.run.pipeline import run

    direct = s3_env.client()
    bucket = s3_env.new_bucket()
    upload_tree(direct, demo_raw / "flows", bucket, "raw/flows")
    upload_tree(direct, demo_raw / "ip_events", bucket, "raw/ip_events")
    proxy = TcpProxy(s3_env.port)
    proxy.up()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in {"attempts.maximum": "1", "retry.limit": "1", "retry.throttle.limit": "1",
                       "connection.establish.timeout": "2s", "connection.timeout": "5s"}.items():
        hadoop.set(f"fs.s3a.bucket.{bucket}.{key}", value)
    raw, lake = f"s3://{bucket}/raw", f"s3://{bucket}/lake"

    def cut_when_bronze_lands():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if direct.list_objects_v2(Bucket=bucket, Prefix="lake/bronze/ip_events/_delta_log/").get("KeyCount"):
                proxy.down()
                return
            time.sleep(0.05)

    cutter = threading.Thread(target=cut_when_bronze_lands, daemon=True)
    cutter.start()
    started = time.monotonic()
    with pytest.raises(Exception) as err:
        run(spark, raw_root=raw, lake_root=lake, start_ms=START_MS, end_ms=END_MS, config=jobs_config,
            quality=quality_config, run_id="outage-1")
    cutter.join(timeout=5)
    assert time.monotonic() - started < 900
    assert not isinstance(err.value, AssertionError)
    proxy.up()
    # the failed run could not remove its lock while S3 was down: it is its own (same pid), so a re-run by the
    # same process would take it; a new process sees a live pid, so we unlock as an operator would
    from flowlake.jobs.run.lock import force_unlock

    force_unlock(lake)
    run(spark, raw_root=raw, lake_root=lake, start_ms=START_MS, end_ms=END_MS, config=jobs_config,
        quality=quality_config, run_id="outage-2")
    for table in ("bronze/flows", "silver/flows_attributed", "gold/app_dependencies"):
        assert table_rows(spark, f"s3a://{bucket}/lake/{table}", drop=["source_file"]) == \
            table_rows(spark, f"{clean_lake}/{table}", drop=["source_file"]), table
    proxy.down()


def test_a_second_concurrent_run_fails_fast(spark, demo_raw, jobs_config, tmp_path):
    from flowlake.jobs.run.lock import LakeLock, LakeLockedError
    from flowlake.jobs.run.pipeline import run

    lake = tmp_path / "lake"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from flowlake.jobs.run.lock import LakeLock\n"
        f"l = LakeLock({str(lake)!r}, owner='other-run'); l.acquire(); print('held', flush=True); time.sleep(600)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(LakeLockedError, match="other-run"):
            run(spark, raw_root=str(demo_raw), lake_root=str(lake), start_ms=START_MS, end_ms=END_MS,
                config=jobs_config)
        assert time.monotonic() - started < 10
        assert not (lake / "bronze").exists()
    finally:
        holder.kill()
        holder.wait()
    with LakeLock(str(lake), owner="next"):  # its process is gone: the lock is stale and taken over
        pass


def test_late_files_and_events_correct_a_published_window_and_backfill_resumes(
        spark, demo_raw, clean_lake, jobs_config, quality_config, tmp_path):
    from flowlake.jobs.run.backfill import BackfillError, backfill, windows
    from flowlake.jobs.run.pipeline import run

    raw, lake = tmp_path / "raw", tmp_path / "lake"
    files = sorted((demo_raw / "flows").rglob("*.parquet"))
    events = sorted((demo_raw / "ip_events").rglob("*"))
    early = files[::2]
    for f in early + [e for e in events[: len(events) // 2] if e.is_file()]:
        dest = raw / f.relative_to(demo_raw)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
    lenient = quality_config.model_copy(update={"min_attributed_share": 0.0})

    backfill(spark, raw_root=str(raw), lake_root=str(lake), start_ms=START_MS, end_ms=END_MS, step_ms=HOUR,
             config=jobs_config, quality=lenient)                     # hour 0 published with half the data
    shutil.copytree(demo_raw / "flows", raw / "flows", dirs_exist_ok=True)          # the rest arrives late
    shutil.copytree(demo_raw / "ip_events", raw / "ip_events", dirs_exist_ok=True)

    calls = []

    def fails_once(spark_, **kw):
        calls.append(kw["start_ms"])
        if len(calls) == 1:
            raise OSError("injected: the object store went away")
        return run(spark_, **kw)

    with pytest.raises(BackfillError, match="resumes at this window"):
        backfill(spark, raw_root=str(raw), lake_root=str(lake), start_ms=START_MS, end_ms=END_MS + HOUR,
                 step_ms=HOUR, config=jobs_config, quality=lenient, run=fails_once)
    report = backfill(spark, raw_root=str(raw), lake_root=str(lake), start_ms=START_MS, end_ms=END_MS + HOUR,
                      step_ms=HOUR, config=jobs_config, quality=lenient, run=fails_once)
    assert report.skipped == [(START_MS, END_MS)] and report.ran == [(END_MS, END_MS + HOUR)]
    assert calls == [END_MS, END_MS]
    # the next window's run recomputed hour 0 with the late files and events: as if all had been on time
    for table in ("bronze/flows", "silver/flows_attributed", "gold/app_dependencies"):
        got = table_rows(spark, f"{lake}/{table}", drop=["source_file"])
        assert got == table_rows(spark, f"{clean_lake}/{table}", drop=["source_file"]), table
    assert windows(start_ms=0, end_ms=5 * HOUR, step_ms=2 * HOUR) == [(0, 2 * HOUR), (2 * HOUR, 4 * HOUR),
                                                                      (4 * HOUR, 5 * HOUR)]
