"""No record twice: which new flow rows are already in bronze, or repeated among themselves.

Duplicates are rare, so the exact check (a window over the whole record, a join with bronze on
the record key) runs only on candidates: rows whose record-key hash repeats among the new rows or
appears in bronze. Finding them shuffles one long per row, not whole rows; with no candidate (the
usual run) the rows are not touched again. A hash collision only makes a row a candidate, never a
duplicate.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from flowlake.contracts import RECORD_KEY
from flowlake.jobs.run import io
from flowlake.lake import BRONZE_FLOWS, Lake, Table

KEY_HASH = "_key_hash"
CANDIDATES_INLINE_MAX = 10_000  # candidate hashes listed in the filter; more are joined


def _key_hash(key: list[str]):
    """A long per record key: equal keys, equal hashes (different keys may share one)."""
    return F.xxhash64(*key)


def mark_duplicates(spark: SparkSession, lake: Lake, rows: DataFrame, *, target: Table) -> tuple[DataFrame, bool]:
    """Good new rows with ``_dup`` (true = this record is in bronze already, or an earlier copy of it
    is among these rows: the lowest ``source_file`` wins), and whether any row could be one (False:
    every ``_dup`` is false). Bronze is read only in the rows' dt partitions and their
    ``interval_start_ms`` range."""
    key = RECORD_KEY if target is BRONZE_FLOWS else None
    if key is None:
        return rows.withColumn("_dup", F.lit(False)), False
    columns = rows.columns
    hashed = rows.withColumn(KEY_HASH, _key_hash(key))
    candidates = hashed.groupBy(KEY_HASH).count().where(F.col("count") > 1).select(KEY_HASH)
    present = _bronze_keys(spark, lake, rows, target=target, key=key)
    if present is not None:
        present = present.withColumn(KEY_HASH, _key_hash(key))
        in_bronze = present.select(KEY_HASH).join(hashed.select(KEY_HASH), KEY_HASH, "left_semi")
        candidates = candidates.unionByName(in_bronze)
    found = [r[0] for r in candidates.distinct().limit(CANDIDATES_INLINE_MAX + 1).collect()]
    if not found:  # the usual case: no pass over the rows beyond the hashes'
        return rows.withColumn("_dup", F.lit(False)), False
    if len(found) <= CANDIDATES_INLINE_MAX:
        is_candidate = F.col(KEY_HASH).isin(found)
    else:  # a mass re-upload: many candidates, joined rather than listed
        listed = candidates.distinct().withColumn("_candidate", F.lit(True))
        hashed = hashed.join(listed, KEY_HASH, "left")
        is_candidate = F.col("_candidate").isNotNull()
    plain = hashed.where(~is_candidate).select(*columns).withColumn("_dup", F.lit(False))
    suspect = hashed.where(is_candidate).select(*columns, KEY_HASH)
    if present is not None:  # only bronze's keys that share a hash with a candidate
        present = present.join(suspect.select(KEY_HASH).distinct(), KEY_HASH, "left_semi")
    return plain.unionByName(_exact(suspect, present, key=key).drop(KEY_HASH)), True


def _bronze_keys(spark: SparkSession, lake: Lake, rows: DataFrame, *, target: Table,
                 key: list[str]) -> DataFrame | None:
    """The record keys bronze holds where these rows could collide (None: bronze has none)."""
    if not io.exists(spark, lake, target):
        return None
    bounds = rows.agg(F.collect_set("dt").alias("days"), F.min("interval_start_ms").alias("lo"),
                      F.max("interval_start_ms").alias("hi")).first()
    days = [d for d in bounds["days"] if d is not None]
    if not days or bounds["lo"] is None:
        return None
    return (io.read(spark, lake, target).where(F.col("dt").isin(days))
            .where(F.col("interval_start_ms").between(bounds["lo"], bounds["hi"])).select(*key))


def _exact(rows: DataFrame, present: DataFrame | None, *, key: list[str]) -> DataFrame:
    """The exact rule on candidate rows: repeated among them (lowest ``source_file`` first) or in bronze."""
    order = [F.col("source_file"),
             *[F.col(c) for c in rows.columns if c not in ("source_file", "_reason", KEY_HASH)]]
    marked = rows.withColumn("_dup", F.row_number().over(Window.partitionBy(*key).orderBy(*order)) > 1)
    if present is None:
        return marked
    found = present.select(*key).distinct().withColumn("_in_bronze", F.lit(True))
    return (marked.join(found, on=key, how="left")
            .withColumn("_dup", F.col("_dup") | F.coalesce(F.col("_in_bronze"), F.lit(False))).drop("_in_bronze"))
