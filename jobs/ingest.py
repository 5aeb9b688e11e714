"""ingest: raw flow files and IP-event files into bronze, each file exactly once.

A file that cannot be read, breaks the key layout, has the wrong schema
version or types, or holds bad values is not published: it is copied to
``quarantine/raw/<run_id>/`` and listed in ``quarantine/files`` with the
reason, and the run goes on with the rest.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from flowlake.contracts import (
    ACTION_ASSIGN, ACTION_UNASSIGN, DIRECTION_INBOUND, DIRECTION_OUTBOUND, IP_EVENT_DDL, IP_EVENTS_PREFIX,
    PROTOCOL_TCP, RAW_FLOW_DDL, RAW_FLOW_SCHEMA, RAW_FLOWS_PREFIX, SCHEMA_VERSION, SCHEMA_VERSION_KEY,
)
from flowlake.jobs import lake as lk
from flowlake.jobs.ips import canonical_ip_col
from flowlake.storage import Location, resolve

log = logging.getLogger(__name__)

KIND_FLOWS = "flows"
KIND_EVENTS = "ip_events"
RAW_KEY_RE = re.compile(
    r"^flows/v1/dt=(\d{4}-\d{2}-\d{2})/hr=([01]\d|2[0-3])/instance=[A-Za-z0-9][A-Za-z0-9._:-]{0,127}/\d+-\d+\.parquet$"
)
EVENT_KEY_RE = re.compile(r"^ip_events/v1/dt=\d{4}-\d{2}-\d{2}/[A-Za-z0-9][A-Za-z0-9._=-]*\.(parquet|jsonl\.gz)$")
FILES_DDL = (
    "source_file string, kind string, status string, reason string, rows bigint, "
    "min_time_ms bigint, max_time_ms bigint, run_id string, processed_at_ms bigint"
)
QUARANTINE_DDL = "source_file string, kind string, reason string, quarantine_path string, run_id string, detected_at_ms bigint"
STATUS_INGESTED = "ingested"
STATUS_QUARANTINED = "quarantined"
FOOTER_WORKERS = 16
NOT_NULL_FLOW_COLUMNS = [f.name for f in RAW_FLOW_SCHEMA if not f.nullable]
COUNTER_COLUMNS = ["connections_opened", "connections_closed", "bytes_sent", "bytes_received",
                   "segments_sent", "segments_received", "retransmits"]


@dataclass
class IngestResult:
    """What one ingest did: counts, and for each quarantined file where it went and why."""

    kind: str
    files_seen: int = 0
    files_ingested: int = 0
    rows_ingested: int = 0
    quarantined: list[dict] = field(default_factory=list)
    min_time_ms: int | None = None  # earliest interval start / event time among new rows

    def summary(self) -> str:
        text = (f"{self.kind}: {self.files_ingested} new file(s), {self.rows_ingested} row(s) ingested, "
                f"{len(self.quarantined)} file(s) quarantined")
        for q in self.quarantined:
            text += f"\n  quarantined {q['source_file']}: {q['reason']} -> {q['quarantine_path']}"
        return text


# --------------------------------------------------------------------------- listing and file checks

def _days(start_ms: int, end_ms: int) -> list[str]:
    day = datetime.fromtimestamp(start_ms / 1000, tz=timezone.utc).date()
    last = datetime.fromtimestamp(max(end_ms - 1, start_ms) / 1000, tz=timezone.utc).date()
    out = []
    while day <= last:
        out.append(day.isoformat())
        day += timedelta(days=1)
    return out


def list_files(loc: Location, prefixes: Iterable[str]) -> list[str]:
    """Relative keys of all files under the given prefixes of a root (missing prefixes are empty)."""
    keys: list[str] = []
    for prefix in prefixes:
        base = f"{loc.path}/{prefix}"
        infos = loc.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        keys += [i.path[len(loc.path) + 1:] for i in infos if i.type == pafs.FileType.File]
    return sorted(keys)


def check_parquet_footer(loc: Location, key: str, *, expected: pa.Schema, check_version: bool) -> tuple[str | None, int]:
    """(reason or None, row count) from a Parquet file's footer alone."""
    try:
        with loc.fs.open_input_file(f"{loc.path}/{key}") as f:
            meta = pq.ParquetFile(f).metadata
            schema = meta.schema.to_arrow_schema()
    except Exception as err:  # noqa: BLE001 - any unreadable file is quarantined with the reason
        return f"not a readable Parquet file: {type(err).__name__}: {str(err)[:200]}", 0
    if check_version:
        kv = meta.metadata or {}
        version = kv.get(SCHEMA_VERSION_KEY)
        if version != SCHEMA_VERSION.encode():
            shown = version.decode(errors="replace") if version else "missing"
            return f"schema version {shown} (expected {SCHEMA_VERSION} in {SCHEMA_VERSION_KEY.decode()})", 0
    for want in expected:
        if want.name not in schema.names:
            return f"column {want.name} is missing", 0
        got = schema.field(want.name).type
        if got != want.type:
            return f"column {want.name} is {got}, the contract says {want.type}", 0
    return None, meta.num_rows


