"""Command line of the jobs: ``flowlake pipeline run``, ``flowlake evaluate``.

Also runnable under spark-submit: ``spark-submit jobs/cli.py pipeline run ...``.
"""

from __future__ import annotations

import json
import logging
import sys

import click

from flowlake.storage import join


def _spark(config):
    from flowlake.spark import get_spark

    return get_spark(app_name="flowlake", shuffle_partitions=config.shuffle_partitions)


@click.group()
def pipeline() -> None:
    """The main job: raw files and IP events in, attributed Delta tables out."""


@pipeline.command("run")
@click.option("--raw", "raw_root", required=True, help="Raw root: a folder or s3://bucket/prefix (contracts §1, §2).")
@click.option("--lake", "lake_root", required=True, help="Lake root: a folder or s3://bucket/prefix.")
@click.option("--start", required=True, help="Window start, ISO-8601 UTC (inclusive).")
@click.option("--end", required=True, help="Window end, ISO-8601 UTC (exclusive).")
@click.option("--config", "config_path", default=None, help="jobs YAML (default conf/jobs.yaml).")
def pipeline_run(raw_root: str, lake_root: str, start: str, end: str, config_path: str | None) -> None:
    """Process every flow whose interval_start_ms lies in [start, end); re-runs are idempotent."""
    from flowlake.jobs.config import load_jobs_config
    from flowlake.jobs.pipeline import parse_utc, run

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = load_jobs_config(config_path)
    try:
        start_ms, end_ms = parse_utc(start), parse_utc(end)
    except ValueError as err:
        raise click.BadParameter(f"{err}: give times like 2026-01-01T00:00:00Z") from err
    report = run(_spark(config), raw_root=raw_root, lake_root=lake_root, start_ms=start_ms, end_ms=end_ms,
                 config=config)
    click.echo(report.summary())


@click.command()
@click.option("--lake", "lake_root", required=True, help="Lake root the pipeline wrote.")
@click.option("--truth", "truth_root", required=True, help="The simulator's truth folder (<sim out>/truth).")
@click.option("--out", "out_path", default=None, help="Also write the scores as JSON here.")
@click.option("--max-misattributed-pct", type=float, default=None,
              help="Exit 1 when flowlake misattributes more than this share of records.")
def evaluate(lake_root: str, truth_root: str, out_path: str | None, max_misattributed_pct: float | None) -> None:
    """Score the lake's attribution (and a naive arrival-order baseline) against simulator truth."""
    from flowlake.jobs import evaluate as ev
    from flowlake.jobs import lake as lk
    from flowlake.jobs.config import load_jobs_config
    from flowlake.storage import spark_path

    spark = _spark(load_jobs_config())
    lake = lk.Lake(lake_root)
    truth = spark.read.schema(ev.TRUTH_DDL).parquet(spark_path(join(truth_root, "flows")))
    result = ev.transform(lk.read(spark, lake.flows_attributed), truth, lk.read(spark, lake.bronze_ip_events),
                          lk.read(spark, lake.bronze_flows))
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
