"""Command line of the jobs: ``flowlake pipeline run|backfill|unlock``, ``flowlake evaluate``.

Also runnable under spark-submit: ``spark-submit jobs/cli.py pipeline run ...``.
"""

from __future__ import annotations

import json
import os
import sys

import click

from flowlake.jobs.run.runlog import cli_spark, log_path, quiet_spark_errors, setup_logging
from flowlake.jobs.run.stage_names import STAGE_NAMES
from flowlake.storage import exit_on_storage_failure, join


@click.group()
def pipeline() -> None:
    """The main job: raw files and IP events in, attributed Delta tables out."""


EXIT_QUALITY = 3
EXIT_LOCKED = 4


def _times(start: str, end: str) -> tuple[int, int]:
    from flowlake.timeutil import parse_utc

    try:
        return parse_utc(start), parse_utc(end)
    except ValueError as err:
        raise click.BadParameter(f"{err}: give times like 2026-01-01T00:00:00Z") from err


def _quality(quality_config: str | None, no_quality: bool):
    from flowlake.jobs.config import load_quality_config

    if no_quality:
        return load_quality_config(quality_config, enabled=False)
    return load_quality_config(quality_config)


def _guarded(fn, *, roots: tuple[str, ...] = (), log_to: str | None = None):
    """Run ``fn``; a failed quality gate, a held lock or a storage failure exits non-zero with the
    reason in one line (the storage failure's trace goes to ``log_to``)."""
    from flowlake.jobs.run.lock import LakeLockedError
    from flowlake.jobs.quality.checks import QualityGateError

    if log_to is not None:
        quiet_spark_errors()
    try:
        return fn()
    except QualityGateError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_QUALITY)
    except LakeLockedError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_LOCKED)
    except Exception as err:  # noqa: BLE001 - storage failures become one line, the rest propagate
        if log_to is not None:
            exit_on_storage_failure(err, roots=roots, log_to=log_to)
        raise


_common = [
    click.option("--raw", "raw_root", required=True, help="Raw root: a folder or s3://bucket/prefix (contracts §1, §2)."),
    click.option("--lake", "lake_root", required=True, help="Lake root: a folder or s3://bucket/prefix."),
    click.option("--start", required=True, help="Window start, ISO-8601 UTC (inclusive)."),
    click.option("--end", required=True, help="Window end, ISO-8601 UTC (exclusive)."),
    click.option("--config", "config_path", default=None, help="jobs YAML (default conf/jobs.yaml)."),
    click.option("--quality-config", default=None, help="quality YAML (default conf/quality.yaml)."),
    click.option("--no-quality", is_flag=True, help="Skip the data-quality gates."),
    click.option("--log-file", default=None,
                 help="The run's log: Spark's and Great Expectations' warnings, and a failure's full trace "
                      "(default <lake>/_logs/<run_id>.log for a local lake, a temp file for an S3 lake; the "
                      "run's last line names it)."),
    click.option("-v", "--verbose", is_flag=True, help="Also print Spark's warnings and INFO logs on the terminal."),
]


def _with_common(fn):
    for option in reversed(_common):
        fn = option(fn)
    return fn


@pipeline.command("run")
@_with_common
@click.option("--stages", default=None,
              help=f"Comma-separated subset of {','.join(STAGE_NAMES)} (default: all but the separate quality "
                   "re-check; maintain acts only when due); stages run apart must share --run-id.")
@click.option("--run-id", default=None, help="Run id (default: a new one); the Airflow DAG passes one per data interval.")
def pipeline_run(raw_root: str, lake_root: str, start: str, end: str, config_path: str | None,
                 quality_config: str | None, no_quality: bool, log_file: str | None, verbose: bool,
                 stages: str | None, run_id: str | None) -> None:
    """Process every flow whose interval_start_ms lies in [start, end); re-runs are idempotent.

    Exit 3: a blocking quality check failed (nothing of that stage published, report under
    <lake>/_quality/<run_id>/); exit 4: another run holds the lake's writer lock; exit 5: the object
    store failed (unreachable, credentials, bucket, access, throttling): one line says what, where and
    what to try, the full trace goes to --log-file."""
    from flowlake.jobs.config import load_jobs_config
    from flowlake.jobs.run.pipeline import new_run_id, parse_stages, run

    config = load_jobs_config(config_path)
    start_ms, end_ms = _times(start, end)
    try:
        chosen = parse_stages(stages)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--stages") from err
    quality = _quality(quality_config, no_quality)
    run_id = run_id or new_run_id()
    log_to = log_path(lake_root=lake_root, run_id=run_id, log_file=log_file)
    setup_logging(log_to=log_to, verbose=verbose)
    report = _guarded(lambda: run(cli_spark(config, log_to=log_to, verbose=verbose), raw_root=raw_root,
                                  lake_root=lake_root, start_ms=start_ms, end_ms=end_ms, config=config, stages=chosen,
                                  run_id=run_id, quality=quality, echo=click.echo),
                      roots=(lake_root, raw_root), log_to=log_to)
    click.echo(report.summary())
    click.echo(f"log: {log_to}")


def _chunk_ms(text: str) -> int:
    """``6h`` / ``1d`` -> milliseconds."""
    from flowlake.timeutil import DAY_MS, HOUR_MS

    unit = {"h": HOUR_MS, "d": DAY_MS}.get(text[-1:].lower())
    if unit is None or not text[:-1].isdigit() or int(text[:-1]) < 1:
        raise click.BadParameter(f"{text!r}: give whole hours or days, like 6h or 1d", param_hint="--chunk")
    return int(text[:-1]) * unit


