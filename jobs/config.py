"""The jobs' typed configuration (conf/jobs.yaml, env FLOWLAKE_JOBS__*)."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, Field, field_validator

from flowlake.config import ComponentConfig, load_config


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
    shuffle_partitions: int = 8


def load_jobs_config(path: str | None = None, **overrides) -> JobsConfig:
    """Read the jobs' config from conf/jobs.yaml and FLOWLAKE_JOBS__* variables."""
    return load_config(JobsConfig, path=path, **overrides)
