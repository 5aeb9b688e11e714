"""Quality checks and their results: what a gate validates and what it reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame

BLOCKING = "blocking"
WARNING = "warning"
EXAMPLES = 5


@dataclass
class Check:
    """One expectation: GX class name and arguments, over ``data``."""

    name: str  # "<suite>.<check>"
    data: DataFrame
    expectation: str  # e.g. "ExpectColumnValuesToNotBeNull"
    kwargs: dict[str, Any]
    describe: str  # what it means, for the report
    rows_checked: int | None = None  # reported as the rows checked when ``data`` holds only rows known to fail

    @property
    def suite(self) -> str:
        return self.name.split(".", 1)[0]


@dataclass
class CheckResult:
    name: str
    severity: str
    success: bool
    describe: str
    element_count: int | None = None
    unexpected_count: int | None = None
    observed: Any = None
    examples: list = field(default_factory=list)
    error: str | None = None

    def line(self) -> str:
        state = "ok" if self.success else ("FAILED" if self.severity == BLOCKING else "warning")
        text = f"[{state}] {self.name} ({self.severity}): {self.describe}"
        if self.unexpected_count is not None and not self.success:
            text += f" -- {self.unexpected_count} of {self.element_count} row(s) fail"
        if self.observed is not None and not self.success:
            text += f" -- observed {self.observed}"
        if self.examples and not self.success:
            text += "\n      examples: " + "; ".join(str(e) for e in self.examples[:EXAMPLES])
        if self.error:
            text += f"\n      error: {self.error}"
        return text


@dataclass
class QualityReport:
    run_id: str
    stage: str
    results: list[CheckResult]
    path: str | None = None

    @property
    def blocking_failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.success and r.severity == BLOCKING]

    @property
    def warnings(self) -> list[CheckResult]:
        return [r for r in self.results if not r.success and r.severity == WARNING]

    def text(self) -> str:
        head = (f"quality {self.stage} of run {self.run_id}: {len(self.results)} check(s), "
                f"{len(self.blocking_failures)} blocking failure(s), {len(self.warnings)} warning(s)")
        return "\n".join([head, *[r.line() for r in self.results]])


class QualityGateError(RuntimeError):
    """A blocking check failed: the stage's output was not published."""

    def __init__(self, report: QualityReport) -> None:
        self.report = report
        names = ", ".join(r.name for r in report.blocking_failures)
        super().__init__(
            f"quality gate failed at {report.stage} ({names}): nothing of this stage was published. "
            f"Report: {report.path}\n{report.text()}")
