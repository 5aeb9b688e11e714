"""``flowlake setup``: fetch the JVM jars (Delta, hadoop-aws + AWS SDK bundle) from Maven Central once."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import click

from flowlake.spark import REQUIRED_JAR_PREFIXES, S3_JAR_PREFIXES, jars_dir

POM = Path(__file__).resolve().parent.parent / "jars" / "pom.xml"


def fetch_jars(*, dest: Path, pom: Path = POM) -> list[Path]:
    """Copy the jars ``pom`` lists into ``dest`` with Maven; raise with the reason if it fails."""
    if shutil.which("mvn") is None:
        raise RuntimeError("Maven (mvn) is not installed: `apt-get install maven`, then run `flowlake setup` again.")
    if not pom.is_file():
        raise RuntimeError(f"{pom} is missing: run `flowlake setup` from a flowlake source checkout.")
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        "mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
        f"-DoutputDirectory={dest}", "-DexcludeTransitive=true", "-DoverWriteIfNewer=true",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            "Could not fetch the Delta Lake jars from Maven Central "
            f"(`{' '.join(cmd)}` exited {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}\n"
            "Check network access to Maven Central, then run `flowlake setup` again."
        )
    jars = sorted(dest.glob("*.jar"))
    missing = [p for p in (*REQUIRED_JAR_PREFIXES, *S3_JAR_PREFIXES) if not any(j.name.startswith(p) for j in jars)]
    if missing:
        raise RuntimeError(f"Maven ran but {dest} lacks {missing}: check {pom}.")
    return jars


@click.command()
@click.option("--dest", type=click.Path(path_type=Path), default=None, help="Where to put the jars (default .cache/jars).")
def setup(dest: Path | None) -> None:
    """Fetch the JVM jars Spark needs (Delta Lake) into the local cache."""
    try:
        jars = fetch_jars(dest=dest or jars_dir())
    except RuntimeError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    for jar in jars:
        click.echo(f"ok {jar}")
