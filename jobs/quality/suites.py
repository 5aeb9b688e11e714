"""Data-quality suites for bronze, ownership, silver and gold (pure: DataFrames in, checks out).

Each suite is a list of :class:`~flowlake.jobs.quality.checks.Check` s: a
Great Expectations 1.x expectation over a DataFrame (the rows about to be
published, or a small DataFrame of violations or totals computed here). A
stage validates its output *before* it publishes (:mod:`flowlake.jobs.quality.gate`):
a failed ``blocking`` check stops the run, a failed ``warning`` is reported. Two suites run queries while they are built:
the bronze suite finds the few bad addresses and counts the rows its row checks fail, the silver
suite's digests decide whether its record check needs its shuffle.
"""

from __future__ import annotations

import operator
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from flowlake.contracts import COUNTER_COLUMNS, NOT_NULL_FLOW_COLUMNS, RAW_FLOW_SCHEMA, RECORD_KEY, SPARK_TYPES
from flowlake.jobs.quality.checks import Check
from flowlake.jobs.silver.ips import non_canonical_ip_col
from flowlake.timeutil import HOUR_MS

# One bronze/silver row: a record of one source file.
ROW_KEY = ["source_file", *RECORD_KEY]



def bronze_suite(window: DataFrame, new_rows: DataFrame, *, start_ms: int, end_ms: int,
                 lateness_ms: int) -> list[Check]:
    """Bronze rows of the span (``window``) and the rows this run ingested (``new_rows``)."""
    nulls = F.concat_ws(",", *[F.when(F.col(c).isNull(), F.lit(c)) for c in NOT_NULL_FLOW_COLUMNS])
    negative = F.concat_ws(",", *[F.when(F.col(c) < 0, F.lit(c)) for c in COUNTER_COLUMNS])
    # the bad addresses are few (ingest quarantines files that have any): found once, then joined as a
    # literal table, so the row pass below is the only other read of the window
    spark = window.sparkSession
    bad = spark.createDataFrame([(r.ip,) for r in non_canonical_ips(window, ["local_ip", "remote_ip"]).collect()],
                                "ip string")
    rows = window
    for column in ("local_ip", "remote_ip"):
        rows = rows.join(F.broadcast(bad.select(F.col("ip").alias(column), F.col("ip").alias(f"_bad_{column}"))),
                         on=column, how="left")
    rows = rows.select(  # only what the checks read (cached while GX computes its metrics, if it has rows to)
        "interval_start_ms", "interval_end_ms", "_bad_local_ip", "_bad_remote_ip",
        F.when(nulls != "", nulls).alias("_null_columns"),
        F.when(negative != "", negative).alias("_negative_counters"),
    )
    want = {f.name: f.type for f in RAW_FLOW_SCHEMA}
    got = dict(window.dtypes)
    wrong = {c: got.get(c, "missing") for c, t in want.items() if got.get(c) != SPARK_TYPES[str(t)]}
    schema = spark.createDataFrame([(c, g) for c, g in sorted(wrong.items())], "column string, actual_type string")
    checks = [
        Check("bronze.schema", schema, "ExpectTableRowCountToEqual", {"value": 0},
              "every contract column present with the contract's type"),
        Check("bronze.not_null", rows, "ExpectColumnValuesToBeNull", {"column": "_null_columns"},
              f"no nulls in {', '.join(NOT_NULL_FLOW_COLUMNS)}"),
        Check("bronze.local_ip_valid", rows, "ExpectColumnValuesToBeNull", {"column": "_bad_local_ip"},
              "local_ip is a canonical IP address"),
        Check("bronze.remote_ip_valid", rows, "ExpectColumnValuesToBeNull", {"column": "_bad_remote_ip"},
              "remote_ip is a canonical IP address"),
        Check("bronze.counters_non_negative", rows, "ExpectColumnValuesToBeNull", {"column": "_negative_counters"},
              f"counters >= 0 ({', '.join(COUNTER_COLUMNS)})"),
        Check("bronze.interval_end_after_start", rows, "ExpectColumnPairValuesAToBeGreaterThanB",
              {"column_A": "interval_end_ms", "column_B": "interval_start_ms", "or_equal": False},
              "interval_end_ms > interval_start_ms"),
        Check("bronze.timestamps_in_window", new_rows.select("interval_start_ms"), "ExpectColumnValuesToBeBetween",
              {"column": "interval_start_ms", "min_value": start_ms - lateness_ms, "max_value": end_ms + lateness_ms},
              f"rows ingested by this run start within the window +/- {lateness_ms} ms of lateness"),
    ]
    _rows_only_if_failing(checks, rows)
    return checks


def _rows_only_if_failing(checks: list[Check], rows: DataFrame) -> None:
    """One pass counts ``rows`` and those any check over them fails. With none, those checks get no rows
    (GX's metrics would take a cached copy and a pass per check) and report the rows checked."""
    row_checks = [c for c in checks if c.data is rows]
    failing = F.coalesce(reduce(operator.or_, [_fails(c) for c in row_checks]), F.lit(True))
    checked, failed = rows.agg(F.count(F.lit(1)), F.count(F.when(failing, 1))).first()
    data = rows if failed else rows.limit(0)
    for c in row_checks:
        c.data, c.rows_checked = data, checked


