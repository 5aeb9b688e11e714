"""Data-quality gates: suites for bronze, ownership, silver and gold, and the gate that stops publication.

Each suite is a list of :class:`Check` s: a Great Expectations 1.x
expectation over a DataFrame (the rows about to be published, or a small
DataFrame of violations or totals computed here with Spark). The pipeline
validates a stage's output *before* its replaceWhere: a failed ``blocking``
check stops the run (nothing of that stage or later ones is published), a
failed ``warning`` check is only reported. Either way a report (which check,
how many rows, examples) is written beside the tables under
``<lake>/_quality/<run_id>/``.

GX itself is imported only in :mod:`flowlake.jobs.quality_gx`, when checks run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import Field
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from flowlake.config import ComponentConfig, load_config
from flowlake.contracts import RAW_FLOW_SCHEMA
from flowlake.storage import join, resolve

BLOCKING = "blocking"
WARNING = "warning"
Severity = Literal["blocking", "warning"]
HOUR_MS = 3_600_000
COUNTER_COLUMNS = ["connections_opened", "connections_closed", "bytes_sent", "bytes_received",
                   "segments_sent", "segments_received", "retransmits"]
NOT_NULL_COLUMNS = [f.name for f in RAW_FLOW_SCHEMA if not f.nullable]
# Canonical IP text (contracts: dotted quad, RFC 5952 lower-case IPv6).
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IP_REGEX = rf"^({_OCTET}\.){{3}}{_OCTET}$|^[0-9a-f:.]*:[0-9a-f:.]*$"
# One bronze/silver row: a record of one source file.
ROW_KEY = ["source_file", "instance_id", "interval_start_ms", "local_ip", "local_port", "remote_ip",
           "remote_port", "direction"]
EXAMPLES = 5


class QualityConfig(ComponentConfig):
    """conf/quality.yaml (env FLOWLAKE_QUALITY__*)."""

    component: str = "quality"
    enabled: bool = True
    # silver: share of records whose remote side is attributed (not `unattributed`)
    min_attributed_share: float = Field(0.9, ge=0, le=1)
    # bronze: rows a run ingests lie within [start - lateness, end + lateness]
    lateness_ms: int = Field(24 * HOUR_MS, ge=0)
    # gold: the newest hour in gold may end at most this long before the window's end
    freshness_max_lag_ms: int = Field(HOUR_MS, ge=0)
    # check name -> severity, overriding the defaults below
    severity: dict[str, Severity] = Field(default_factory=dict)


DEFAULT_SEVERITY: dict[str, Severity] = {
    "bronze.schema": BLOCKING,
    "bronze.not_null": BLOCKING,
    "bronze.local_ip_valid": BLOCKING,
    "bronze.remote_ip_valid": BLOCKING,
    "bronze.counters_non_negative": BLOCKING,
    "bronze.interval_end_after_start": BLOCKING,
    "bronze.timestamps_in_window": WARNING,
    "ownership.no_overlap": BLOCKING,
    "silver.attributed_share": BLOCKING,
    "silver.no_duplicate_keys": BLOCKING,
    "silver.every_bronze_row": BLOCKING,
    "gold.bytes_reconcile": BLOCKING,
    "gold.freshness": WARNING,
}


def load_quality_config(path: str | None = None, **overrides) -> QualityConfig:
    """Read conf/quality.yaml and FLOWLAKE_QUALITY__* variables."""
    config = load_config(QualityConfig, path=path, **overrides)
    unknown = sorted(set(config.severity) - set(DEFAULT_SEVERITY))
    if unknown:
        raise ValueError(f"quality.severity names unknown check(s) {unknown}; known: {sorted(DEFAULT_SEVERITY)}")
    return config


@dataclass
class Check:
    """One expectation: GX class name and arguments, over ``data``."""

    name: str  # "<suite>.<check>"
    data: DataFrame
    expectation: str  # e.g. "ExpectColumnValuesToNotBeNull"
    kwargs: dict[str, Any]
    describe: str  # what it means, for the report

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


# --------------------------------------------------------------------------- suites (pure: DataFrames in, checks out)

def bronze_suite(window: DataFrame, new_rows: DataFrame, *, start_ms: int, end_ms: int,
                 lateness_ms: int) -> list[Check]:
    """Bronze rows of the span (``window``) and the rows this run ingested (``new_rows``)."""
    nulls = F.concat_ws(",", *[F.when(F.col(c).isNull(), F.lit(c)) for c in NOT_NULL_COLUMNS])
    negative = F.concat_ws(",", *[F.when(F.col(c) < 0, F.lit(c)) for c in COUNTER_COLUMNS])
    rows = window.select(
        *ROW_KEY, "interval_end_ms",
        F.when(nulls != "", nulls).alias("_null_columns"),
        F.when(negative != "", negative).alias("_negative_counters"),
    )
    want = {f.name: f.type for f in RAW_FLOW_SCHEMA}
    spark_types = {"string": "string", "int64": "bigint", "int32": "int"}
    got = dict(window.dtypes)
    wrong = {c: got.get(c, "missing") for c, t in want.items() if got.get(c) != spark_types[str(t)]}
    schema = window.sparkSession.createDataFrame(
        [(c, g) for c, g in sorted(wrong.items())], "column string, actual_type string")
    return [
        Check("bronze.schema", schema, "ExpectTableRowCountToEqual", {"value": 0},
              "every contract column present with the contract's type"),
        Check("bronze.not_null", rows, "ExpectColumnValuesToBeNull", {"column": "_null_columns"},
              f"no nulls in {', '.join(NOT_NULL_COLUMNS)}"),
        Check("bronze.local_ip_valid", rows, "ExpectColumnValuesToMatchRegex",
              {"column": "local_ip", "regex": IP_REGEX}, "local_ip is a canonical IP address"),
        Check("bronze.remote_ip_valid", rows, "ExpectColumnValuesToMatchRegex",
              {"column": "remote_ip", "regex": IP_REGEX}, "remote_ip is a canonical IP address"),
        Check("bronze.counters_non_negative", rows, "ExpectColumnValuesToBeNull", {"column": "_negative_counters"},
              f"counters >= 0 ({', '.join(COUNTER_COLUMNS)})"),
        Check("bronze.interval_end_after_start", rows, "ExpectColumnPairValuesAToBeGreaterThanB",
              {"column_A": "interval_end_ms", "column_B": "interval_start_ms", "or_equal": False},
              "interval_end_ms > interval_start_ms"),
        Check("bronze.timestamps_in_window", new_rows.select("interval_start_ms"), "ExpectColumnValuesToBeBetween",
              {"column": "interval_start_ms", "min_value": start_ms - lateness_ms, "max_value": end_ms + lateness_ms},
              f"rows ingested by this run start within the window +/- {lateness_ms} ms of lateness"),
    ]


def overlaps(ranges: DataFrame) -> DataFrame:
    """Ranges that start before an earlier range of the same (ip, source) ended."""
    order = Window.partitionBy("ip", "source").orderBy("valid_from_ms", "valid_to_ms", "workload") \
        .rowsBetween(Window.unboundedPreceding, -1)
    to = F.coalesce("valid_to_ms", F.lit(2**62))
    return (
        ranges.withColumn("_prev_to", F.max(to).over(order))
        .where(F.col("_prev_to") > F.col("valid_from_ms"))
        .select("ip", "source", "workload", "valid_from_ms", "valid_to_ms", F.col("_prev_to").alias("previous_to_ms"))
    )


def ownership_suite(ranges: DataFrame) -> list[Check]:
    """Ownership ranges about to be published."""
    return [Check("ownership.no_overlap", overlaps(ranges), "ExpectTableRowCountToEqual", {"value": 0},
                  "no two ranges of one ip and source overlap")]


def silver_suite(silver: DataFrame, bronze: DataFrame, *, min_attributed_share: float) -> list[Check]:
    """Attributed rows of a span against the bronze rows of the same span."""
    share = silver.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.when(F.col("remote_attribution") != "unattributed", 1).otherwise(0)).alias("attributed"),
    ).select("rows", "attributed", F.coalesce(F.col("attributed") / F.col("rows"), F.lit(1.0)).alias("share"))
    dupes = silver.groupBy(*ROW_KEY).count().where(F.col("count") > 1)
    missing = bronze.select(*ROW_KEY).join(silver.select(*ROW_KEY), on=ROW_KEY, how="left_anti")
    return [
        Check("silver.attributed_share", share, "ExpectColumnValuesToBeBetween",
              {"column": "share", "min_value": min_attributed_share},
              f"at least {min_attributed_share:.2%} of records have an attributed remote"),
        Check("silver.no_duplicate_keys", dupes, "ExpectTableRowCountToEqual", {"value": 0},
              "one silver row per bronze record (" + ", ".join(ROW_KEY) + ")"),
        Check("silver.every_bronze_row", missing, "ExpectTableRowCountToEqual", {"value": 0},
              "every bronze row of the span is in silver"),
    ]


def gold_expected_bytes(silver: DataFrame) -> DataFrame:
    """Bytes gold/app_dependencies must hold for these silver rows: every outbound record,
    and the inbound ones whose client has no sidecar (not attributed by heartbeat)."""
    counted = silver.where((F.col("direction") == "outbound")
                           | ((F.col("direction") == "inbound") & (F.col("remote_attribution") != "heartbeat")))
    return counted.agg(F.coalesce(F.sum(F.col("bytes_sent") + F.col("bytes_received")), F.lit(0)).alias("b"))


def gold_suite(gold: DataFrame, silver: DataFrame, *, end_ms: int, freshness_max_lag_ms: int) -> list[Check]:
    """gold/app_dependencies rows of whole hours against the silver rows of the same hours."""
    g = gold.agg(F.coalesce(F.sum(F.col("bytes_to_dst") + F.col("bytes_to_src")), F.lit(0)).alias("g"),
                 F.max("hour_start_ms").alias("newest_hour_ms"))
    s = gold_expected_bytes(silver)
    rec = g.crossJoin(s).select(F.col("b").alias("silver_bytes"), F.col("g").alias("gold_bytes"),
                                (F.col("g") - F.col("b")).alias("difference"), "newest_hour_ms")
    lag = rec.select((F.lit(end_ms) - F.coalesce(F.col("newest_hour_ms") + HOUR_MS, F.lit(0))).alias("lag_ms"))
    return [
        Check("gold.bytes_reconcile", rec, "ExpectColumnValuesToBeBetween",
              {"column": "difference", "min_value": 0, "max_value": 0},
              "bytes in gold/app_dependencies equal the silver bytes they count"),
        Check("gold.freshness", lag, "ExpectColumnValuesToBeBetween",
              {"column": "lag_ms", "max_value": freshness_max_lag_ms},
              f"the newest gold hour ends at most {freshness_max_lag_ms} ms before the window's end"),
    ]


# --------------------------------------------------------------------------- running and reporting

def run_checks(checks: list[Check], *, config: QualityConfig, run_id: str, stage: str) -> QualityReport:
    """Validate the checks with Great Expectations; a report of every result."""
    from flowlake.jobs.quality_gx import validate

    severity = {**DEFAULT_SEVERITY, **config.severity}
    results = validate(checks)
    for r in results:
        r.severity = severity.get(r.name, BLOCKING)
    return QualityReport(run_id=run_id, stage=stage, results=results)


def write_report(report: QualityReport, *, lake_root: str) -> str:
    """Write the report as JSON and text under ``<lake>/_quality/<run_id>/``; returns the text's path."""
    base = join(lake_root, "_quality", report.run_id)
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
