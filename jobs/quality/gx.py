"""The Great Expectations side of the gates: checks in, results out (imported only when checks run)."""

from __future__ import annotations

import itertools
import logging
import os

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no usage statistics: no traffic off this machine

import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402
from pyspark import StorageLevel  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402

from flowlake.jobs.quality.checks import EXAMPLES, Check, CheckResult  # noqa: E402

# GX sets its config module's logger to INFO (it announces the ephemeral context's temporary docs folder);
# the gate's report says what matters
for _name in ("great_expectations", "great_expectations.data_context.types.base"):
    logging.getLogger(_name).setLevel(logging.WARNING)


_CTX = None
_SOURCE = None
_CALLS = itertools.count()


def _context_and_source():
    """The process's one ephemeral GX context and its Spark data source, built on first use.

    Building them costs seconds per gate; every validate() reuses them, with asset and
    suite names unique to its call (and removed afterwards)."""
    global _CTX, _SOURCE
    if _CTX is None:
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        _SOURCE = ctx.data_sources.add_spark(name="flowlake")
        _CTX = ctx
    return _CTX, _SOURCE


def validate(checks: list[Check]) -> list[CheckResult]:
    """One GX batch per distinct DataFrame, one suite of its expectations; results in the checks' order."""
    ctx, source = _context_and_source()
    call = next(_CALLS)
    groups: dict[int, list[Check]] = {}
    for c in checks:
        groups.setdefault(id(c.data), []).append(c)
    by_name: dict[str, CheckResult] = {}
    for i, group in enumerate(groups.values()):
        # GX computes each expectation's metrics in jobs of their own: the rows are computed once and
        # kept for all of them, instead of re-read and re-derived (IP checks are Python UDFs) per metric
        data = group[0].data.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            by_name.update(_validate_group(ctx, source, group, data, asset_name=f"batch_{call}_{i}",
                                           suite_name=f"suite_{call}_{i}_{group[0].suite}"))
        finally:
            data.unpersist()
    return [by_name[c.name] for c in checks]


def _validate_group(ctx, source, group: list[Check], data, *, asset_name: str, suite_name: str
                    ) -> dict[str, CheckResult]:
    """One GX batch of ``data`` validated against one suite of the group's expectations."""
    by_name: dict[str, CheckResult] = {}
    asset = source.add_dataframe_asset(name=asset_name)
    try:
        batch_def = asset.add_batch_definition_whole_dataframe(asset_name)
        suite = gx.ExpectationSuite(name=suite_name)
        for c in group:
            suite.add_expectation(getattr(gxe, c.expectation)(**c.kwargs, meta={"check": c.name}))
        suite = ctx.suites.add(suite)
        batch = batch_def.get_batch(batch_parameters={"dataframe": data})
        result = batch.validate(suite, result_format={"result_format": "SUMMARY",
                                                      "partial_unexpected_count": EXAMPLES})
    finally:
        _forget(ctx, source, asset_name=asset_name, suite_name=suite_name)
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
        if c.rows_checked is not None:
            elements = c.rows_checked
        if c.expectation == "ExpectTableRowCountToEqual":  # a table of violations: each row is one
            unexpected, elements, observed = observed, observed, None
        if c.expectation == "ExpectColumnValuesToBeBetween" and not r.success and examples:
            observed = examples[0]
        by_name[name] = CheckResult(
            name=name, severity="", success=bool(r.success), describe=c.describe,
            element_count=elements, unexpected_count=unexpected,
            observed=observed, examples=examples, error=error)
    return by_name


def _forget(ctx, source, *, asset_name: str, suite_name: str) -> None:
    """Drop one call's asset and suite from the shared context (it would otherwise grow per gate)."""
    try:
        ctx.suites.delete(name=suite_name)
    except Exception:  # noqa: BLE001 - not added (the call failed before): nothing to drop
        pass
    try:
        source.delete_asset(name=asset_name)
    except Exception:  # noqa: BLE001
        pass