def _fails(check: Check) -> Column:
    """The rows a row check fails, as a condition (null where GX would not judge the row)."""
    kw = check.kwargs
    if check.expectation == "ExpectColumnValuesToBeNull":
        return F.col(kw["column"]).isNotNull()
    if check.expectation == "ExpectColumnPairValuesAToBeGreaterThanB":
        a, b = F.col(kw["column_A"]), F.col(kw["column_B"])
        return a < b if kw.get("or_equal") else a <= b
    raise ValueError(f"{check.name}: no row condition for {check.expectation}; add one to suites._fails")


def non_canonical_ips(df: DataFrame, columns: list[str]) -> DataFrame:
    """The distinct values (``ip``) of ``columns`` that are not IP addresses in canonical form: the
    Python check runs once per address, not once per row (flow rows repeat a few addresses)."""
    values = df.select(F.col(columns[0]).alias("ip"))
    for c in columns[1:]:
        values = values.unionByName(df.select(F.col(c).alias("ip")))
    values = values.where(F.col("ip").isNotNull()).distinct()
    return values.where(non_canonical_ip_col("ip").isNotNull())


def overlaps(ranges: DataFrame) -> DataFrame:
    """Ranges that start before an earlier range of the same (ip, source) ended."""
    order = Window.partitionBy("ip", "source").orderBy("valid_from_ms", "valid_to_ms", "workload") \
        .rowsBetween(Window.unboundedPreceding, -1)
    to = F.coalesce("valid_to_ms", F.lit(2**62))
    return (
        ranges.withColumn("_prev_to", F.max(to).over(order))
        .where(F.col("_prev_to") > F.col("valid_from_ms"))
        .select("ip", "source", "workload", "valid_from_ms", "valid_to_ms", F.col("_prev_to").alias("previous_to_ms"))
    )


def ownership_suite(ranges: DataFrame) -> list[Check]:
    """Ownership ranges about to be published."""
    return [Check("ownership.no_overlap", overlaps(ranges), "ExpectTableRowCountToEqual", {"value": 0},
                  "no two ranges of one ip and source overlap")]


def silver_suite(silver: DataFrame, bronze: DataFrame, *, min_attributed_share: float) -> list[Check]:
    """Attributed rows of a span against the bronze rows of the same span."""
    share = silver.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.when(F.col("remote_attribution") != "unattributed", 1).otherwise(0)).alias("attributed"),
    ).select("rows", "attributed", F.coalesce(F.col("attributed") / F.col("rows"), F.lit(1.0)).alias("share"))
    problems = record_problems(silver, bronze)
    return [
        Check("silver.attributed_share", share, "ExpectColumnValuesToBeBetween",
              {"column": "share", "min_value": min_attributed_share},
              f"at least {min_attributed_share:.2%} of records have an attributed remote"),
        Check("silver.no_duplicate_keys", problems, "ExpectColumnValuesToBeNull", {"column": "_duplicated"},
              "each record once (" + ", ".join(RECORD_KEY) + "), whichever file it came from"),
        Check("silver.every_bronze_row", problems, "ExpectColumnValuesToBeNull", {"column": "_missing"},
              "every bronze row of the span is in silver"),
    ]


def record_problems(silver: DataFrame, bronze: DataFrame) -> DataFrame:
    """One row per record (RECORD_KEY) that silver holds more than once, or whose bronze row (the record
    of one ``source_file``) silver lacks; ``_duplicated`` and ``_missing`` say which, null where fine.

    When the rows prove there are none (:func:`same_rows_once`: two global sums and one shuffle of
    a long per record), that is an empty frame and the exact comparison below is not run."""
    exact = _record_problems_exact(silver, bronze)
    return exact.limit(0) if same_rows_once(silver, bronze) else exact


def _fingerprint(df: DataFrame) -> tuple:
    """An order-free digest of the rows' ROW_KEY multiset: the count and 32-bit halves of two hashes, summed
    (no overflow below 2**31 rows). Equal multisets give equal digests; unequal ones almost never do."""
    hashes = [F.xxhash64(*ROW_KEY), F.xxhash64(F.lit(_SECOND_HASH_SALT), *ROW_KEY)]
    halves = [part for h in hashes for part in (h.bitwiseAND(_LOW_32), F.shiftrightunsigned(h, 32))]
    return tuple(df.agg(F.count(F.lit(1)), *[F.sum(p) for p in halves]).first())


def same_rows_once(silver: DataFrame, bronze: DataFrame) -> bool:
    """Whether silver holds each record key once and exactly bronze's rows (by ROW_KEY). True is a proof
    for the keys (as many distinct key hashes as rows) and holds for the rows unless 128 bits of sums
    collide; False proves nothing, and the exact comparison runs."""
    digest = _fingerprint(silver)
    if digest != _fingerprint(bronze):
        return False
    return silver.select(F.xxhash64(*RECORD_KEY).alias("_h")).distinct().count() == digest[0]


