"""ingest: raw flow files and IP-event files into bronze, each file exactly once.

A file that cannot be read, breaks the key layout, has the wrong schema
version or types, or holds bad values is not published: it is copied to
``quarantine/raw/<run_id>/`` and listed in ``quarantine/files`` with the
reason, and the run goes on with the rest.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from flowlake.contracts import (
    ACTION_ASSIGN, ACTION_UNASSIGN, DIRECTION_INBOUND, DIRECTION_OUTBOUND, IP_EVENT_DDL, IP_EVENT_SCHEMA,
    IP_EVENTS_PREFIX,
    PROTOCOL_TCP, RAW_FLOW_DDL, RAW_FLOW_SCHEMA, RAW_FLOWS_PREFIX, SCHEMA_VERSION, SCHEMA_VERSION_KEY,
)
from flowlake.jobs import lake as lk
from flowlake.jobs.ips import canonical_or_none
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
FILES_PER_TASK = 64
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


# --------------------------------------------------------------------------- listing and reading files

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


def key_reason(key: str, *, kind: str) -> str | None:
    """Why an object key breaks the contract's layout (or tries to leave the prefix), or None."""
    key_re = RAW_KEY_RE if kind == KIND_FLOWS else EVENT_KEY_RE
    if ".." in key.split("/") or "\\" in key or not key_re.match(key):
        prefix = RAW_FLOWS_PREFIX if kind == KIND_FLOWS else IP_EVENTS_PREFIX
        return f"key does not follow the contract layout ({prefix}/dt=YYYY-MM-DD/...)"
    return None


