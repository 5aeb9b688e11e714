"""The cron wrapper: a lock (no two runs at once), a log per run, backfill of the last hours."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess

from tests.prod.conftest import REPO

WRAPPER = REPO / "scripts/cron/flowlake-cron.sh"


def _env(tmp_path, demo_raw, lake):
    return {**os.environ, "FLOWLAKE_RAW_ROOT": str(demo_raw), "FLOWLAKE_LAKE_ROOT": str(lake),
            "FLOWLAKE_LOG_DIR": str(tmp_path / "logs"), "FLOWLAKE_CRON_CATCHUP_HOURS": "1",
            "FLOWLAKE_CRON_NOW": "2025-06-02T01:20:00Z"}


def test_cron_run_skips_complete_hours_and_logs_per_run(demo_raw, clean_lake, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(clean_lake, lake)
    done = subprocess.run(["bash", str(WRAPPER)], env=_env(tmp_path, demo_raw, lake), capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    (log,) = (tmp_path / "logs").glob("flowlake-*.log")
    text = log.read_text()
    assert "backfill 2025-06-02T00:00:00Z .. 2025-06-02T01:00:00Z" in text
    assert "skip [2025-06-02T00:00:00Z, 2025-06-02T01:00:00Z): already complete" in text
    assert text.rstrip().endswith("exit 0")


def test_cron_does_not_start_while_another_run_holds_the_lock(demo_raw, tmp_path):
    env = _env(tmp_path, demo_raw, tmp_path / "lake")
    (tmp_path / "logs").mkdir()
    with open(tmp_path / "logs" / "cron.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        done = subprocess.run(["bash", str(WRAPPER)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    (log,) = (tmp_path / "logs").glob("flowlake-*.log")
    assert "another flowlake cron run holds" in log.read_text()
    assert not (tmp_path / "lake").exists()