def check_gzip(loc: Location, key: str) -> str | None:
    """Reason a .gz file cannot be decompressed, or None."""
    try:
        with loc.fs.open_input_stream(f"{loc.path}/{key}", compression=None) as raw, gzip.open(raw) as gz:
            while gz.read(1 << 20):
                pass
    except Exception as err:  # noqa: BLE001
        return f"not a readable gzip file: {type(err).__name__}: {str(err)[:200]}"
    return None


# --------------------------------------------------------------------------- row checks (pure)

def _first_reason(checks: list[tuple[Column, str]]) -> Column:
    expr = F.lit(None).cast("string")
    for bad, reason in reversed(checks):
        expr = F.when(bad, F.lit(reason)).otherwise(expr)
    return expr


def flow_row_reason(*, now_ms: int, max_future_skew_ms: int) -> Column:
    """Why a raw flow row is bad (null when it is good). Expects _local_ip_c/_remote_ip_c."""
    checks: list[tuple[Column, str]] = [
        (_any([F.col(c).isNull() for c in NOT_NULL_FLOW_COLUMNS]), "null in a not-null column"),
        (F.col("_local_ip_c").isNull(), "unparseable local_ip"),
        (F.col("_remote_ip_c").isNull(), "unparseable remote_ip"),
        (_any([F.col(c) < 0 for c in COUNTER_COLUMNS]), "negative counter"),
        (F.col("interval_start_ms") < 0, "negative timestamp"),
        (F.col("interval_end_ms") <= F.col("interval_start_ms"), "interval_end_ms not after interval_start_ms"),
        ((F.col("first_start_ms") < F.col("interval_start_ms")) | (F.col("first_start_ms") >= F.col("interval_end_ms")),
         "first_start_ms outside its interval"),
        (F.col("interval_start_ms") > F.lit(now_ms + max_future_skew_ms), "timestamp in the future"),
        (~F.col("direction").isin(DIRECTION_OUTBOUND, DIRECTION_INBOUND), "unknown direction"),
        (F.col("protocol") != PROTOCOL_TCP, "protocol is not tcp"),
        (_any([(F.col(c) < 0) | (F.col(c) > 65535) for c in ("local_port", "remote_port")]), "port out of range"),
    ]
    return _first_reason(checks)


def event_row_reason() -> Column:
    """Why an IP-event row is bad (null when it is good). Expects _ip_c."""
    return _first_reason([
        (_any([F.col(c).isNull() for c in ("event_ms", "published_ms", "ip", "action")]), "null in a not-null column"),
        (F.col("_ip_c").isNull(), "unparseable ip"),
        (~F.col("action").isin(ACTION_ASSIGN, ACTION_UNASSIGN), "unknown action"),
        ((F.col("action") == ACTION_ASSIGN) & F.col("workload").isNull(), "assign without workload"),
        ((F.col("event_ms") < 0) | (F.col("published_ms") < 0), "negative timestamp"),
    ])


def _any(conds: list[Column]) -> Column:
    out = F.lit(False)
    for c in conds:
        out = out | F.coalesce(c, F.lit(False))
    return out


def validate_flows(raw: DataFrame, *, now_ms: int, max_future_skew_ms: int) -> DataFrame:
    """Raw rows (+ source_file) with canonical IPs, ``dt`` and ``_reason`` (null = good row)."""
    return (
        raw.withColumn("_local_ip_c", canonical_ip_col("local_ip"))
        .withColumn("_remote_ip_c", canonical_ip_col("remote_ip"))
        .withColumn("_reason", flow_row_reason(now_ms=now_ms, max_future_skew_ms=max_future_skew_ms))
        .withColumn("local_ip", F.col("_local_ip_c"))
        .withColumn("remote_ip", F.col("_remote_ip_c"))
        .drop("_local_ip_c", "_remote_ip_c")
        .withColumn("dt", F.to_date(F.timestamp_millis("interval_start_ms")))
    )


def validate_events(raw: DataFrame) -> DataFrame:
    """Event rows (+ source_file) with canonical ip and ``_reason``."""
    return (
        raw.withColumn("_ip_c", canonical_ip_col("ip"))
        .withColumn("_reason", event_row_reason())
        .withColumn("ip", F.col("_ip_c"))
        .drop("_ip_c")
    )


