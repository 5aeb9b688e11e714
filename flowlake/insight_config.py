"""Typed config of the insight gold tables, the report and the notebooks (conf/insight.yaml,
env FLOWLAKE_INSIGHT__*)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from flowlake.config import ComponentConfig, load_config


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
