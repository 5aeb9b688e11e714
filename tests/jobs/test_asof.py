"""The as-of join: validation, semantics, explicit ties, and the bucketed mode."""

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from flowlake.jobs.silver.asof import asof_join

LEFT_DDL = "ip string, t bigint, id int"
RIGHT_DDL = "ip string, ts bigint, owner string, prio int"


def _join(spark, left, right, **kw):
    l_df = spark.createDataFrame(left, LEFT_DDL)
    r_df = spark.createDataFrame(right, RIGHT_DDL)
    opts = dict(on="ip", left_ts="t", right_ts="ts", right_prefix="r_", tie_breaker=[F.col("prio").asc()])
    opts.update(kw)
    return asof_join(l_df, r_df, **opts).select("id", "r_owner").orderBy("id")


def test_latest_right_row_at_or_before_left(spark):
    got = _join(spark, [("a", 5, 1), ("a", 10, 2), ("a", 15, 3), ("a", 1, 4), ("b", 10, 5)],
                [("a", 5, "x", 0), ("a", 10, "y", 0)])
    expected = spark.createDataFrame([(1, "x"), (2, "y"), (3, "y"), (4, None), (5, None)], "id int, r_owner string")
    assert_df_equality(got, expected, ignore_nullable=True)


def test_ties_on_the_same_timestamp_are_broken_by_tie_breaker(spark):
    got = _join(spark, [("a", 10, 1)], [("a", 10, "loses", 2), ("a", 10, "wins", 1)])
    assert [r.r_owner for r in got.collect()] == ["wins"]


def test_ipv6_keys_join_like_any_other_key(spark):
    got = _join(spark, [("2600:1f18::1", 10, 1), ("::1", 10, 2)], [("2600:1f18::1", 0, "v6", 0)])
    assert [r.r_owner for r in got.collect()] == ["v6", None]


def test_bucketed_mode_equals_broadcast_mode(spark):
    left = [("a", t, i) for i, t in enumerate(range(0, 10_000, 37))] + [("h", t, 1000 + t) for t in range(0, 10_000, 11)]
    right = [("a", 0, "a0", 0), ("a", 2500, "a1", 0), ("a", 7777, "a2", 0), ("h", 100, "h0", 0), ("h", 9000, "h1", 0)]
    broadcast = _join(spark, left, right)
    bucketed = _join(spark, left, right, broadcast_right=False, bucket_ms=1000)
    assert_df_equality(broadcast, bucketed, ignore_nullable=True)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(on="nope"), "lacks column"),
        (dict(left_ts="missing"), "lacks column"),
        (dict(tie_breaker=[]), "tie_breaker"),
        (dict(right_prefix=""), "overwrite left column"),
        (dict(broadcast_right=False), "bucket_ms"),
    ],
)
def test_invalid_sides_raise_value_error(spark, change, message):
    with pytest.raises(ValueError, match=message):
        l_df = spark.createDataFrame([("a", 1, 1)], "ip string, t bigint, id int").withColumn("owner", F.lit("x"))
        r_df = spark.createDataFrame([("a", 1, "x", 0)], RIGHT_DDL)
        opts = dict(on="ip", left_ts="t", right_ts="ts", right_prefix="r_", tie_breaker=[F.col("prio")])
        opts.update(change)
        asof_join(l_df, r_df, **opts)


def test_key_type_mismatch_and_non_integer_timestamps_raise(spark):
    l_df = spark.createDataFrame([(1, 1, 1)], "ip int, t bigint, id int")
    r_df = spark.createDataFrame([("a", 1, "x", 0)], RIGHT_DDL)
    with pytest.raises(ValueError, match="cast one side"):
        asof_join(l_df, r_df, on="ip", left_ts="t", right_ts="ts", right_prefix="r_", tie_breaker=["prio"])
    l2 = spark.createDataFrame([("a", "1", 1)], "ip string, t string, id int")
    with pytest.raises(ValueError, match="epoch milliseconds"):
        asof_join(l2, r_df, on="ip", left_ts="t", right_ts="ts", right_prefix="r_", tie_breaker=["prio"])