def file_stats(validated: DataFrame, *, time_col: str) -> DataFrame:
    """One row per source file: rows read, bad rows, first reason, min/max time."""
    return validated.groupBy("source_file").agg(
        F.count(F.lit(1)).alias("rows"),
        F.count("_reason").alias("bad_rows"),
        F.min("_reason").alias("reason"),
        F.min(time_col).alias("min_time_ms"),
        F.max(time_col).alias("max_time_ms"),
    )


# --------------------------------------------------------------------------- running

def _source_file_col() -> Column:
    path = F.regexp_replace(F.col("_metadata.file_path"), r"^file:(//)?", "")
    return F.url_decode(path)


def _already_processed(spark: SparkSession, lake: lk.Lake, kind: str) -> set[str]:
    files = lk.read(spark, lake.ingested_files, ddl=FILES_DDL)
    return {r[0] for r in files.where(F.col("kind") == kind).select("source_file").toLocalIterator()}


def _quarantine_copy(loc: Location, key: str, dest_root: str) -> str:
    dest = resolve(dest_root)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._=-]", "_", key.rsplit("/", 1)[-1])[-100:] or "file"
    target = f"{dest.path}/{digest}-{name}"
    dest.fs.create_dir(dest.path, recursive=True)
    try:
        pafs.copy_files(f"{loc.path}/{key}", target, source_filesystem=loc.fs, destination_filesystem=dest.fs)
    except Exception as err:  # noqa: BLE001 - the log still names the original
        log.warning("could not copy %s to quarantine: %s", key, err)
        return f"(copy failed: {err}) original at {loc.uri(f'{loc.path}/{key}')}"
    return dest.uri(target)


