"""Typed simulator parameters (conf/sim.yaml, env FLOWLAKE_SIM__<FIELD>) and the window they define."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from flowlake.config import ComponentConfig

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# Named presets (``--profile``, ``profile:`` in conf/sim.yaml, FLOWLAKE_SIM__PROFILE). A profile
# overrides conf/sim.yaml; the environment and explicit options/keywords override the profile.
PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    # The tracker misbehaving (issue 12): minute-long lag tails, lost events on both sides of a
    # handover, duplicates and re-sends, reuse within seconds, and churn of event-only addresses.
    "hostile": {
        "event_loss_share": 0.05,
        "event_duplicate_share": 0.08,
        "event_resend_share": 0.03,
        "event_lag_tail_share": 0.05,
        "handover_both_lost_share": 0.04,
        "handover_late_assign_share": 0.05,
        "reuse_share": 0.7,
        "fast_reuse_share": 0.6,
        "no_sidecar_share": 0.3,
        "no_sidecar_lifetime_factor": 0.1,
        "lb_node_lifetime_h": 2.0,
        "nat_lifetime_h": 3.0,
    },
    # Weeks of a modest fleet for the history demo (`scripts/demo.sh --days 14`): one file per
    # instance-hour, hourly event files, longer-lived holders, and a trend planted on a quarter
    # of the edges so that the capacity forecasts have something to find.
    "history": {
        "n_workloads": 12,
        "n_domains": 3,
        "replicas_min": 1,
        "replicas_max": 3,
        "fleet_scale": 1.0,
        "records_per_hour": 3000,
        "interval_s": 300,
        "batch_intervals": 12,
        "event_file_minutes": 60,
        "instance_lifetime_h": 120.0,
        "container_lifetime_h": 24.0,
        "lb_node_lifetime_h": 72.0,
        "trend_edge_share": 0.25,
        "trend_per_day": 0.05,
    },
}
ProfileName = Literal["default", "hostile", "history"]
assert set(PROFILES) == set(ProfileName.__args__)  # type: ignore[attr-defined]


class _ProfileSource(PydanticBaseSettingsSource):
    """The chosen profile's preset values, between the environment and the YAML file."""

    def __init__(self, settings_cls: type[BaseSettings], lower: tuple[PydanticBaseSettingsSource, ...]) -> None:
        super().__init__(settings_cls)
        self._lower = lower

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        name = self.current_state.get("profile")  # from init keywords or the environment
        for source in self._lower:
            if name is not None:
                break
            name = source().get("profile")
        # an unknown name yields no preset; field validation then names the allowed values
        return dict(PROFILES.get(str(name or "default"), {}))


class SimParams(ComponentConfig):
    """Everything that shapes a simulated fleet; same seed + params -> byte-identical output."""

    component: str = "sim"
    profile: ProfileName = Field("default", description="named preset (PROFILES) applied under env and options")

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
    nat_lifetime_h: float | None = Field(None, gt=0, description="mean NAT gateway life; None = permanent")
    no_sidecar_lifetime_factor: float = Field(
        1.0, gt=0, description="holders without a sidecar live this times their workload's mean life; "
        "!= 1 decides the sidecar per slot (all holders of a slot alike)")
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
    trend_edge_share: float = Field(0.0, ge=0, le=1, description="share of edges whose bytes grow by trend_per_day")
    trend_per_day: float = Field(0.05, gt=-1, description="daily growth of a trending edge's bytes (a planted trend)")

    # tracker events
    max_event_lag_ms: int = Field(10_000, ge=0)
    publish_delay_min_ms: int = Field(1_000, ge=0)
    publish_delay_max_ms: int = Field(1_200_000, ge=0)
    event_loss_share: float = Field(0.02, ge=0, le=1)
    event_duplicate_share: float = Field(0.03, ge=0, le=1)
    event_resend_share: float = Field(0.0, ge=0, le=1, description="events sent again with a later published_ms")
    event_lag_tail_share: float = Field(0.0, ge=0, le=1, description="events whose lag comes from the heavy tail")
    event_lag_tail_max_ms: int = Field(300_000, ge=0, description="tail lags are log-uniform in max_event_lag_ms..this")
    handover_both_lost_share: float = Field(0.0, ge=0, le=1, description="handovers losing the unassign AND the next assign")
    handover_late_assign_share: float = Field(
        0.0, ge=0, le=1, description="handovers losing the unassign whose next assign lags from the tail")
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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = super().settings_customise_sources(
            settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings)
        high, low = sources[:2], sources[2:]  # (init, env), then the YAML file if any
        return (*high, _ProfileSource(settings_cls, low), *low)

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
        tail = self.event_lag_tail_share > 0 or self.handover_late_assign_share > 0
        if tail and self.event_lag_tail_max_ms < self.max_event_lag_ms:
            raise ValueError("event_lag_tail_max_ms must be >= max_event_lag_ms (the tail starts there)")
        if self.handover_both_lost_share + self.handover_late_assign_share > 1:
            raise ValueError("handover_both_lost_share + handover_late_assign_share must be <= 1")
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
