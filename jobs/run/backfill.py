"""``flowlake pipeline backfill``: the windows of a range, in order, each once.

A window is complete when the runs log (``_meta/runs``, :mod:`flowlake.jobs.run.runs`)
has a run covering it that finished gold. Backfill skips complete windows, runs
the others oldest first and stops at the first failure, so running it again
resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from flowlake.jobs.run import pipeline
from flowlake.jobs.run import runs as runs_log
from flowlake.jobs.config import JobsConfig
from flowlake.lake import Lake
from flowlake.timeutil import iso


class BackfillError(RuntimeError):
    """A window failed; the earlier ones are complete, a re-run resumes at this one."""


def windows(*, start_ms: int, end_ms: int, step_ms: int) -> list[tuple[int, int]]:
    """[start, end) cut into windows of ``step_ms`` (the last one may be shorter)."""
    if end_ms <= start_ms:
        raise ValueError(f"--end must be after --start (got start={start_ms}, end={end_ms} ms)")
    if step_ms <= 0:
        raise ValueError(f"the window step must be positive (got {step_ms} ms)")
    return [(s, min(s + step_ms, end_ms)) for s in range(start_ms, end_ms, step_ms)]


def complete(runs: list[tuple[int, int]], window: tuple[int, int]) -> bool:
    """Whether a finished run [start, end) covers ``window``."""
    return any(s <= window[0] and e >= window[1] for s, e in runs)


def finished_runs(spark: SparkSession, lake_root: str) -> list[tuple[int, int]]:
    """(start_ms, end_ms) of every run that finished gold (its window is complete)."""
    runs = runs_log.read(spark, Lake(lake_root)).where(runs_log.finished("gold"))
    return [(r[0], r[1]) for r in runs.select("start_ms", "end_ms").distinct().orderBy(F.col("start_ms")).collect()]


def progress(*, done: int, total: int, seconds: list[float]) -> str:
    """Where a backfill is: "window 3 of 24" and, once a window has run, the time left at the mean pace so far."""
    text = f"window {done + 1} of {total}"
    if seconds:
        left = sum(seconds) / len(seconds) * (total - done)
        text += f", about {left / 60:.0f} min left" if left >= 90 else f", about {left:.0f} s left"
    return text


@dataclass
class BackfillReport:
    ran: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[tuple[int, int]] = field(default_factory=list)


def backfill(spark: SparkSession, *, raw_root: str, lake_root: str, start_ms: int, end_ms: int, step_ms: int,
             config: JobsConfig, quality=None, echo: Callable[[str], None] = print,
             run: Callable[..., pipeline.RunReport] = pipeline.run) -> BackfillReport:
    """Run the incomplete windows of [start, end) oldest first; raise BackfillError at the first failure."""
    report = BackfillReport()
    done = finished_runs(spark, lake_root)
    cut = windows(start_ms=start_ms, end_ms=end_ms, step_ms=step_ms)
    todo = sum(not complete(done, w) for w in cut)
    seconds: list[float] = []
    for w in cut:
        label = f"[{iso(w[0])}, {iso(w[1])})"
        if complete(done, w):
            report.skipped.append(w)
            echo(f"skip {label}: already complete")
            continue
        echo(f"run  {label} ({progress(done=len(report.ran), total=todo, seconds=seconds)})")
        began = time.monotonic()
        try:
            result = run(spark, raw_root=raw_root, lake_root=lake_root, start_ms=w[0], end_ms=w[1],
                         config=config, quality=quality, echo=echo)
        except Exception as err:
            from flowlake.jobs.run.lock import LakeLockedError
            from flowlake.jobs.quality.checks import QualityGateError

            if isinstance(err, (LakeLockedError, QualityGateError)):
                echo(f"stopped at {label}; {len(report.ran)} window(s) ran, {len(report.skipped)} skipped")
                raise
            raise BackfillError(
                f"window {label} failed ({type(err).__name__}: {str(err)[:500]}); {len(report.ran)} window(s) ran "
                f"before it. Fix the cause and run the same backfill again: it resumes at this window.") from err
        echo(result.summary())
        report.ran.append(w)
        seconds.append(time.monotonic() - began)
    echo(f"backfill done: {len(report.ran)} window(s) ran, {len(report.skipped)} already complete")
    return report
