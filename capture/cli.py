"""`flowlake capture run|doctor`."""

from __future__ import annotations

import sys

import click


class _NoPandas:
    """Import hook that makes pandas unavailable (pyarrow then skips it)."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"{name} is not loaded in the capture sidecar process", name=name)
        return None


@click.group()
def capture() -> None:
    """The capture sidecar: exact TCP flow records from the kernel to S3."""


@capture.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML config (default: conf/capture.yaml); env FLOWLAKE_CAPTURE__* overrides it.")
@click.option("--interval-s", type=float, default=None, help="Override interval_s.")
def run(config_path: str | None, interval_s: float | None) -> None:
    """Run the sidecar until SIGTERM (the open interval is flushed)."""
    # pyarrow imports pandas (~50 MB resident) the first time it builds an array
    # from Python objects; the sidecar never needs it, so this process does without.
    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas())
    from .sidecar import run_sidecar  # noqa: PLC0415

    overrides = {"interval_s": interval_s} if interval_s is not None else {}
    try:
        run_sidecar(config_path=config_path, **overrides)
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        click.echo(f"flowlake capture run: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:  # an object-store failure at start: one line (exit 5), the trace in a temp file
        import os
        import tempfile

        from flowlake.storage import exit_on_storage_failure

        exit_on_storage_failure(exc, roots=("s3://",),
                                log_to=os.path.join(tempfile.gettempdir(), f"flowlake-capture-{os.getpid()}.log"))
        raise


@capture.command()
@click.option("--cgroup-path", default="/sys/fs/cgroup/unified", show_default=True)
def doctor(cgroup_path: str) -> None:
    """Say what this host lacks for the sidecar and how to fix it."""
    from .doctor import format_report, run_checks  # noqa: PLC0415

    checks = run_checks(cgroup_path=cgroup_path)
    click.echo(format_report(checks))
    sys.exit(0 if all(c.ok for c in checks) else 1)
