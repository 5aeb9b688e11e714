"""The jobs' typed configurations, read in one place: the pipeline (conf/jobs.yaml, env
FLOWLAKE_JOBS__*), the quality gates (conf/quality.yaml, FLOWLAKE_QUALITY__*) and the insight
gold tables (conf/insight.yaml, FLOWLAKE_INSIGHT__*)."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from flowlake.config import ComponentConfig, load_config
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
    event_lag_margin_ms: int = Field(30_000, ge=0)
    cidr_classes: list[CidrClass] = Field(default_factory=list)
    # Above this many ownership change points the as-of join stops broadcasting
    # them and joins on (ip, time bucket) instead.
    broadcast_max_rows: int = Field(2_000_000, gt=0)


class IngestParams(BaseModel):
    """Which raw folders a run lists, and how late a file may arrive."""

    late_arrival_lookback_hours: int = Field(24, ge=0)
    max_future_skew_ms: int = Field(3_600_000, ge=0)


class JobsConfig(ComponentConfig):
    component: str = "jobs"
    attribution: AttributionParams = AttributionParams()
    ingest: IngestParams = IngestParams()
    storage: S3Params = S3Params()
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


# --------------------------------------------------------------------------- insight gold tables


class PolicyRule(BaseModel):
    """One declared rule. ``src``/``dst`` are workload globs (``*``, ``?``, ``[ab]``);
    ``ports`` empty = any port. Rules are evaluated in order; the first match decides."""

    name: str
    src: str = "*"
    dst: str = "*"
    ports: list[int] = Field(default_factory=list)
    action: Literal["allow", "deny"] = "deny"


class DeclaredPath(BaseModel):
    """A pathway that is expected to carry traffic (``port`` null = any port)."""

    name: str
    src: str
    dst: str
    port: int | None = None


class Prices(BaseModel):
    """USD per GB crossing a boundary, counted over the bytes of both directions."""

    bytes_per_gb: int = Field(1_073_741_824, gt=0)
    same_az_usd_per_gb: float = Field(0.0, ge=0)
    cross_az_usd_per_gb: float = Field(0.02, ge=0)
    cross_region_usd_per_gb: float = Field(0.02, ge=0)
    # traffic with a peer whose zone is unknown (external, unattributed)
    unknown_usd_per_gb: float = Field(0.0, ge=0)


class SegmentationParams(BaseModel):
    """Community detection over the workload graph of the last ``lookback_days``."""

    lookback_days: int = Field(7, gt=0)
    weight: Literal["connections", "bytes", "log_bytes"] = "connections"
    resolution: float = Field(1.0, gt=0)
    seed: int = 7
    # A workload keeps its previous segment when moving it costs less modularity than this.
    stickiness: float = Field(0.01, ge=0)
    # workload name globs left out of the graph (external classes, shared infrastructure)
    exclude: list[str] = Field(default_factory=lambda: ["external:*", "nat-gateway"])


class ForecastParams(BaseModel):
    """Prophet forecasts of hourly link traffic."""

    horizon_hours: int = Field(168, gt=0)
    min_history_hours: int = Field(72, gt=0)
    # held-out tail for the backtest: a week when the history allows, never less than a day
    backtest_hours: int = Field(168, gt=0)
    min_backtest_hours: int = Field(24, gt=0)
    interval_width: float = Field(0.9, gt=0, lt=1)
    top_app_edges: int = Field(10, ge=0)
    history_days: int = Field(56, gt=0)
    uncertainty_samples: int = Field(300, ge=10)
    # traffic cycles scale with the level (growth makes the daily swing grow too)
    seasonality_mode: Literal["multiplicative", "additive"] = "multiplicative"

    @model_validator(mode="after")
    def _backtest_fits(self) -> "ForecastParams":
        if self.min_backtest_hours > self.backtest_hours:
            raise ValueError("forecast.min_backtest_hours must be <= forecast.backtest_hours")
        return self


class InsightConfig(ComponentConfig):
    component: str = "insight"
    # the lake the notebooks and `flowlake report` open by default (local folder or s3://)
    lake: str = "demo/lake"
    policies: list[PolicyRule] = Field(default_factory=list)
    default_action: Literal["allow", "deny"] = "allow"
    declared_paths: list[DeclaredPath] = Field(default_factory=list)
    prices: Prices = Prices()
    segmentation: SegmentationParams = SegmentationParams()
    forecast: ForecastParams = ForecastParams()
    # tables to compute; drop one to skip it
    tables: list[Literal["rollups", "segments", "policy", "crosszone", "forecast"]] = Field(
        default_factory=lambda: ["rollups", "segments", "policy", "crosszone", "forecast"])

    @field_validator("policies")
    @classmethod
    def _unique_names(cls, rules: list[PolicyRule]) -> list[PolicyRule]:
        names = [r.name for r in rules]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"policy names must be unique; repeated: {sorted(dup)}")
        return rules


def load_insight_config(path: str | None = None, **overrides) -> InsightConfig:
    """Read conf/insight.yaml and FLOWLAKE_INSIGHT__* variables."""
    return load_config(InsightConfig, path=path, **overrides)
