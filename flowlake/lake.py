"""The lake: every table's path, schema and layout in one place, bound to one storage root.

Contracts §3 names the shared tables; the rest are flowlake's own. Each
:class:`Table` says where it lives under the root, its schema when it must
exist before its first write (``ddl``), how it is partitioned, and which
column a run's span replaces (``span_column``: ``interval_start_ms`` and
``valid_from_ms`` tables are replaced over the records' span, ``hour_start_ms``
over its whole hours, ``day`` over its whole days; ``None`` = rewritten whole).

A :class:`Lake` binds the catalog to a root (a folder or ``s3://bucket/prefix``):
Spark paths, Arrow file access and the writer lock all go through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from flowlake.contracts import IP_EVENT_DDL, RAW_FLOW_DDL
from flowlake.storage import Location, join, resolve, spark_path

INTERVAL_START = "interval_start_ms"
VALID_FROM = "valid_from_ms"
HOUR_START = "hour_start_ms"
DAY = "day"


STATS_COLUMNS_PROPERTY = "delta.dataSkippingStatsColumns"
# what runs, dedupe and analysts filter the record tables on: time, the file, the instance, the addresses
# (and for silver the workloads on both sides, its Z-order, and how a record was attributed)
RECORD_STATS = ("interval_start_ms", "first_start_ms", "source_file", "instance_id", "local_workload", "local_ip",
                "remote_ip")
ATTRIBUTED_STATS = RECORD_STATS + ("local_workload_resolved", "remote_workload", "remote_attribution")


def ddl_columns(ddl: str) -> list[str]:
    """The column names of a DDL schema string: ``"ip string, ts bigint"`` -> ``["ip", "ts"]``."""
    return [c.split()[0] for c in ddl.split(", ")]


@dataclass(frozen=True)
class Table:
    """One Delta table under the lake root."""

    name: str  # path under the root, e.g. "silver/flows_attributed"
    span_column: str | None = None
    partition_by: tuple[str, ...] = ()
    ddl: str | None = None  # schema to read as empty before the first write
    # the columns Delta keeps min/max statistics on (data skipping, Z-ordering); empty: Delta's default,
    # the first 32. Statistics cost the writer per row and column: the wide record tables name theirs.
    stats_columns: tuple[str, ...] = ()

    @property
    def properties(self) -> dict[str, str]:
        """The Delta table properties flowlake sets on this table (at creation, and by maintenance)."""
        return {STATS_COLUMNS_PROPERTY: ",".join(self.stats_columns)} if self.stats_columns else {}

    @property
    def layer(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def columns(self) -> list[str]:
        """The column names of ``ddl``."""
        if self.ddl is None:
            raise ValueError(f"table {self.name} has no ddl: its columns are whatever was written")
        return ddl_columns(self.ddl)


BRONZE_FLOWS = Table("bronze/flows", INTERVAL_START, ("dt",), RAW_FLOW_DDL + ", source_file string, dt date",
                     stats_columns=RECORD_STATS)
BRONZE_IP_EVENTS = Table("bronze/ip_events", None, (), IP_EVENT_DDL + ", source_file string")
INGESTED_FILES = Table("_meta/ingested_files", ddl=(
    "source_file string, kind string, status string, reason string, rows bigint, "
    "min_time_ms bigint, max_time_ms bigint, run_id string, processed_at_ms bigint"))
QUARANTINE_FILES = Table("quarantine/files", ddl=(
    "source_file string, kind string, reason string, quarantine_path string, run_id string, detected_at_ms bigint, "
    "copy_error string"))
RUNS = Table("_meta/runs", ddl=(
    "run_id string, start_ms bigint, end_ms bigint, recomputed_from_ms bigint, flow_files bigint, "
    "flow_rows bigint, event_files bigint, quarantined_files bigint, attributed_rows bigint, "
    "started_at_ms bigint, finished_at_ms bigint, stages array<string>"))
IP_OWNERSHIP = Table("silver/ip_ownership", VALID_FROM, (), (
    "ip string, workload string, valid_from_ms bigint, valid_to_ms bigint, source string, "
    "instance_id string, kind string, region string, availability_zone string"))
OWNERSHIP_CONFLICTS = Table("silver/ip_ownership_conflicts", VALID_FROM, (),
                            "ip string, valid_from_ms bigint, valid_to_ms bigint, owners array<string>")
OWNERSHIP_DOUBTS = Table("silver/ip_ownership_doubts", VALID_FROM, (),
                         "ip string, valid_from_ms bigint, valid_to_ms bigint, reason string")
# one row per UTC hour: the tracker lag learned from that hour's lookback, and the margin its cuts use
TRACKER_LAG = Table("_meta/tracker_lag", HOUR_START, (), (
    "hour_start_ms bigint, pairs bigint, quantile double, lag_quantile_ms bigint, lag_max_ms bigint, "
    "margin_ms bigint, margin_source string, lifetime_quantile double, lifetime_quantile_ms bigint, "
    "run_id string, computed_at_ms bigint"))
# what the learned quantities need from bronze, kept per UTC hour so a run reads its lookback from
# these small tables, not from bronze: lag pairs by the hour they are known, ports seen by record hour
TRACKER_LAG_PAIRS = Table("silver/tracker_lag_pairs", HOUR_START, (), (
    "hour_start_ms bigint, ip string, workload string, instance_id string, assign_ms bigint, "
    "first_heartbeat_ms bigint, lag_ms bigint, known_ms bigint"))
# (peer: the workload on the other side where a heartbeat range names it, else null)
PORTS_SEEN = Table("silver/ports_seen", HOUR_START, (),
                   "hour_start_ms bigint, workload string, direction string, port int, peer string")
# the tracker's holdings before heartbeats cut them: the state a run starts its event ranges from
IP_EVENT_HOLDINGS = Table("silver/ip_event_holdings", VALID_FROM, (), (
    "ip string, workload string, instance_id string, kind string, region string, availability_zone string, "
    "valid_from_ms bigint, valid_to_ms bigint"))
CAPTURE_COMPLETENESS = Table("silver/capture_completeness", ddl=(
    "instance_id string, hour_start_ms bigint, files bigint, files_without_metadata bigint, late_files bigint, "
    "gaps bigint, missing_files bigint, restarts bigint, intervals_covered bigint, drops_conn_map_full bigint, "
    "drops_flow_map_full bigint, drops_ringbuf_full bigint, drops_spool_evicted_files bigint, "
    "drops_untracked_closes bigint, drops_lost bigint, records bigint, seqs array<bigint>, run_ids array<string>, "
    "missing_seq_ranges array<string>, last_seq bigint, last_run_id string"))  # replaced per (instance, hour)
FLOWS_ATTRIBUTED = Table("silver/flows_attributed", INTERVAL_START, ("dt",), stats_columns=ATTRIBUTED_STATS)
APP_DEPENDENCIES = Table("gold/app_dependencies", HOUR_START)
TRAFFIC_HOURLY = Table("gold/traffic_hourly", HOUR_START)
TRAFFIC_DAILY = Table("gold/traffic_daily", DAY)
LINK_HOURLY = Table("gold/link_hourly", HOUR_START)
CROSSZONE_COST = Table("gold/crosszone_cost", DAY)
POLICY_BREACHES = Table("gold/policy_breaches", HOUR_START)
SEGMENTS = Table("gold/segments", ddl="workload string, segment string, segment_size int, "
                 "previous_segment string, degree double")
SEGMENT_QUALITY = Table("gold/segment_quality")
ALLOW_RULES = Table("gold/allow_rules")
PATH_VALIDATION = Table("gold/path_validation")
CAPACITY_FORECAST = Table("gold/capacity_forecast")
CAPACITY_FORECAST_SUMMARY = Table("gold/capacity_forecast_summary")

TABLES: dict[str, Table] = {t.name: t for t in (
    BRONZE_FLOWS, BRONZE_IP_EVENTS, INGESTED_FILES, QUARANTINE_FILES, RUNS, IP_OWNERSHIP, OWNERSHIP_CONFLICTS,
    OWNERSHIP_DOUBTS, TRACKER_LAG, TRACKER_LAG_PAIRS, PORTS_SEEN, IP_EVENT_HOLDINGS, CAPTURE_COMPLETENESS,
    FLOWS_ATTRIBUTED, APP_DEPENDENCIES, TRAFFIC_HOURLY, TRAFFIC_DAILY, LINK_HOURLY, CROSSZONE_COST, POLICY_BREACHES,
    SEGMENTS, SEGMENT_QUALITY, ALLOW_RULES, PATH_VALIDATION, CAPACITY_FORECAST, CAPACITY_FORECAST_SUMMARY,
)}
LOCK_FILE = "_meta/writer.lock"
QUALITY_REPORTS = "_quality"
QUARANTINE_COPIES = "quarantine/raw"


def table(name: str) -> Table:
    """The catalog entry for ``name`` (e.g. ``gold/segments``); a clear error for unknown names."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"no table {name!r} in the lake catalog; known: {', '.join(sorted(TABLES))}") from None


