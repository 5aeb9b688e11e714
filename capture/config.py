"""Typed configuration of the capture sidecar (conf/capture.yaml + FLOWLAKE_CAPTURE__* env).

Safe settings (``interval_s``, ``filters``, ``sink``, ``rolling``) reload
while the sidecar runs; the others need a restart (see SAFE_SECTIONS).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from flowlake.config import ComponentConfig, load_config

# Top-level fields that may change without a restart.
SAFE_SECTIONS = ("interval_s", "stage_s", "filters", "sink", "rolling")


class IdentityConfig(BaseModel):
    """Who this host is. Empty values are learned from the environment."""

    model_config = {"extra": "forbid"}
    instance_id: str = ""
    local_workload: str | None = None
    region: str | None = None
    availability_zone: str | None = None
    # Per-container identity: a folder a runtime hook writes (one JSON/YAML file per
    # container: workload + ips). Empty = one identity for the whole host.
    local_dir: str = ""


class FiltersConfig(BaseModel):
    """What not to record (applied to records before they are written)."""

    model_config = {"extra": "forbid"}
    exclude_local_ports: list[int] = Field(default_factory=list)
    exclude_remote_ports: list[int] = Field(default_factory=list)
    exclude_remote_cidrs: list[str] = Field(default_factory=list)
    include_loopback: bool = True

    @field_validator("exclude_remote_cidrs")
    @classmethod
    def _cidrs_parse(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"filters.exclude_remote_cidrs: {cidr!r} is not a CIDR ({exc})") from None
        return value


class SinkConfig(BaseModel):
    """Where closed files go: S3 (boto3, standard credential chain) or a local folder."""

    model_config = {"extra": "forbid"}
    kind: Literal["s3", "local"] = "local"
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str | None = None
    region_name: str | None = None
    local_root: str = "/var/lib/flowlake/raw"
    max_attempts: int = Field(default=3, ge=1)
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _bucket_for_s3(self) -> "SinkConfig":
        if self.kind == "s3" and not self.bucket:
            raise ValueError("sink.kind is 's3' but sink.bucket is empty: set sink.bucket (or use kind: local)")
        return self


class RollingConfig(BaseModel):
    """When the current file is closed."""

    model_config = {"extra": "forbid"}
    intervals_per_file: int = Field(default=5, ge=1)
    max_file_records: int = Field(default=200_000, ge=1)


class SpoolConfig(BaseModel):
    model_config = {"extra": "forbid"}
    dir: str = "/var/lib/flowlake/spool"
    max_bytes: int = Field(default=1 << 30, ge=1)


class KernelConfig(BaseModel):
    """Sizes of the eBPF maps (passed to the compiler as -D flags)."""

    model_config = {"extra": "forbid"}
    max_conns: int = Field(default=65536, ge=64)
    max_flows: int = Field(default=16384, ge=64)
    ringbuf_pages: int = Field(default=64, ge=1)
    cgroup_path: str = "/sys/fs/cgroup/unified"
    netns_dirs: list[str] = Field(default_factory=lambda: ["/run/netns"])
    # Compile with BCC in a short-lived child and drive the handed-over fds with plain
    # syscalls: the sidecar never maps LLVM (peak RSS). false = compile in-process.
    compile_in_child: bool = True

    @field_validator("ringbuf_pages")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"kernel.ringbuf_pages must be a power of two, got {value}")
        return value


class MetricsConfig(BaseModel):
    model_config = {"extra": "forbid"}
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        if not ipaddress.ip_address(value).is_loopback:
            raise ValueError(f"metrics.host must be a loopback address, got {value!r}")
        return value


class CaptureConfig(ComponentConfig):
    """The capture sidecar's settings."""

    component: str = "capture"
    interval_s: float = Field(default=60.0, gt=0)
    # Every stage_s the open interval's closed connections are staged to local disk, so a
    # SIGKILL loses at most the last stage_s of them (0 or >= interval_s: only at boundaries).
    stage_s: float = Field(default=5.0, ge=0)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    sink: SinkConfig = Field(default_factory=SinkConfig)
    rolling: RollingConfig = Field(default_factory=RollingConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    kernel: KernelConfig = Field(default_factory=KernelConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    state_dir: str = "/var/lib/flowlake/state"
    log_level: str = "INFO"


def load_capture_config(*, path: str | Path | None = None, **overrides) -> CaptureConfig:
    """Load the capture config (YAML then env), resolving the identity from the environment."""
    cfg = load_config(CaptureConfig, path=path, **overrides)
    return resolve_identity(cfg)


# Environment variables a platform sets, in order of preference.
_IDENTITY_ENV = {
    "instance_id": ("FLOWLAKE_INSTANCE_ID", "INSTANCE_ID", "HOSTNAME"),
    "local_workload": ("FLOWLAKE_WORKLOAD", "NETFLIX_APP", "APP_NAME"),
    "region": ("FLOWLAKE_REGION", "EC2_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    "availability_zone": ("FLOWLAKE_AVAILABILITY_ZONE", "EC2_AVAILABILITY_ZONE"),
}


def resolve_identity(cfg: CaptureConfig, *, environ: dict[str, str] | None = None) -> CaptureConfig:
    """Fill empty identity fields from the environment (then the host name for instance_id)."""
    env = os.environ if environ is None else environ
    ident = cfg.identity.model_copy()
    for field, names in _IDENTITY_ENV.items():
        if getattr(ident, field):
            continue
        for name in names:
            if env.get(name):
                setattr(ident, field, env[name])
                break
    if not ident.instance_id:
        ident.instance_id = os.uname().nodename
    cfg.identity = ident
    return cfg