_LOW_32 = 0xFFFFFFFF
_SECOND_HASH_SALT = "flowlake-row-digest"


def _record_problems_exact(silver: DataFrame, bronze: DataFrame) -> DataFrame:
    """:func:`record_problems`, computed.

    One shuffle of bronze and silver together, partitioned by the record: both groupings below (by
    row, then by record) run in those partitions, where a duplicate count and an anti-join would take
    a shuffle each."""
    def side(df: DataFrame, *, bronze_rows: int) -> DataFrame:
        return df.select(*ROW_KEY, F.lit(bronze_rows).alias("_b"), F.lit(1 - bronze_rows).alias("_s"))

    rows = (side(bronze, bronze_rows=1).unionByName(side(silver, bronze_rows=0))
            .repartition(*RECORD_KEY)
            .groupBy(*ROW_KEY).agg(F.sum("_b").alias("_b"), F.sum("_s").alias("_s")))
    per = rows.groupBy(*RECORD_KEY).agg(
        F.sum("_s").alias("_silver_rows"),
        F.min(F.when(F.col("_s") > 0, F.col("source_file"))).alias("_silver_file"),
        F.sum(F.when(F.col("_s") == 0, F.col("_b")).otherwise(0)).alias("_missing_rows"),
        F.min(F.when(F.col("_s") == 0, F.col("source_file"))).alias("_missing_file"))
    record = F.concat(F.lit("("), F.concat_ws(", ", *[F.col(c).cast("string") for c in RECORD_KEY]), F.lit(")"))
    return per.where((F.col("_silver_rows") > 1) | (F.col("_missing_rows") > 0)).select(
        *RECORD_KEY,
        F.when(F.col("_silver_rows") > 1, F.format_string(
            "%s: %d rows in silver (first file %s)", record, F.col("_silver_rows"), F.col("_silver_file")))
        .alias("_duplicated"),
        F.when(F.col("_missing_rows") > 0, F.format_string(
            "%s: not in silver from %s", record, F.col("_missing_file"))).alias("_missing"))


def gold_expected_bytes(silver: DataFrame) -> DataFrame:
    """Bytes gold/app_dependencies must hold for these silver rows: every outbound record,
    and the inbound ones whose client has no sidecar (not attributed by heartbeat)."""
    counted = silver.where((F.col("direction") == "outbound")
                           | ((F.col("direction") == "inbound") & (F.col("remote_attribution") != "heartbeat")))
    return counted.agg(F.coalesce(F.sum(F.col("bytes_sent") + F.col("bytes_received")), F.lit(0)).alias("b"))


def gold_suite(gold: DataFrame, silver: DataFrame, *, end_ms: int, freshness_max_lag_ms: int) -> list[Check]:
    """gold/app_dependencies rows of whole hours against the silver rows of the same hours."""
    g = gold.agg(F.coalesce(F.sum(F.col("bytes_to_dst") + F.col("bytes_to_src")), F.lit(0)).alias("g"),
                 F.max("hour_start_ms").alias("newest_hour_ms"))
    s = gold_expected_bytes(silver)
    rec = g.crossJoin(s).select(F.col("b").alias("silver_bytes"), F.col("g").alias("gold_bytes"),
                                (F.col("g") - F.col("b")).alias("difference"), "newest_hour_ms")
    lag = rec.select((F.lit(end_ms) - F.coalesce(F.col("newest_hour_ms") + HOUR_MS, F.lit(0))).alias("lag_ms"))
    return [
        Check("gold.bytes_reconcile", rec, "ExpectColumnValuesToBeBetween",
              {"column": "difference", "min_value": 0, "max_value": 0},
              "bytes in gold/app_dependencies equal the silver bytes they count"),
        Check("gold.freshness", lag, "ExpectColumnValuesToBeBetween",
              {"column": "lag_ms", "max_value": freshness_max_lag_ms},
              f"the newest gold hour ends at most {freshness_max_lag_ms} ms before the window's end"),
    ]


def completeness_suite(completeness: DataFrame) -> list[Check]:
    """Capture completeness of the span (silver/capture_completeness rows): a warning naming the
    instances with seq gaps (missing raw files) or lossy drops (all reasons but flow_map_full)."""
    lossy = ["drops_conn_map_full", "drops_ringbuf_full", "drops_spool_evicted_files", "drops_untracked_closes"]
    per = completeness.groupBy("instance_id").agg(
        F.sum("missing_files").alias("missing_files"),
        F.flatten(F.collect_list("missing_seq_ranges")).alias("missing_seq_ranges"),
        *[F.sum(c).alias(c) for c in lossy])
    offenders = per.where(sum(F.col(c) for c in ["missing_files", *lossy]) > 0).orderBy("instance_id")
    return [Check("bronze.capture_complete", offenders, "ExpectTableRowCountToEqual", {"value": 0},
                  "every instance's raw files arrived (no seq gaps) and its sidecar lost nothing "
                  "(no conn_map_full, ringbuf_full, spool_evicted_files or untracked_closes drops)")]
