"""The Great Expectations side of the gates: checks in, results out (imported only when checks run)."""

from __future__ import annotations

import os

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no usage statistics: no traffic off this machine

import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402

from flowlake.jobs.quality.checks import EXAMPLES, Check, CheckResult  # noqa: E402


def _context():
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return ctx


def validate(checks: list[Check]) -> list[CheckResult]:
    """One GX batch per distinct DataFrame, one suite of its expectations; results in the checks' order."""
    ctx = _context()
    source = ctx.data_sources.add_spark(name="flowlake")
    groups: dict[int, list[Check]] = {}
    for c in checks:
        groups.setdefault(id(c.data), []).append(c)
    by_name: dict[str, CheckResult] = {}
    for i, group in enumerate(groups.values()):
        asset = source.add_dataframe_asset(name=f"batch_{i}")
        batch_def = asset.add_batch_definition_whole_dataframe(f"batch_{i}")
        suite = gx.ExpectationSuite(name=f"suite_{i}_{group[0].suite}")
        for c in group:
            suite.add_expectation(getattr(gxe, c.expectation)(**c.kwargs, meta={"check": c.name}))
        suite = ctx.suites.add(suite)
        data = group[0].data
        batch = batch_def.get_batch(batch_parameters={"dataframe": data})
        result = batch.validate(suite, result_format={"result_format": "SUMMARY",
                                                      "partial_unexpected_count": EXAMPLES})
        checks_here = {c.name: c for c in group}
        for r in result.results:
            name = r.expectation_config.meta["check"]
            c = checks_here[name]
            res = r.result or {}
            examples = list(res.get("partial_unexpected_list") or [])
            error = None
            if r.exception_info and r.exception_info.get("raised_exception"):
                error = str(r.exception_info.get("exception_message"))[:500]
            if not r.success and not examples and c.expectation == "ExpectTableRowCountToEqual":
                examples = [row.asDict() for row in data.limit(EXAMPLES).collect()]
            observed = res.get("observed_value")
            unexpected, elements = res.get("unexpected_count"), res.get("element_count")
            if c.expectation == "ExpectTableRowCountToEqual":  # a table of violations: each row is one
                unexpected, elements, observed = observed, observed, None
            if c.expectation == "ExpectColumnValuesToBeBetween" and not r.success and examples:
                observed = examples[0]
            by_name[name] = CheckResult(
                name=name, severity="", success=bool(r.success), describe=c.describe,
                element_count=elements, unexpected_count=unexpected,
                observed=observed, examples=examples, error=error)
    return [by_name[c.name] for c in checks]