@dataclass(frozen=True)
class Lake:
    """A lake root bound to its storage: table paths for Spark, files for Arrow and the lock."""

    root: str

    @cached_property
    def location(self) -> Location:
        """The root's filesystem (local or S3) and path inside it, for Arrow reads and the lock."""
        return resolve(self.root)

    def path(self, t: Table | str) -> str:
        """What to hand Spark for a table (or any path under the root)."""
        name = t.name if isinstance(t, Table) else t
        return spark_path(join(self.root, name))

    def file(self, *parts: str) -> str:
        """A root-relative path as a root URI (for quality reports, quarantine copies, the lock)."""
        return join(self.root, *parts)

    def quarantine_copy_root(self, run_id: str) -> str:
        return self.file(QUARANTINE_COPIES, run_id)

    # the tables the jobs name most often
    bronze_flows = property(lambda self: self.path(BRONZE_FLOWS))
    bronze_ip_events = property(lambda self: self.path(BRONZE_IP_EVENTS))
    ingested_files = property(lambda self: self.path(INGESTED_FILES))
    quarantine_files = property(lambda self: self.path(QUARANTINE_FILES))
    runs = property(lambda self: self.path(RUNS))
    ip_ownership = property(lambda self: self.path(IP_OWNERSHIP))
    ownership_conflicts = property(lambda self: self.path(OWNERSHIP_CONFLICTS))
    flows_attributed = property(lambda self: self.path(FLOWS_ATTRIBUTED))
    app_dependencies = property(lambda self: self.path(APP_DEPENDENCIES))
