"""The progress bar that follows a block's Spark tasks (ingest's files)."""
from __future__ import annotations

import io
import time

from flowlake.progress import spark_progress

ITEMS = 40  # what the bar counts (files, say)
TASKS = 8  # Spark tasks that do the work
TASK_S = 0.4  # each task's time: the block lasts several polls


def _slow_job(spark) -> int:
    def slow(rows):
        time.sleep(TASK_S)
        return [sum(1 for _ in rows)]

    return sum(spark.sparkContext.parallelize(range(ITEMS), TASKS).mapPartitions(slow).collect())


def test_bar_follows_tasks_and_ends_full(spark):
    out = io.StringIO()
    seen: list[int] = []
    with spark_progress(spark, total=ITEMS, desc="reading", unit="file", enabled=True, file=out,
                        poll_s=0.1) as bar:
        original = bar.refresh

        def refresh(*args, **kwargs):
            seen.append(bar.n)
            return original(*args, **kwargs)

        bar.refresh = refresh
        assert _slow_job(spark) == ITEMS
    assert seen[-1] == ITEMS, "the bar ends full"
    partial = [n for n in seen if 0 < n < ITEMS]
    assert partial, f"the bar moved only at the end: {seen}"
    assert seen == sorted(seen), f"the bar went back: {seen}"
    assert "reading" in out.getvalue() and "file" in out.getvalue()


def test_no_terminal_no_bar(spark):
    out = io.StringIO()  # not a tty: cron, Airflow and CI logs get nothing
    with spark_progress(spark, total=ITEMS, desc="reading", unit="file", file=out):
        assert _slow_job(spark) == ITEMS
    assert out.getvalue() == ""
