"""The ``flowlake`` command. Subcommands live with their component and are
imported only when called, so ``flowlake capture ...`` never imports Spark."""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command or group
SUBCOMMANDS = {
    "capture": "flowlake.capture.cli:capture",
    "simulate": "flowlake.sim.cli:simulate",
    "pipeline": "flowlake.jobs.run.cli:pipeline",
    "evaluate": "flowlake.jobs.run.cli:evaluate",
    "setup": "flowlake.setup_jars:setup",
    "report": "flowlake.report:report",
    "status": "flowlake.status:status",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup)
@click.version_option(package_name="flowlake")
def cli() -> None:
    """flowlake: network insight from eBPF flow logs."""


def main() -> None:
    cli()
