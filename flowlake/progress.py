"""A progress bar over the Spark jobs a block of driver code starts.

Spark reports progress per task, not per item; a bar over ``total`` items
(files to ingest, say) advances with the share of tasks finished in the
stages the block started. The bar is drawn on stderr only when stderr is a
terminal (cron, Airflow and CI logs get no carriage-return noise), and is
cleared when the block ends, so the run's own lines stay as they were.
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from pyspark.sql import SparkSession
from tqdm import tqdm

POLL_S = 0.5  # how often the status tracker is read


def tasks_done_share(spark: SparkSession, stage_ids: set[int], *, exclude: frozenset[int] = frozenset()) -> float:
    """Finished tasks / all tasks over ``stage_ids``, to which the stages active now (but not
    ``exclude``) are added first."""
    tracker = spark.sparkContext.statusTracker()
    stage_ids.update(set(tracker.getActiveStageIds()) - exclude)
    done = total = 0
    for sid in stage_ids:
        info = tracker.getStageInfo(sid)
        if info is not None:
            done += info.numCompletedTasks
            total += info.numTasks
    return done / total if total else 0.0


@contextmanager
def spark_progress(spark: SparkSession, *, total: int, desc: str, unit: str,
                   enabled: bool | None = None, file: IO[str] | None = None,
                   poll_s: float = POLL_S) -> Iterator[tqdm]:
    """Draw a bar of ``total`` ``unit``s that follows the Spark tasks run inside the block.

    ``enabled=None`` draws it only when ``file`` (default stderr) is a terminal. The bar
    ends full when the block ends without error."""
    out = file if file is not None else sys.stderr
    if enabled is None:
        enabled = out.isatty()
    bar = tqdm(total=total, desc=desc, unit=unit, file=out, leave=False, disable=not enabled,
               mininterval=poll_s, dynamic_ncols=True)
    if not enabled:
        yield bar
        bar.close()
        return
    tracker = spark.sparkContext.statusTracker()
    before = frozenset(tracker.getActiveStageIds())  # stages already running are not the block's
    seen: set[int] = set()
    stop = threading.Event()

    def follow() -> None:
        while not stop.wait(poll_s):
            share = tasks_done_share(spark, seen, exclude=before)
            bar.n = max(bar.n, min(total, int(share * total)))  # a later stage must not pull it back
            bar.refresh()

    poller = threading.Thread(target=follow, name="flowlake-progress", daemon=True)
    poller.start()
    try:
        yield bar
        bar.n = total
        bar.refresh()
    finally:
        stop.set()
        poller.join()
        bar.close()
