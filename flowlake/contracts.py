"""The v1 data contracts (../shared/contracts.md) as code: schemas, key layout, IP form.

Every part of flowlake that writes or reads a contract imports it from here,
so the capture sidecar, the simulator and the jobs cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timezone

import pyarrow as pa

SCHEMA_VERSION = "1"
SCHEMA_VERSION_KEY = b"flowlake.schema_version"
RAW_FLOWS_PREFIX = "flows/v1"
IP_EVENTS_PREFIX = "ip_events/v1"
PARQUET_COMPRESSION = "zstd"

DIRECTION_OUTBOUND = "outbound"
DIRECTION_INBOUND = "inbound"
PROTOCOL_TCP = "tcp"
ACTION_ASSIGN = "assign"
ACTION_UNASSIGN = "unassign"

RAW_FLOW_SCHEMA = pa.schema(
    [
        pa.field("instance_id", pa.string(), nullable=False),
        pa.field("local_workload", pa.string()),
        pa.field("region", pa.string()),
        pa.field("availability_zone", pa.string()),
        pa.field("interval_start_ms", pa.int64(), nullable=False),
        pa.field("interval_end_ms", pa.int64(), nullable=False),
        pa.field("local_ip", pa.string(), nullable=False),
        pa.field("local_port", pa.int32(), nullable=False),
        pa.field("remote_ip", pa.string(), nullable=False),
        pa.field("remote_port", pa.int32(), nullable=False),
        pa.field("direction", pa.string(), nullable=False),
        pa.field("protocol", pa.string(), nullable=False),
        pa.field("first_start_ms", pa.int64(), nullable=False),
        pa.field("connections_opened", pa.int32(), nullable=False),
        pa.field("connections_closed", pa.int32(), nullable=False),
        pa.field("bytes_sent", pa.int64(), nullable=False),
        pa.field("bytes_received", pa.int64(), nullable=False),
        pa.field("segments_sent", pa.int64(), nullable=False),
        pa.field("segments_received", pa.int64(), nullable=False),
        pa.field("retransmits", pa.int64(), nullable=False),
        pa.field("srtt_us_max", pa.int64()),
    ],
    metadata={SCHEMA_VERSION_KEY: SCHEMA_VERSION.encode()},
)

IP_EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_ms", pa.int64(), nullable=False),
        pa.field("published_ms", pa.int64(), nullable=False),
        pa.field("ip", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("workload", pa.string()),
        pa.field("instance_id", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("region", pa.string()),
        pa.field("availability_zone", pa.string()),
    ]
)

# Spark DDL forms of the same schemas (jobs build and validate DataFrames with them).
SPARK_TYPES = {"string": "string", "int64": "bigint", "int32": "int"}  # Arrow type -> Spark SQL type
RAW_FLOW_DDL = ", ".join(f"{f.name} {SPARK_TYPES[str(f.type)]}" for f in RAW_FLOW_SCHEMA)
IP_EVENT_DDL = ", ".join(f"{f.name} {SPARK_TYPES[str(f.type)]}" for f in IP_EVENT_SCHEMA)

NOT_NULL_FLOW_COLUMNS = [f.name for f in RAW_FLOW_SCHEMA if not f.nullable]
COUNTER_COLUMNS = ["connections_opened", "connections_closed", "bytes_sent", "bytes_received",
                   "segments_sent", "segments_received", "retransmits"]
# A record's identity (§1: one aggregate per connection key, interval and instance).
RECORD_KEY = ["instance_id", "interval_start_ms", "local_ip", "local_port", "remote_ip", "remote_port", "direction"]
INSTANCE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"

_INSTANCE_ID_OK = re.compile(rf"^{INSTANCE_ID_PATTERN}$")


def canonical_ip(text: str) -> str:
    """Return the contract's canonical text form of an IP address.

    IPv4 as a dotted quad, IPv6 RFC 5952 compressed lower case, and an
    IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) as its IPv4 form.
    Raises ValueError naming the text when it is not an IP address.
    """
    addr = ipaddress.ip_address(text.strip() if isinstance(text, str) else text)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


def raw_flow_key(*, instance_id: str, first_interval_start_ms: int, seq: int, prefix: str = "") -> str:
    """Object key of a raw flow file (contracts §1), relative to the raw root.

    ``dt``/``hr`` come from the earliest interval start in the file.
    """
    if not _INSTANCE_ID_OK.match(instance_id):
        raise ValueError(
            f"instance_id {instance_id!r} cannot be used in an object key: "
            "use letters, digits, '.', '_', ':' or '-' (at most 128 characters)"
        )
    when = datetime.fromtimestamp(first_interval_start_ms / 1000, tz=timezone.utc)
    key = (
        f"{RAW_FLOWS_PREFIX}/dt={when:%Y-%m-%d}/hr={when:%H}/instance={instance_id}/"
        f"{first_interval_start_ms}-{seq}.parquet"
    )
    return f"{prefix.rstrip('/')}/{key}" if prefix else key


def ip_events_key(*, published_day_ms: int, name: str, prefix: str = "") -> str:
    """Object key of an IP-assignment event file (contracts §2)."""
    when = datetime.fromtimestamp(published_day_ms / 1000, tz=timezone.utc)
    key = f"{IP_EVENTS_PREFIX}/dt={when:%Y-%m-%d}/{name}"
    return f"{prefix.rstrip('/')}/{key}" if prefix else key