def ingest(
    spark: SparkSession,
    *,
    kind: str,
    raw_root: str,
    lake: lk.Lake,
    keys: list[str],
    run_id: str,
    now_ms: int | None = None,
    max_future_skew_ms: int = 3_600_000,
) -> IngestResult:
    """Ingest the given new file keys of one kind into bronze; quarantine the bad ones."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    loc = resolve(raw_root)
    result = IngestResult(kind=kind, files_seen=len(keys))
    if not keys:
        return result
    uri = {k: loc.uri(f"{loc.path}/{k}") for k in keys}
    bad: dict[str, str] = {}
    expected_rows: dict[str, int] = {}
    key_re = RAW_KEY_RE if kind == KIND_FLOWS else EVENT_KEY_RE

    def check(key: str) -> tuple[str, str | None, int]:
        if ".." in key.split("/") or not key_re.match(key):
            return key, f"key does not follow the contract layout ({RAW_FLOWS_PREFIX if kind == KIND_FLOWS else IP_EVENTS_PREFIX}/...)", 0
        if key.endswith(".parquet"):
            reason, rows = check_parquet_footer(
                loc, key, expected=RAW_FLOW_SCHEMA if kind == KIND_FLOWS else _event_arrow_schema(),
                check_version=kind == KIND_FLOWS,
            )
            return key, reason, rows
        return key, check_gzip(loc, key), -1

    with ThreadPoolExecutor(FOOTER_WORKERS) as pool:
        for key, reason, rows in pool.map(check, keys):
            if reason:
                bad[key] = reason
            else:
                expected_rows[key] = rows

    good_keys = [k for k in keys if k not in bad]
    validated = None
    if good_keys:
        spark.conf.set("spark.sql.files.ignoreCorruptFiles", "true")  # a corrupt page shows as a row-count gap
        if kind == KIND_FLOWS:
            raw = spark.read.schema(RAW_FLOW_DDL).parquet(*[loc.spark_uri(f"{loc.path}/{k}") for k in good_keys])
            validated = validate_flows(raw.withColumn("source_file", _source_file_col()), now_ms=now_ms,
                                       max_future_skew_ms=max_future_skew_ms)
            time_col = "interval_start_ms"
        else:
            parts = []
            pq_keys = [k for k in good_keys if k.endswith(".parquet")]
            js_keys = [k for k in good_keys if not k.endswith(".parquet")]
            if pq_keys:
                parts.append(spark.read.schema(IP_EVENT_DDL).parquet(*[loc.spark_uri(f"{loc.path}/{k}") for k in pq_keys]))
            if js_keys:
                parts.append(
                    spark.read.schema(IP_EVENT_DDL + ", _corrupt string")
                    .option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", "_corrupt")
                    .json([loc.spark_uri(f"{loc.path}/{k}") for k in js_keys])
                    .withColumn("_bad_json", F.col("_corrupt").isNotNull()).drop("_corrupt")
                )
            parts = [p.withColumn("source_file", _source_file_col()) for p in parts]
            parts = [p if "_bad_json" in p.columns else p.withColumn("_bad_json", F.lit(False)) for p in parts]
            raw = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
            validated = validate_events(raw).withColumn(
                "_reason", F.when(F.col("_bad_json"), F.lit("malformed JSON line")).otherwise(F.col("_reason"))
            ).drop("_bad_json")
            time_col = "event_ms"
        validated = validated.persist()
        stats = {r["source_file"]: r for r in file_stats(validated, time_col=time_col).collect()}
        for key in good_keys:
            s = stats.get(uri[key])
            want = expected_rows.get(key, -1)
            if s is not None and s["bad_rows"]:
                bad[key] = f"{s['bad_rows']} bad row(s), e.g. {s['reason']}"
            elif want >= 0 and (s["rows"] if s is not None else 0) != want:
                bad[key] = f"read {s['rows'] if s is not None else 0} of {want} rows: corrupt data pages"

    # 1) quarantine: copies and log, keyed by source file (a re-run rewrites the same rows)
    detected = int(time.time() * 1000)
    qrows = []
    for key, reason in sorted(bad.items()):
        dest = _quarantine_copy(loc, key, lake.quarantine_copy_root(run_id))
        qrows.append({"source_file": uri[key], "kind": kind, "reason": reason, "quarantine_path": dest,
                      "run_id": run_id, "detected_at_ms": detected})
    result.quarantined = qrows
    if qrows:
        qdf = spark.createDataFrame([tuple(r.values()) for r in qrows], QUARANTINE_DDL)
        lk.replace_where(qdf, lake.quarantine_files, predicate=lk.sql_in("source_file", [r["source_file"] for r in qrows]))
        log.warning("quarantined %d %s file(s) under %s", len(qrows), kind, lake.quarantine_copy_root(run_id))

    # 2) bronze: rows of the good files, replacing any rows of the same files (idempotent re-run)
    ok_keys = [k for k in good_keys if k not in bad]
    file_rows = []
    if ok_keys:
        ok_uris = [uri[k] for k in ok_keys]
        rows = validated.where(F.col("source_file").isin(ok_uris)).drop("_reason")
        target = lake.bronze_flows if kind == KIND_FLOWS else lake.bronze_ip_events
        lk.replace_where(rows, target, predicate=lk.sql_in("source_file", ok_uris),
                         partition_by=["dt"] if kind == KIND_FLOWS else None)
        for k in ok_keys:
            s = stats.get(uri[k])
            file_rows.append((uri[k], kind, STATUS_INGESTED, None, int(s["rows"]) if s else 0,
                              s["min_time_ms"] if s else None, s["max_time_ms"] if s else None, run_id, detected))
        result.files_ingested = len(ok_keys)
        result.rows_ingested = sum(r[4] for r in file_rows)
        mins = [r[5] for r in file_rows if r[5] is not None]
        result.min_time_ms = min(mins) if mins else None
    if validated is not None:
        validated.unpersist()

    # 3) the processed-files log, last: a file is marked done only once its rows are in
    file_rows += [(uri[k], kind, STATUS_QUARANTINED, bad[k], None, None, None, run_id, detected) for k in bad]
    fdf = spark.createDataFrame(file_rows, FILES_DDL)
    lk.replace_where(fdf, lake.ingested_files, predicate=lk.sql_in("source_file", [r[0] for r in file_rows]))
    return result


def _event_arrow_schema() -> pa.Schema:
    from flowlake.contracts import IP_EVENT_SCHEMA

    return IP_EVENT_SCHEMA


def new_flow_keys(spark: SparkSession, *, raw_root: str, lake: lk.Lake, start_ms: int, end_ms: int,
                  lookback_hours: int) -> list[str]:
    """Raw flow files under the days the window (and late-arrival lookback) touches, not yet processed."""
    loc = resolve(raw_root)
    days = _days(start_ms - lookback_hours * 3_600_000, end_ms + 3_600_000)
    keys = list_files(loc, [f"{RAW_FLOWS_PREFIX}/dt={d}" for d in days])
    done = _already_processed(spark, lake, KIND_FLOWS)
    return [k for k in keys if loc.uri(f"{loc.path}/{k}") not in done]


def new_event_keys(spark: SparkSession, *, raw_root: str, lake: lk.Lake) -> list[str]:
    """IP-event files not yet processed (all days: events for old days arrive late)."""
    loc = resolve(raw_root)
    keys = list_files(loc, [IP_EVENTS_PREFIX])
    done = _already_processed(spark, lake, KIND_EVENTS)
    return [k for k in keys if loc.uri(f"{loc.path}/{k}") not in done]
