"""The jobs' typed configurations, read in one place: the pipeline (conf/jobs.yaml, env
FLOWLAKE_JOBS__*), the quality gates (conf/quality.yaml, FLOWLAKE_QUALITY__*) and the insight
gold tables (conf/insight.yaml, FLOWLAKE_INSIGHT__*)."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from flowlake.config import ComponentConfig, load_config
from flowlake.lake import FLOWS_ATTRIBUTED
from flowlake.storage import S3Params
from flowlake.timeutil import HOUR_MS


class CidrClass(BaseModel):
    """A CIDR block and the class name flows to it get; ``name: null`` = internal space."""

    cidr: str
    name: str | None = None

    @field_validator("cidr")
    @classmethod
    def _valid_cidr(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_network(value, strict=True))
        except ValueError as err:
            raise ValueError(f"cidr {value!r} is not a network address with prefix (e.g. 10.0.0.0/8): {err}") from err


class AttributionParams(BaseModel):
    """How ownership ranges are built and looked up (see docs/attribution.md)."""

    handshake_tolerance_ms: int = Field(1000, ge=0)
    heartbeat_max_gap_ms: int = Field(900_000, gt=0)
    # fallback lag margin: used when a run has fewer than lag_min_pairs sidecar holdings to learn it from
    event_lag_margin_ms: int = Field(30_000, ge=0)
    # the learned margin: this quantile of the tracker's lag behind sidecar-proven changes, within [floor, cap]
    lag_quantile: float = Field(0.999, gt=0, le=1)
    lag_margin_floor_ms: int = Field(10_000, ge=0)
    lag_margin_cap_ms: int = Field(600_000, ge=0)
    lag_min_pairs: int = Field(30, ge=1)
    # stale-range guard: an event range longer than this quantile of observed holding lifetimes, whose end
    # another holder proves, is only trusted that long
    stale_lifetime_quantile: float = Field(0.99, gt=0, le=1)
    # what is learned for UTC hour H (the lag margin, the lifetime bound, the port profiles) comes from the
    # data of [H - learn_lookback_hours, H + 1h) only: it does not depend on how time was cut into runs
    learn_lookback_hours: int = Field(24, ge=0)
    cidr_classes: list[CidrClass] = Field(default_factory=list)
    # Above this many ownership change points the as-of join stops broadcasting
    # them and joins on (ip, time bucket) instead.
    broadcast_max_rows: int = Field(2_000_000, gt=0)

    @model_validator(mode="after")
    def _floor_below_cap(self) -> "AttributionParams":
        if self.lag_margin_floor_ms > self.lag_margin_cap_ms:
            raise ValueError("attribution.lag_margin_floor_ms must be <= attribution.lag_margin_cap_ms")
        widest = max(self.lag_margin_cap_ms, self.event_lag_margin_ms)
        if widest > self.heartbeat_max_gap_ms:
            # the evidence a run reads beyond its span (max gap + 2 tolerances) must cover a whole lag-margin
            # doubt, or runs over different windows could date a handover differently (successor.py)
            raise ValueError(f"attribution.lag_margin_cap_ms and event_lag_margin_ms ({widest} ms) must be <= "
                             f"attribution.heartbeat_max_gap_ms ({self.heartbeat_max_gap_ms} ms): raise the gap "
                             "or lower the margins")
        return self


class IngestParams(BaseModel):
    """Which raw folders a run lists, and how late a file may arrive."""

    late_arrival_lookback_hours: int = Field(24, ge=0)
    max_future_skew_ms: int = Field(3_600_000, ge=0)


class MaintenanceParams(BaseModel):
    """Table maintenance (the ``maintain`` stage): compaction, clustering, checkpoints, VACUUM."""

    # the stage runs for windows whose end is a multiple of this (keyed on the data, not the clock)
    every_hours: int = Field(24, gt=0)
    # OPTIMIZE a table (for dt-partitioned tables: the days of the span) with at least this many files
    compact_min_files: int = Field(8, ge=2)
    # silver/flows_attributed is Z-ordered on these within each day (who called X, when)
    cluster_flows_by: list[str] = Field(default_factory=lambda: ["remote_workload", "local_workload_resolved",
                                                                  "interval_start_ms"])
    # VACUUM keeps this many hours of time travel (Delta refuses less than 168 without a safety override)
    vacuum_retain_hours: int = Field(168, ge=168)
    # a Delta checkpoint every this many commits (bounded log replay)
    checkpoint_interval: int = Field(10, gt=0)

    @field_validator("cluster_flows_by")
    @classmethod
    def _clustered_on_stats(cls, columns: list[str]) -> list[str]:
        # Z-ordering needs each column's min/max statistics, kept only for the table's stats_columns
        missing = [c for c in columns if c not in FLOWS_ATTRIBUTED.stats_columns]
        if missing:
            raise ValueError(f"maintenance.cluster_flows_by: {missing} not among the columns silver/flows_attributed "
                             f"keeps statistics on ({', '.join(FLOWS_ATTRIBUTED.stats_columns)}); choose from those, "
                             "or add the column to ATTRIBUTED_STATS in flowlake/lake.py")
        return columns


class JobsConfig(ComponentConfig):
    component: str = "jobs"
    attribution: AttributionParams = AttributionParams()
    ingest: IngestParams = IngestParams()
    storage: S3Params = S3Params()
    maintenance: MaintenanceParams = MaintenanceParams()
    shuffle_partitions: int = 8


def load_jobs_config(path: str | None = None, **overrides) -> JobsConfig:
    """Read the jobs' config from conf/jobs.yaml and FLOWLAKE_JOBS__* variables."""
    return load_config(JobsConfig, path=path, **overrides)


# --------------------------------------------------------------------------- quality gates

BLOCKING = "blocking"
WARNING = "warning"
Severity = Literal["blocking", "warning"]


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
    "bronze.capture_complete": WARNING,
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


# The insight tables' config lives in flowlake's core (flowlake/insight_config.py): the report and
# notebooks read it too, and core imports nothing of jobs/.
from flowlake.insight_config import (  # noqa: E402,F401 - re-exported for the jobs
    DeclaredPath, ForecastParams, InsightConfig, PolicyRule, Prices, SegmentationParams, load_insight_config,
)
