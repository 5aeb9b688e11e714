"""ingest: raw flow files and IP-event files into bronze, each file exactly once.

A file that cannot be read, breaks the key layout, has the wrong schema
version or types, holds bad values, or whose rows name another instance than
its key's ``instance=`` folder is not published: it is copied to
``quarantine/raw/<run_id>/`` and listed in ``quarantine/files`` with the
reason (``copy_error`` says why when the copy itself failed), and the run goes
on with the rest.

No record twice: bronze holds each record key (contracts ``RECORD_KEY``) once.
A new file whose records are all in bronze already (or in an earlier file of
the same run, by ``source_file`` order) is quarantined as a duplicate. A
*part-duplicate* file is ingested minus the records already present: the
first copy of a record wins, the skipped copies are counted as
``duplicate_rows`` and named in the processed-files log's ``reason``. The
bronze lookup reads only the ``dt`` partitions the new records fall in.

Honest counts: ``rows_ingested`` is what this run appended. Files whose rows
a run that died before logging them had already appended are logged as
processed but counted apart (``files_recovered``). Quarantine copies no
committed quarantine log entry points to (a run died between copying and
logging) are removed by the next ingest, which says so.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from flowlake.contracts import IP_EVENTS_PREFIX, RAW_FLOWS_PREFIX
from flowlake.jobs.bronze.dedupe import mark_duplicates
from flowlake.jobs.bronze.quarantine import quarantine_copy, remove_orphan_copies
from flowlake.jobs.bronze.rawfiles import KIND_EVENTS, KIND_FLOWS, list_files, read_files
from flowlake.jobs.bronze.validate import file_stats, validate_events, validate_flows
from flowlake.jobs.run import io
from flowlake.lake import BRONZE_FLOWS, BRONZE_IP_EVENTS, INGESTED_FILES, QUARANTINE_FILES, Lake, Table
from flowlake.progress import spark_progress
from flowlake.storage import resolve
from flowlake.timeutil import HOUR_MS, days_between

log = logging.getLogger(__name__)

STATUS_INGESTED = "ingested"
STATUS_QUARANTINED = "quarantined"


@dataclass
class IngestResult:
    """What one ingest did: counts, and for each quarantined file where it went and why."""

    kind: str
    files_seen: int = 0
    files_ingested: int = 0
    rows_ingested: int = 0
    quarantined: list[dict] = field(default_factory=list)
    min_time_ms: int | None = None  # earliest interval start / event time among new rows
    duplicate_rows: int = 0  # records of part-duplicate files skipped: already in bronze (or earlier this run)
    files_recovered: int = 0  # files a dead run had appended but not logged: logged now, not counted again
    orphans_removed: list[str] = field(default_factory=list)  # quarantine copies of runs that never committed

    def summary(self) -> str:
        text = (f"{self.kind}: {self.files_ingested} new file(s), {self.rows_ingested} row(s) ingested, "
                f"{len(self.quarantined)} file(s) quarantined")
        if self.duplicate_rows:
            text += f", {self.duplicate_rows} duplicate record(s) skipped"
        if self.files_recovered:
            text += (f", {self.files_recovered} file(s) already appended by a run that did not finish "
                     "(logged, not counted again)")
        for q in self.quarantined:
            where = q["quarantine_path"] or f"not copied ({q.get('copy_error')})"
            text += f"\n  quarantined {q['source_file']}: {q['reason']} -> {where}"
        if self.orphans_removed:
            text += (f"\n  removed {len(self.orphans_removed)} quarantine cop(ies) left by run(s) that never "
                     "committed: " + ", ".join(self.orphans_removed))
        return text


def _already_processed(spark: SparkSession, lake: Lake, kind: str, uris: list[str]) -> set[str]:
    """Which of these files the processed-files log names already.

    The lookup is a semi-join in Spark: only the matches reach the driver, not the whole log
    (which grows by every file of every run)."""
    if not uris:
        return set()
    found = io.having(io.read(spark, lake, INGESTED_FILES).where(F.col("kind") == kind).select("source_file"),
                      "source_file", uris).distinct()
    return {r[0] for r in found.collect()}


def _in_bronze(spark: SparkSession, lake: Lake, target: Table, uris: list[str], *, kind: str) -> set[str]:
    """Which of these files' rows are already in bronze (a run that died before logging them)."""
    if not io.exists(spark, lake, target) or not uris:
        return set()
    table = io.read(spark, lake, target)
    if kind == KIND_FLOWS:
        days = sorted({m.group(1) for u in uris if (m := re.search(r"/dt=(\d{4}-\d{2}-\d{2})/", u))})
        if days:  # rows sit in their own day's partition or the next (a file may span midnight)
            last = (datetime.fromisoformat(days[-1]) + timedelta(days=1)).date().isoformat()
            table = table.where((F.col("dt") >= F.lit(days[0]).cast("date")) & (F.col("dt") <= F.lit(last).cast("date")))
    found = io.having(table.select("source_file"), "source_file", uris).distinct()
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
    lake: Lake,
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
    if kind == KIND_FLOWS:
        result.orphans_removed = remove_orphan_copies(spark, lake, run_id=run_id)
    if not keys:
        return result
    uri = {k: loc.uri(f"{loc.path}/{k}") for k in keys}
    target = BRONZE_FLOWS if kind == KIND_FLOWS else BRONZE_IP_EVENTS
    raw = read_files(spark, raw_root=raw_root, keys=keys, kind=kind)
    if kind == KIND_FLOWS:
        validated = validate_flows(raw, now_ms=now_ms, max_future_skew_ms=max_future_skew_ms)
        time_col = "interval_start_ms"
    else:
        validated = validate_events(raw)
        time_col = "event_ms"
    validated = validated.persist()
    with spark_progress(spark, total=len(keys), desc=f"  ingest: reading {kind} files", unit="file"):
        stats = {r["source_file"]: r for r in file_stats(validated, time_col=time_col).collect()}
    bad = {k: _bad_reason(stats[uri[k]]) for k in keys if uri[k] in stats and stats[uri[k]]["bad_rows"]}

    # files a run that died before logging them already appended (one append: all of them or none)
    ok_uris = [uri[k] for k in keys if k not in bad]
    recovered = _in_bronze(spark, lake, target, ok_uris, kind=kind)
    fresh = sorted(set(ok_uris) - recovered)
    marked, maybe = mark_duplicates(spark, lake, io.having(validated, "source_file", fresh).drop("_reason"),
                                    target=target)
    if maybe:  # some record may repeat: count per file (rows, duplicates)
        marked = marked.persist()
        dups = {r["source_file"]: (r["rows"], r["dups"]) for r in marked.groupBy("source_file").agg(
            F.count(F.lit(1)).alias("rows"), F.sum(F.col("_dup").cast("long")).alias("dups")).collect()}
    else:  # none can: a fresh file's rows are its rows counted while reading
        dups = {u: (stats[u]["rows"], 0) for u in fresh if u in stats}
    by_key = {uri[k]: k for k in keys}
    for u, (n, d) in dups.items():
        if n and d == n:  # every record is in bronze already: a re-upload under another key
            bad[by_key[u]] = f"duplicate: all {n} record(s) are already in bronze (or in an earlier file of this run)"
    fresh = [u for u in fresh if by_key[u] not in bad]
    detected = int(time.time() * 1000)

    # 1) quarantine: copies and log, keyed by source file (a re-run rewrites the same rows)
    qrows = []
    for key, reason in sorted(bad.items()):
        dest, copy_error = quarantine_copy(loc, key, lake.quarantine_copy_root(run_id))
        qrows.append((uri[key], kind, reason, dest, run_id, detected, copy_error))
    cols = ["source_file", "kind", "reason", "quarantine_path", "run_id", "detected_at_ms", "copy_error"]
    result.quarantined = [dict(zip(cols, r)) for r in qrows]
    if qrows:
        (spark.createDataFrame(qrows, QUARANTINE_FILES.ddl).write.format("delta").mode("overwrite")
         .option("replaceWhere", io.sql_in("source_file", [r[0] for r in qrows]))
         .option("mergeSchema", "true")  # lakes from before the copy_error column
         .save(lake.path(QUARANTINE_FILES)))
        log.warning("quarantined %d %s file(s) under %s", len(qrows), kind, lake.quarantine_copy_root(run_id))

    # 2) bronze: the records of the good files not already there (one append)
    appended = {u: dups.get(u, (0, 0))[0] - dups.get(u, (0, 0))[1] for u in fresh}
    if fresh:  # one append; its files are laid out by the read's partitions, no extra shuffle to bin them
        io.append(io.having(marked, "source_file", fresh).where(~F.col("_dup")).drop("_dup"), lake, target,
                  optimize_write=False)
    marked.unpersist()
    validated.unpersist()

    file_rows = []
    for u in ok_uris:
        if by_key[u] in bad:
            continue
        s = stats.get(u)
        skipped = dups.get(u, (0, 0))[1] if u in appended else 0
        if u in recovered:
            note = "rows appended by an earlier run that did not finish"
        else:
            note = f"{skipped} duplicate record(s) skipped" if skipped else None
        file_rows.append((u, kind, STATUS_INGESTED, note, appended.get(u, 0),
                          s["min_time_ms"] if s else None, s["max_time_ms"] if s else None, run_id, detected))
    result.files_ingested = len(appended)
    result.files_recovered = len(recovered - {uri[k] for k in bad})
    result.rows_ingested = sum(appended.values())
    result.duplicate_rows = sum(dups.get(u, (0, 0))[1] for u in appended)
    mins = [r[5] for r in file_rows if r[5] is not None]
    result.min_time_ms = min(mins) if mins else None

    # 3) the processed-files log, last: a file is marked done only once its rows are in
    file_rows += [(uri[k], kind, STATUS_QUARANTINED, bad[k], None, None, None, run_id, detected) for k in bad]
    io.append(spark.createDataFrame(file_rows, INGESTED_FILES.ddl), lake, INGESTED_FILES)
    return result


def new_flow_keys(spark: SparkSession, *, raw_root: str, lake: Lake, start_ms: int, end_ms: int,
                  lookback_hours: int) -> list[str]:
    """Raw flow files under the days the window (and late-arrival lookback) touches, not yet processed."""
    loc = resolve(raw_root)
    days = days_between(start_ms - lookback_hours * HOUR_MS, end_ms + HOUR_MS)
    keys = list_files(loc, [f"{RAW_FLOWS_PREFIX}/dt={d}" for d in days])
    uris = {k: loc.uri(f"{loc.path}/{k}") for k in keys}
    done = _already_processed(spark, lake, KIND_FLOWS, list(uris.values()))
    return [k for k in keys if uris[k] not in done]


def new_event_keys(spark: SparkSession, *, raw_root: str, lake: Lake) -> list[str]:
    """IP-event files not yet processed (all days: events for old days arrive late)."""
    loc = resolve(raw_root)
    keys = list_files(loc, [IP_EVENTS_PREFIX])
    uris = {k: loc.uri(f"{loc.path}/{k}") for k in keys}
    done = _already_processed(spark, lake, KIND_EVENTS, list(uris.values()))
    return [k for k in keys if uris[k] not in done]