@pipeline.command("backfill")
@_with_common
@click.option("--chunk", default="1d", show_default=True,
              help="Window length, whole hours or days (6h, 1d); windows are aligned to it from --start. "
                   "The tables do not depend on it (contracts §4): it trades memory for fewer runs.")
def pipeline_backfill(raw_root: str, lake_root: str, start: str, end: str, config_path: str | None,
                      quality_config: str | None, no_quality: bool, log_file: str | None, verbose: bool,
                      chunk: str) -> None:
    """Run the windows of [start, end) in order in one Spark session, skipping those already complete;
    re-run to resume."""
    from flowlake.jobs.run.backfill import BackfillError, backfill
    from flowlake.jobs.config import load_jobs_config

    config = load_jobs_config(config_path)
    start_ms, end_ms = _times(start, end)
    quality = _quality(quality_config, no_quality)
    log_to = log_path(lake_root=lake_root, run_id=f"backfill-{os.getpid()}", log_file=log_file)
    setup_logging(log_to=log_to, verbose=verbose)
    try:
        _guarded(lambda: backfill(cli_spark(config, log_to=log_to, verbose=verbose), raw_root=raw_root,
                                  lake_root=lake_root, start_ms=start_ms, end_ms=end_ms, step_ms=_chunk_ms(chunk),
                                  config=config, quality=quality, echo=click.echo),
                 roots=(lake_root, raw_root), log_to=log_to)
        click.echo(f"log: {log_to}")
    except BackfillError as err:
        exit_on_storage_failure(err, roots=(lake_root, raw_root), log_to=log_to)
        click.echo(f"error: {err}", err=True)
        sys.exit(1)


@pipeline.command("unlock")
@click.option("--lake", "lake_root", required=True, help="Lake root whose writer lock to remove.")
def pipeline_unlock(lake_root: str) -> None:
    """Remove the lake's writer lock left by a dead run (make sure no run is writing first)."""
    from flowlake.jobs.run.lock import force_unlock

    info = force_unlock(lake_root)
    click.echo(f"removed the lock of {info.describe()}" if info else f"{lake_root} was not locked")


@pipeline.command("maintain")
@click.option("--lake", "lake_root", required=True, help="Lake root to maintain.")
@click.option("--config", "config_path", default=None, help="jobs YAML (default conf/jobs.yaml).")
def pipeline_maintain(lake_root: str, config_path: str | None) -> None:
    """Compact, cluster, checkpoint and VACUUM every table now (the `maintain` stage does it when due)."""
    from flowlake.jobs.config import load_jobs_config
    from flowlake.jobs.run.lock import LakeLock
    from flowlake.jobs.run.maintain import maintain
    from flowlake.lake import Lake

    config = load_jobs_config(config_path)
    log_to = log_path(lake_root=lake_root, run_id=f"maintain-{os.getpid()}", log_file=None)

    def locked_maintain() -> list[str]:
        with LakeLock(lake_root, owner="maintain"):
            return [str(m) for m in maintain(cli_spark(config, log_to=log_to), Lake(lake_root),
                                             params=config.maintenance)]

    # a storage failure (taking the lock included) is one line, exit 5, the trace in the log file
    for line in _guarded(locked_maintain, roots=(lake_root,), log_to=log_to):
        click.echo(line)


@click.command()
@click.option("--lake", "lake_root", required=True, help="Lake root the pipeline wrote.")
@click.option("--truth", "truth_root", required=True, help="The simulator's truth folder (<sim out>/truth).")
@click.option("--out", "out_path", default=None, help="Also write the scores as JSON here.")
@click.option("--max-misattributed-pct", type=float, default=None,
              help="Exit 1 when flowlake misattributes more than this share of records.")
def evaluate(lake_root: str, truth_root: str, out_path: str | None, max_misattributed_pct: float | None) -> None:
    """Score the lake's attribution (and a naive arrival-order baseline) against simulator truth."""
    from flowlake.jobs.quality import evaluate as ev
    from flowlake.jobs.run import io
    from flowlake.lake import BRONZE_FLOWS, BRONZE_IP_EVENTS, FLOWS_ATTRIBUTED, Lake
    from flowlake.jobs.config import load_jobs_config
    from flowlake.storage import spark_path

    spark = cli_spark(load_jobs_config(), log_to=log_path(lake_root=lake_root, run_id=f"evaluate-{os.getpid()}",
                                                          log_file=None))
    lake = Lake(lake_root)
    truth = spark.read.schema(ev.TRUTH_DDL).parquet(spark_path(join(truth_root, "flows")))
    result = ev.transform(io.read(spark, lake, FLOWS_ATTRIBUTED), truth, io.read(spark, lake, BRONZE_IP_EVENTS),
                          io.read(spark, lake, BRONZE_FLOWS))
    click.echo(result.table())
    if out_path:
        with open(out_path, "w") as f:
            json.dump(result.as_dict(), f, indent=2)
    if max_misattributed_pct is not None and result.flowlake.misattributed_pct > max_misattributed_pct:
        click.echo(f"FAIL: misattributed {result.flowlake.misattributed_pct:.3f}% > {max_misattributed_pct}%", err=True)
        sys.exit(1)


if __name__ == "__main__":  # spark-submit jobs/cli.py pipeline run ...
    cli = click.Group(commands={"pipeline": pipeline, "evaluate": evaluate})
    cli()
