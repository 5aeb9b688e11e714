"""Typed simulator parameters (conf/sim.yaml, env FLOWLAKE_SIM__<FIELD>) and the window they define."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from pydantic import Field, field_validator, model_validator

from flowlake.config import ComponentConfig

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class SimParams(ComponentConfig):
    """Everything that shapes a simulated fleet; same seed + params -> byte-identical output."""

    component: str = "sim"

    # window and size
    seed: int = 7
    start: str = "2025-06-02T00:00:00Z"
    hours: float = Field(2.0, gt=0)
    records: int | None = Field(None, gt=0, description="target raw records in the window; None = records_per_hour * hours")
    records_per_hour: int = Field(100_000, gt=0)
    interval_s: int = Field(60, gt=0)
    batch_intervals: int = Field(5, gt=0)

    # fleet
    region: str = "us-east-1"
    availability_zones: list[str] = Field(default_factory=lambda: ["us-east-1a", "us-east-1b", "us-east-1c"])
    n_workloads: int = Field(32, ge=6, le=200)
    n_domains: int = Field(4, ge=1, le=8)
    replicas_min: int = Field(2, ge=1)
    replicas_max: int = Field(8, ge=1)
    fleet_scale: float | None = Field(None, gt=0, description="replica multiplier; None = grow with the record target")
    container_workload_share: float = Field(0.4, ge=0, le=1)
    dual_stack_workload_share: float = Field(0.45, ge=0, le=1)
    ipv6_flow_share: float = Field(0.8, ge=0, le=1, description="share of dual-stack pairs that talk over IPv6")
    no_sidecar_share: float = Field(0.2, ge=0, le=1, description="share of instances/containers without a sidecar")
    edges_per_workload: float = Field(3.0, gt=0)
    intra_domain_edge_share: float = Field(0.85, ge=0, le=1)
    n_load_balancers: int = Field(3, ge=0)
    nat_gateways_per_az: int = Field(1, ge=0)
    external_client_share: float = Field(0.4, ge=0, le=1, description="share of workloads talking to external peers")

    # lifetimes and IP reuse
    history_days: float = Field(10.0, gt=0, description="oldest age of long-lived holders at window start")
    instance_lifetime_h: float = Field(48.0, gt=0)
    container_lifetime_h: float = Field(2.0, gt=0)
    lb_node_lifetime_h: float = Field(24.0, gt=0)
    reuse_share: float = Field(0.5, ge=0, le=1, description="share of released IPv4 addresses handed to another workload")
    fast_reuse_share: float = Field(0.3, ge=0, le=1, description="share of those reuses within min_reuse_gap..fast_reuse_max_gap")
    min_reuse_gap_ms: int = Field(3000, ge=0)
    fast_reuse_max_gap_ms: int = Field(10_000, gt=0)
    slow_reuse_max_gap_ms: int = Field(1_800_000, gt=0)
    boot_max_ms: int = Field(20_000, ge=0, description="a holder serves/connects at most this long after assign")
    drain_max_ms: int = Field(5_000, ge=0, description="a holder's connections close at most this long before release")

    # traffic shape
    persistent_pair_share: float = Field(0.25, ge=0, le=1)
    persistent_record_share_max: float = Field(0.35, ge=0, le=1)
    persistent_conn_mean_min: float = Field(20.0, gt=0)
    daily_amplitude: float = Field(0.5, ge=0, lt=1)
    daily_peak_hour_utc: float = Field(20.0, ge=0, lt=24)
    weekend_dip: float = Field(0.15, ge=0, lt=1)
    growth_per_day: float = Field(0.0, gt=-1)

    # tracker events
    max_event_lag_ms: int = Field(10_000, ge=0)
    publish_delay_min_ms: int = Field(1_000, ge=0)
    publish_delay_max_ms: int = Field(1_200_000, ge=0)
    event_loss_share: float = Field(0.02, ge=0, le=1)
    event_duplicate_share: float = Field(0.03, ge=0, le=1)
    republish_max_ms: int = Field(7_200_000, gt=60_000)
    event_file_minutes: int = Field(5, gt=0)
    event_jsonl_share: float = Field(0.3, ge=0, le=1)

    # output
    s3_endpoint: str | None = None
    write_threads: int = Field(2, ge=1, le=32)
    chunk_records: int = Field(1_000_000, ge=10_000, description="records generated and written per step (memory bound)")

    @field_validator("start")
    @classmethod
    def _valid_start(cls, value: str) -> str:
        parse_utc(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "SimParams":
        interval_ms = self.interval_s * 1000
        if parse_utc(self.start) % interval_ms:
            raise ValueError(f"start {self.start} is not a multiple of interval_s={self.interval_s}: pick an aligned start")
        if round(self.hours * HOUR_MS) % interval_ms:
            raise ValueError(f"hours={self.hours} is not a whole number of {self.interval_s}s intervals")
        if self.replicas_max < self.replicas_min:
            raise ValueError("replicas_max must be >= replicas_min")
        if self.publish_delay_max_ms < self.publish_delay_min_ms:
            raise ValueError("publish_delay_max_ms must be >= publish_delay_min_ms")
        if self.fast_reuse_max_gap_ms < self.min_reuse_gap_ms:
            raise ValueError("fast_reuse_max_gap_ms must be >= min_reuse_gap_ms")
        if not self.availability_zones:
            raise ValueError("availability_zones must name at least one zone")
        return self


def parse_utc(text: str) -> int:
    """Epoch ms of an ISO-8601 time; naive means UTC. Raises ValueError naming the text."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"start {text!r} is not ISO-8601 (e.g. 2025-06-02T00:00:00Z)") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


def iso_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Window:
    start_ms: int
    end_ms: int
    interval_ms: int

    @property
    def n_intervals(self) -> int:
        return (self.end_ms - self.start_ms) // self.interval_ms

    @classmethod
    def of(cls, params: SimParams) -> "Window":
        start = parse_utc(params.start)
        return cls(start, start + round(params.hours * HOUR_MS), params.interval_s * 1000)

    def target_records(self, params: SimParams) -> int:
        if params.records is not None:
            return params.records
        return max(1, round(params.records_per_hour * (self.end_ms - self.start_ms) / HOUR_MS))
