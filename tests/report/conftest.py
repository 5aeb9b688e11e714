"""Fixtures of the report/status/notebook tests: the delta-rs test lake (tests/report/lake.py) and
the report `flowlake report` writes for it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.report.lake import KEPT, build_lake


def pytest_terminal_summary(terminalreporter) -> None:
    for line in KEPT:
        terminalreporter.write_line(f"kept test artefact: {line}")


@pytest.fixture(scope="session")
def lake(tmp_path_factory) -> Path:
    return build_lake(tmp_path_factory.mktemp("lake"))


@pytest.fixture(scope="session")
def report_file(lake, tmp_path_factory) -> Path:
    """`flowlake report` on the test lake, run as a user would (a new process), checked to import no pyspark."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    code = ("import sys; from flowlake.cli import cli; "
            f"cli(['report', '--lake', {str(lake)!r}, '--out', {str(out)!r}], standalone_mode=False); "
            "assert 'pyspark' not in sys.modules, 'flowlake report imported pyspark'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"wrote {out}" in res.stdout
    return out
