"""The layout holds: core imports no jobs, lower layers import no orchestration, modules stay small,
and the repository holds no symlink (the packaging maps capture/ and jobs/ into flowlake)."""

import ast
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORE = sorted(p for p in (REPO / "flowlake").rglob("*.py"))
JOBS = sorted((REPO / "jobs").rglob("*.py"))
MAX_LINES = 250


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(REPO)))
def test_core_imports_nothing_of_jobs(path):
    assert not {n for n in imported(path) if n.startswith("flowlake.jobs")}


@pytest.mark.parametrize("path", [p for p in JOBS if p.parent.name in ("bronze", "silver", "gold", "quality")],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_layers_import_no_orchestration(path):
    # ingest writes bronze itself, through the Delta helpers of jobs/run/io only
    allowed = {"flowlake.jobs.run", "flowlake.jobs.run.io"}
    assert not {n for n in imported(path) if n.startswith("flowlake.jobs.run") and n not in allowed}


@pytest.mark.parametrize("path", JOBS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_under_jobs_is_over_250_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_the_repository_holds_no_symlink():
    files = subprocess.run(["git", "ls-files", "-s"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert [line for line in files.splitlines() if line.startswith("120000")] == []
