"""Capture completeness: each raw file's ``flowlake.capture`` footer -> silver/capture_completeness.

Three parts (docs/capture.md "Completeness in the lake"):

* :func:`read_capture_meta` reads the footer of each flow file a run ingested,
  in Spark tasks with pyarrow (no rows are read): one row per file;
* :func:`transform` (pure) turns those rows plus the published rows of the
  same instances into the rows of ``silver/capture_completeness`` to replace:
  per instance and hour, files seen, seq gaps, restarts, drops by reason,
  intervals covered;
* :func:`update` does the I/O around them for the ingest stage;
  :func:`fleet_summary` sums a completeness table for a report.

Rules (also in docs/capture.md):

* A file's *hour* is the hour of the first interval it covers (its
  ``intervals``; for a file without them, the key's ``dt``/``hr``). Its files,
  records, drops, restarts and the gap *before* it count in that hour: a gap
  (seq numbers missing between two consecutive seen files of an instance, in
  any hours and any runs) is attributed to the hour of the file after it.
  ``intervals_covered`` counts each covered interval in its own hour.
* The seq before the first file ever seen of an instance is unknown: no gap is
  counted before it.
* A restart is a change of ``run_id`` between consecutive seen files (files
  without metadata are skipped over).
* A file whose (instance, seq) the table already counted is not counted again
  (a re-run adds nothing). A file older than the newest seq already published
  for its instance is counted in its own hour as ``late_files``; the gap
  recorded earlier in the later file's hour stays as it was.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from flowlake.jobs.bronze.capture_meta import (  # noqa: F401 - re-exported: the reader is part of this stage's API
    DROP_COLUMNS, DROP_REASONS, FILE_META_DDL, LOSS_REASONS, META_MISSING, META_OK, META_UNREADABLE,
    parse_capture_meta, read_capture_meta,
)
from flowlake.lake import CAPTURE_COMPLETENESS, Lake
from flowlake.timeutil import HOUR_MS


# --------------------------------------------------------------------------- the transform

SUM_COLUMNS = ("files", "files_without_metadata", "late_files", "gaps", "missing_files", "restarts",
               "intervals_covered", *DROP_COLUMNS, "drops_lost", "records")


def _hour(col) -> F.Column:
    return (F.floor(col / F.lit(HOUR_MS)) * F.lit(HOUR_MS)).cast("bigint")


def previous_state(published: DataFrame) -> DataFrame:
    """The newest seq (and its run_id) published per instance: (instance_id, last_seq, last_run_id)."""
    return (published.where(F.col("last_seq").isNotNull())
            .groupBy("instance_id")
            .agg(F.max(F.struct("last_seq", "last_run_id")).alias("s"))
            .select("instance_id", "s.last_seq", "s.last_run_id"))


def transform(files: DataFrame, published: DataFrame) -> DataFrame:
    """Rows of silver/capture_completeness to replace: every (instance, hour) the new files touch.

    ``files``: per-file rows (FILE_META_DDL) of the files a run ingested.
    ``published``: the table's current rows for (at least) the same instances.
    The result holds, for each touched (instance, hour), the published counts
    plus the new files' (see the module docstring for the rules); hand it to
    ``replace_where`` with :func:`replace_predicate`.
    """
    counted = published.select("instance_id", F.explode("seqs").alias("seq"))
    new = (files.where(F.col("instance_id").isNotNull() & F.col("seq").isNotNull())
           .join(counted, ["instance_id", "seq"], "left_anti")
           .dropDuplicates(["instance_id", "seq"]))
    state = previous_state(published)
    hour = F.coalesce(_hour(F.array_min("intervals")), F.col("key_hour_ms"))
    new = new.withColumn("hour_start_ms", hour).withColumn("_real", F.lit(True))
    # an anchor row per instance carries the last published seq and run_id into the ordering
    anchors = state.select("instance_id", F.col("last_seq").alias("seq"), F.col("last_run_id").alias("run_id"),
                           F.lit(False).alias("_real"))
    ordered = new.unionByName(anchors, allowMissingColumns=True)
    w = Window.partitionBy("instance_id").orderBy("seq")
    before = w.rowsBetween(Window.unboundedPreceding, -1)
    prev_run = F.last("run_id", ignorenulls=True).over(before)
    ordered = (ordered
               .withColumn("_prev_seq", F.lag("seq").over(w))
               .withColumn("_prev_run", prev_run)
               .join(state.select("instance_id", "last_seq"), "instance_id", "left"))
    gap = F.greatest(F.col("seq") - F.col("_prev_seq") - 1, F.lit(0))
    rows = (ordered.where("_real")
            .withColumn("_missing", F.coalesce(gap, F.lit(0)))
            .withColumn("_range", F.when(F.col("_missing") == 1, (F.col("_prev_seq") + 1).cast("string"))
                        .when(F.col("_missing") > 1, F.concat_ws("-", (F.col("_prev_seq") + 1).cast("string"),
                                                                  (F.col("seq") - 1).cast("string"))))
            .withColumn("_restart", (F.col("run_id").isNotNull() & F.col("_prev_run").isNotNull()
                                     & (F.col("run_id") != F.col("_prev_run"))).cast("int"))
            .withColumn("_late", (F.col("last_seq").isNotNull() & (F.col("seq") < F.col("last_seq"))).cast("int")))
    drops = [F.coalesce(F.col(c), F.lit(0)) for c in DROP_COLUMNS]
    per_file = rows.select(
        "instance_id", "hour_start_ms", "seq", "run_id", "_range",
        F.lit(1).alias("files"),
        (F.col("meta_status") != META_OK).cast("int").alias("files_without_metadata"),
        F.col("_late").alias("late_files"),
        (F.col("_missing") > 0).cast("int").alias("gaps"),
        F.col("_missing").alias("missing_files"),
        F.col("_restart").alias("restarts"),
        *[d.alias(c) for d, c in zip(drops, DROP_COLUMNS)],
        sum(F.coalesce(F.col(f"drops_{r}"), F.lit(0)) for r in LOSS_REASONS).alias("drops_lost"),
        F.coalesce("records", F.lit(0)).alias("records"),
    )
    intervals = (new.select("instance_id", F.explode("intervals").alias("interval_start_ms")).distinct()
                 .groupBy("instance_id", _hour(F.col("interval_start_ms")).alias("hour_start_ms"))
                 .agg(F.count(F.lit(1)).alias("intervals_covered")))
    fresh = (per_file.groupBy("instance_id", "hour_start_ms").agg(
        *[F.sum(c).cast("bigint").alias(c) for c in SUM_COLUMNS if c != "intervals_covered"],
        F.sort_array(F.collect_list("seq")).alias("seqs"),
        F.sort_array(F.collect_set("run_id")).alias("run_ids"),
        F.collect_list("_range").alias("missing_seq_ranges"),
        F.max(F.struct("seq", "run_id")).alias("_last"))
        .select("*", F.col("_last.seq").alias("last_seq"), F.col("_last.run_id").alias("last_run_id")).drop("_last")
        .join(intervals, ["instance_id", "hour_start_ms"], "full_outer"))
    touched = fresh.select("instance_id", "hour_start_ms")
    old = published.join(touched, ["instance_id", "hour_start_ms"], "left_semi")
    both = old.unionByName(fresh, allowMissingColumns=True)
    merged = both.groupBy("instance_id", "hour_start_ms").agg(
        *[F.coalesce(F.sum(c), F.lit(0)).cast("bigint").alias(c) for c in SUM_COLUMNS],
        F.sort_array(F.flatten(F.collect_list(F.coalesce("seqs", F.array().cast("array<bigint>"))))).alias("seqs"),
        F.sort_array(F.array_distinct(F.flatten(F.collect_list(
            F.coalesce("run_ids", F.array().cast("array<string>")))))).alias("run_ids"),
        F.flatten(F.collect_list(F.coalesce("missing_seq_ranges", F.array().cast("array<string>"))))
        .alias("missing_seq_ranges"),
        F.max(F.when(F.col("last_seq").isNotNull(), F.struct("last_seq", "last_run_id"))).alias("_last"))
    return merged.select(*_columns(), F.col("_last.last_seq").alias("last_seq"),
                         F.col("_last.last_run_id").alias("last_run_id"))


def _columns() -> list[str]:
    return ["instance_id", "hour_start_ms", *SUM_COLUMNS, "seqs", "run_ids", "missing_seq_ranges"]


def replace_predicate(rows: DataFrame) -> str | None:
    """The replaceWhere predicate covering exactly the (instance, hour) pairs of ``rows`` (None if empty)."""
    pairs = sorted({(r[0], r[1]) for r in rows.select("instance_id", "hour_start_ms").distinct().collect()})
    if not pairs:
        return None
    quote = lambda v: "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"  # noqa: E731
    by_instance: dict[str, list[int]] = {}
    for inst, hour in pairs:
        by_instance.setdefault(inst, []).append(hour)
    return " OR ".join(f"(instance_id = {quote(i)} AND hour_start_ms IN ({', '.join(map(str, hs))}))"
                       for i, hs in sorted(by_instance.items()))


def update(spark: SparkSession, *, raw_root: str, lake: Lake, keys: list[str]) -> DataFrame | None:
    """Read the footers of ``keys`` (flow files this run ingested or quarantined) and publish their
    completeness into silver/capture_completeness. Returns the rows written (None if no key)."""
    from flowlake.jobs.run import io  # the lake I/O helpers, as ingest uses them

    if not keys:
        return None
    files = read_capture_meta(spark, raw_root=raw_root, keys=keys).persist()
    instances = sorted({r[0] for r in files.select("instance_id").distinct().collect() if r[0] is not None})
    published = io.read(spark, lake, CAPTURE_COMPLETENESS)
    if instances:
        published = io.having(published, "instance_id", instances)
    rows = transform(files, published).localCheckpoint()  # read before the same table is replaced
    predicate = replace_predicate(rows)
    if predicate is not None:
        io.replace_where(rows, lake, CAPTURE_COMPLETENESS, predicate=predicate)
    files.unpersist()
    return rows


# --------------------------------------------------------------------------- reports


def fleet_summary(completeness: DataFrame) -> dict:
    """The fleet's completeness over the given rows, as plain numbers for a report.

    Keys: instances, hours (instance-hours), files, files_without_metadata,
    late_files, gaps, missing_files, file_completeness (files / (files +
    missing_files)), restarts, intervals_covered, records, drops (by reason),
    drops_lost, instances_with_gaps and instances_with_losses (sorted names).
    """
    agg = completeness.agg(
        F.countDistinct("instance_id").alias("instances"), F.count(F.lit(1)).alias("hours"),
        *[F.coalesce(F.sum(c), F.lit(0)).alias(c) for c in SUM_COLUMNS]).first().asDict()
    per = completeness.groupBy("instance_id").agg(F.sum("missing_files").alias("m"), F.sum("drops_lost").alias("d"))
    gaps = sorted(r[0] for r in per.where("m > 0").select("instance_id").collect())
    lost = sorted(r[0] for r in per.where("d > 0").select("instance_id").collect())
    files, missing = int(agg["files"]), int(agg["missing_files"])
    out = {k: int(agg[k]) for k in ("instances", "hours", *SUM_COLUMNS) if not k.startswith("drops_")}
    out["drops"] = {r: int(agg[f"drops_{r}"]) for r in DROP_REASONS}
    out["drops_lost"] = int(agg["drops_lost"])
    out["file_completeness"] = files / (files + missing) if files + missing else 1.0
    out["instances_with_gaps"] = gaps
    out["instances_with_losses"] = lost
    return out