def read_contract_file(loc: Location, key: str, *, kind: str) -> tuple[pa.Table | None, str | None]:
    """Read one raw file into the contract's Arrow schema: (table, None) or (None, reason)."""
    reason = key_reason(key, kind=kind)
    if reason:
        return None, reason
    schema = RAW_FLOW_SCHEMA if kind == KIND_FLOWS else IP_EVENT_SCHEMA
    path = f"{loc.path}/{key}"
    try:
        if key.endswith(".parquet"):
            with loc.fs.open_input_file(path) as f:
                pf = pq.ParquetFile(f)
                if kind == KIND_FLOWS:
                    version = (pf.metadata.metadata or {}).get(SCHEMA_VERSION_KEY)
                    if version != SCHEMA_VERSION.encode():
                        shown = version.decode(errors="replace") if version else "missing"
                        return None, f"schema version {shown} (expected {SCHEMA_VERSION} in {SCHEMA_VERSION_KEY.decode()})"
                table = pf.read()
        else:
            with loc.fs.open_input_stream(path, compression="gzip") as stream:
                data = stream.read()
            if not data.strip():
                return pa.Table.from_pylist([], schema=schema), None
            table = pajson.read_json(pa.BufferReader(data), parse_options=pajson.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"))
    except Exception as err:  # noqa: BLE001 - any unreadable file is quarantined with the reason
        what = "Parquet" if key.endswith(".parquet") else "gzip JSON Lines"
        return None, f"not a readable {what} file: {type(err).__name__}: {str(err)[:200]}"
    for want in schema:
        if want.name not in table.column_names:
            return None, f"column {want.name} is missing"
        got = table.schema.field(want.name).type
        if got != want.type and not (got == pa.null()):
            return None, f"column {want.name} is {got}, the contract says {want.type}"
    return table.select(schema.names).cast(schema.remove_metadata()), None


def _canonical_array(col: pa.ChunkedArray) -> pa.Array:
    values = col.to_pylist()
    memo = {v: canonical_or_none(v) for v in set(values)}
    return pa.array([memo[v] for v in values], type=pa.string())


def reader_ddl(kind: str) -> str:
    """Schema of :func:`read_files`' rows."""
    base = RAW_FLOW_DDL if kind == KIND_FLOWS else IP_EVENT_DDL
    ips = "_local_ip_c string, _remote_ip_c string" if kind == KIND_FLOWS else "_ip_c string"
    return f"{base}, source_file string, {ips}, _file_reason string"


def read_files(spark: SparkSession, *, raw_root: str, keys: list[str], kind: str) -> DataFrame:
    """All rows of the given raw files, read in Spark tasks with pyarrow.

    Each file is read whole by one task: its rows come with ``source_file`` and
    canonical IPs; a file that cannot be read gives one row with only
    ``source_file`` and ``_file_reason``. Reading in tasks costs about a
    millisecond per small file, where Spark's own Parquet scan costs ten.
    """
    ddl = reader_ddl(kind)
    schema = RAW_FLOW_SCHEMA if kind == KIND_FLOWS else IP_EVENT_SCHEMA
    ip_cols = ["local_ip", "remote_ip"] if kind == KIND_FLOWS else ["ip"]
    out_names = [c.split()[0] for c in ddl.split(", ")]

    def read_batches(batches):
        loc = resolve(raw_root)
        for batch in batches:
            for key in batch.column("key").to_pylist():
                table, reason = read_contract_file(loc, key, kind=kind)
                src = loc.uri(f"{loc.path}/{key}")
                if table is None:
                    cols = {n: pa.nulls(1, schema.field(n).type if n in schema.names else pa.string())
                            for n in out_names}
                    cols.update(source_file=pa.array([src]), _file_reason=pa.array([reason]))
                    yield pa.RecordBatch.from_arrays([cols[n] for n in out_names], names=out_names)
                    continue
                n = table.num_rows
                extra = [pa.array([src] * n, type=pa.string())]
                extra += [_canonical_array(table.column(c)) for c in ip_cols]
                extra += [pa.nulls(n, type=pa.string())]
                arrays = [table.column(c).combine_chunks() for c in schema.names] + extra
                yield pa.RecordBatch.from_arrays(arrays, names=out_names)

    partitions = max(1, min(len(keys) // FILES_PER_TASK + 1, spark.sparkContext.defaultParallelism * 4))
    keys_df = spark.createDataFrame([(k,) for k in keys], "key string").repartition(partitions)
    return keys_df.mapInArrow(read_batches, ddl)


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
    """Reader rows (:func:`reader_ddl`) with canonical IPs, ``dt`` and ``_reason`` (null = good row)."""
    return (
        raw.withColumn("_reason", F.coalesce(
            "_file_reason", flow_row_reason(now_ms=now_ms, max_future_skew_ms=max_future_skew_ms)))
        .withColumn("local_ip", F.col("_local_ip_c"))
        .withColumn("remote_ip", F.col("_remote_ip_c"))
        .drop("_local_ip_c", "_remote_ip_c", "_file_reason")
        .withColumn("dt", F.to_date(F.timestamp_millis("interval_start_ms")))
    )


def validate_events(raw: DataFrame) -> DataFrame:
    """Reader rows (:func:`reader_ddl`) with canonical ip and ``_reason`` (null = good row)."""
    return (
        raw.withColumn("_reason", F.coalesce("_file_reason", event_row_reason()))
        .withColumn("ip", F.col("_ip_c"))
        .drop("_ip_c", "_file_reason")
    )


def file_stats(validated: DataFrame, *, time_col: str) -> DataFrame:
    """One row per source file: rows, bad rows, first reason, min/max time (a file's own failure
    is one row with only a reason: rows counts data rows, not that one)."""
    return validated.groupBy("source_file").agg(
        F.count(time_col).alias("rows"),
        F.count("_reason").alias("bad_rows"),
        F.min("_reason").alias("reason"),
        F.min(time_col).alias("min_time_ms"),
        F.max(time_col).alias("max_time_ms"),
    )


# --------------------------------------------------------------------------- running

def _processed_files(spark: SparkSession, lake: lk.Lake, kind: str) -> DataFrame:
    """The processed-files log for one kind (one entry per file)."""
    files = lk.read(spark, lake.ingested_files, ddl=FILES_DDL).where(F.col("kind") == kind)
    return files.dropDuplicates(["source_file"])


def _already_processed(spark: SparkSession, lake: lk.Lake, kind: str) -> set[str]:
    return {r[0] for r in _processed_files(spark, lake, kind).select("source_file").toLocalIterator()}


def _quarantine_copy(loc: Location, key: str, dest_root: str) -> str:
    dest = resolve(dest_root)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._=-]", "_", key.rsplit("/", 1)[-1])[-100:] or "file"
    target = f"{dest.path}/{digest}-{name}"
    try:
        dest.fs.create_dir(dest.path, recursive=True)
        pafs.copy_files(f"{loc.path}/{key}", target, source_filesystem=loc.fs, destination_filesystem=dest.fs)
    except Exception as err:  # noqa: BLE001 - the log still names the original
        log.warning("could not copy %s to quarantine: %s", key, err)
        return f"(copy failed: {err}) original at {loc.uri(f'{loc.path}/{key}')}"
    return dest.uri(target)


def _in_bronze(spark: SparkSession, target: str, uris: list[str], *, kind: str) -> set[str]:
    """Which of these files' rows are already in bronze (a run that died before logging them)."""
    if not lk.exists(spark, target) or not uris:
        return set()
    table = lk.read(spark, target)
    if kind == KIND_FLOWS:
        days = sorted({m.group(1) for u in uris if (m := re.search(r"/dt=(\d{4}-\d{2}-\d{2})/", u))})
        if days:  # rows sit in their own day's partition or the next (a file may span midnight)
            last = (datetime.fromisoformat(days[-1]) + timedelta(days=1)).date().isoformat()
            table = table.where((F.col("dt") >= F.lit(days[0]).cast("date")) & (F.col("dt") <= F.lit(last).cast("date")))
    found = table.select("source_file").where(F.col("source_file").isin(uris)).distinct()
    return {r[0] for r in found.toLocalIterator()}


def _bad_reason(stat) -> str:
    if stat["rows"] == 0:
        return stat["reason"]
    return f"{stat['bad_rows']} of {stat['rows']} row(s) bad, e.g. {stat['reason']}"


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
    """Ingest the given new file keys of one kind into bronze; quarantine the bad ones.

    Order of writes, so that a run killed anywhere can simply be re-run:
    quarantine log, bronze rows, then the processed-files log. A file whose
    rows reached bronze but not the log is recognised and not written twice.
    """
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    loc = resolve(raw_root)
    result = IngestResult(kind=kind, files_seen=len(keys))
    if not keys:
        return result
    uri = {k: loc.uri(f"{loc.path}/{k}") for k in keys}
    target = lake.bronze_flows if kind == KIND_FLOWS else lake.bronze_ip_events
    raw = read_files(spark, raw_root=raw_root, keys=keys, kind=kind)
    if kind == KIND_FLOWS:
        validated = validate_flows(raw, now_ms=now_ms, max_future_skew_ms=max_future_skew_ms)
        time_col = "interval_start_ms"
    else:
        validated = validate_events(raw)
        time_col = "event_ms"
    validated = validated.persist()
    stats = {r["source_file"]: r for r in file_stats(validated, time_col=time_col).collect()}
    bad = {k: _bad_reason(stats[uri[k]]) for k in keys if uri[k] in stats and stats[uri[k]]["bad_rows"]}
    detected = int(time.time() * 1000)

    # 1) quarantine: copies and log, keyed by source file (a re-run rewrites the same rows)
    qrows = []
    for key, reason in sorted(bad.items()):
        dest = _quarantine_copy(loc, key, lake.quarantine_copy_root(run_id))
        qrows.append((uri[key], kind, reason, dest, run_id, detected))
    result.quarantined = [dict(zip(["source_file", "kind", "reason", "quarantine_path", "run_id", "detected_at_ms"], r))
                          for r in qrows]
    if qrows:
        lk.replace_where(spark.createDataFrame(qrows, QUARANTINE_DDL), lake.quarantine_files,
                         predicate=lk.sql_in("source_file", [r[0] for r in qrows]))
        log.warning("quarantined %d %s file(s) under %s", len(qrows), kind, lake.quarantine_copy_root(run_id))

    # 2) bronze: rows of the good files not already there
    ok_uris = [uri[k] for k in keys if k not in bad]
    fresh = sorted(set(ok_uris) - _in_bronze(spark, target, ok_uris, kind=kind))
    if fresh:
        rows = validated.where(F.col("source_file").isin(fresh)).drop("_reason")
        lk.append(rows, target, partition_by=["dt"] if kind == KIND_FLOWS else None)
    validated.unpersist()

    file_rows = []
    for u in ok_uris:
        s = stats.get(u)
        file_rows.append((u, kind, STATUS_INGESTED, None, int(s["rows"]) if s else 0,
                          s["min_time_ms"] if s else None, s["max_time_ms"] if s else None, run_id, detected))
    result.files_ingested = len(ok_uris)
    result.rows_ingested = sum(r[4] for r in file_rows)
    mins = [r[5] for r in file_rows if r[5] is not None]
    result.min_time_ms = min(mins) if mins else None

    # 3) the processed-files log, last: a file is marked done only once its rows are in
    file_rows += [(uri[k], kind, STATUS_QUARANTINED, bad[k], None, None, None, run_id, detected) for k in bad]
    lk.append(spark.createDataFrame(file_rows, FILES_DDL), lake.ingested_files)
    return result


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
