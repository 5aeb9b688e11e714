"""The gate: run a stage's checks with Great Expectations, write the report, stop on a blocking failure.

Reports go beside the tables under ``<lake>/_quality/<run_id>/<stage>.{json,txt}``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone

from flowlake.jobs.config import DEFAULT_SEVERITY, QualityConfig
from flowlake.jobs.quality.checks import BLOCKING, Check, QualityGateError, QualityReport
from flowlake.lake import QUALITY_REPORTS
from flowlake.storage import join, resolve


def run_checks(checks: list[Check], *, config: QualityConfig, run_id: str, stage: str) -> QualityReport:
    """Validate the checks with Great Expectations; a report of every result."""
    from flowlake.jobs.quality.gx import validate

    severity = {**DEFAULT_SEVERITY, **config.severity}
    results = validate(checks)
    for r in results:
        r.severity = severity.get(r.name, BLOCKING)
    return QualityReport(run_id=run_id, stage=stage, results=results)


def write_report(report: QualityReport, *, lake_root: str) -> str:
    """Write the report as JSON and text under ``<lake>/_quality/<run_id>/``; returns the text's path."""
    base = join(lake_root, QUALITY_REPORTS, report.run_id)
    loc = resolve(base)
    loc.fs.create_dir(loc.path, recursive=True)
    payload = {"run_id": report.run_id, "stage": report.stage,
               "written_at": datetime.now(timezone.utc).isoformat(),
               "results": [asdict(r) for r in report.results]}
    with loc.fs.open_output_stream(f"{loc.path}/{report.stage}.json") as f:
        f.write(json.dumps(payload, indent=2, default=str).encode())
    with loc.fs.open_output_stream(f"{loc.path}/{report.stage}.txt") as f:
        f.write((report.text() + "\n").encode())
    report.path = join(base, f"{report.stage}.txt")
    return report.path


def gate(checks: list[Check], *, config: QualityConfig, run_id: str, stage: str, lake_root: str) -> QualityReport:
    """Run the checks, write the report, raise :class:`QualityGateError` on a blocking failure."""
    report = run_checks(checks, config=config, run_id=run_id, stage=stage)
    write_report(report, lake_root=lake_root)
    if report.blocking_failures:
        raise QualityGateError(report)
    return report
