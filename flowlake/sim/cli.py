"""``flowlake simulate``: write a simulated fleet's raw flows, IP events and ground truth."""

from __future__ import annotations

import click

from flowlake.sim.params import PROFILES


@click.command()
@click.option("--out", required=True, help="Output root: a local folder or s3://bucket/prefix.")
@click.option("--start", default=None, help="Window start, ISO-8601 UTC, aligned to the interval (e.g. 2025-06-02T00:00:00Z).")
@click.option("--hours", type=float, default=None, help="Window length in hours.")
@click.option("--seed", type=int, default=None, help="Random seed (same seed + params -> identical files).")
@click.option("--records", type=int, default=None, help="Target number of raw records in the window.")
@click.option("--profile", type=click.Choice(list(PROFILES)), default=None,
              help="Named preset over conf/sim.yaml (hostile: the tracker misbehaving; history: weeks of a "
                   "modest fleet with planted trends; see docs/simulator.md); "
                   "the environment and the other options override it.")
@click.option("--s3-endpoint", default=None, help="S3 endpoint URL (default: $AWS_ENDPOINT_URL, else AWS).")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="Simulator YAML (default: conf/sim.yaml).")
@click.option("--overwrite", is_flag=True, help="Replace flows/v1, ip_events/v1 and truth/ under --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def simulate(out, start, hours, seed, records, profile, s3_endpoint, config_path, overwrite, quiet) -> None:
    """Simulate a fleet and write raw flow files, IP-assignment events and ground truth."""
    from pydantic import ValidationError

    from flowlake.config import load_config
    from flowlake.sim.core import simulate as run
    from flowlake.sim.params import SimParams

    overrides = {k: v for k, v in {"start": start, "hours": hours, "seed": seed, "records": records,
                                   "profile": profile, "s3_endpoint": s3_endpoint}.items() if v is not None}
    try:
        params = load_config(SimParams, path=config_path, **overrides)
    except (ValidationError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        summary = run(out=out, params=params, progress=not quiet, overwrite=overwrite)
    except (FileExistsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:  # an object-store failure: one line (exit 5), the trace in a temp file
        import os
        import tempfile

        from flowlake.storage import exit_on_storage_failure

        exit_on_storage_failure(exc, roots=(out,),
                                log_to=os.path.join(tempfile.gettempdir(), f"flowlake-simulate-{os.getpid()}.log"))
        raise
    for line in summary.lines():
        click.echo(line)
