"""One reusable, validated as-of join (in the manner of Databricks Labs' tempo).

For every left row, the right row with the same key whose timestamp is the
latest one at or before the left row's timestamp. Rows of the right side with
equal (key, timestamp) are ties, broken by an explicit ordering the caller
gives. Left rows with no such right row are kept, with nulls.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, LongType

VALID_TO_COL = "_asof_valid_to"
BUCKET_COL = "_asof_bucket"
_TS_TYPES = (LongType, IntegerType)


def _as_list(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def validate_asof(left: DataFrame, right: DataFrame, *, on: Sequence[str], left_ts: str, right_ts: str,
                  right_prefix: str) -> None:
    """Raise ValueError naming the problem when the two sides cannot be as-of joined."""
    if not on:
        raise ValueError("asof_join needs at least one key column in `on`")
    lf, rf = {f.name: f for f in left.schema.fields}, {f.name: f for f in right.schema.fields}
    for side, fields, cols in (("left", lf, [*on, left_ts]), ("right", rf, [*on, right_ts])):
        missing = [c for c in cols if c not in fields]
        if missing:
            raise ValueError(f"asof_join: {side} side lacks column(s) {missing}; it has {sorted(fields)}")
    for key in on:
        if lf[key].dataType != rf[key].dataType:
            raise ValueError(
                f"asof_join: key {key!r} is {lf[key].dataType.simpleString()} on the left but "
                f"{rf[key].dataType.simpleString()} on the right; cast one side first"
            )
    for side, field in (("left", lf[left_ts]), ("right", rf[right_ts])):
        if not isinstance(field.dataType, _TS_TYPES):
            raise ValueError(
                f"asof_join: {side} timestamp {field.name!r} is {field.dataType.simpleString()}; "
                "use integer epoch milliseconds (bigint)"
            )
    renamed = {f"{right_prefix}{c}" for c in rf if c not in on}
    clash = sorted(renamed & set(lf))
    if clash:
        raise ValueError(f"asof_join: right columns would overwrite left column(s) {clash}; pass a right_prefix")


def asof_join(
    left: DataFrame,
    right: DataFrame,
    *,
    on: str | Sequence[str],
    left_ts: str,
    right_ts: str,
    tie_breaker: Sequence[Column | str],
    right_prefix: str = "",
    broadcast_right: bool = True,
    bucket_ms: int | None = None,
) -> DataFrame:
    """As-of join ``right`` onto ``left`` (left outer): latest right row with right_ts <= left_ts.

    ``tie_breaker`` orders right rows that share (key, right_ts): the first wins.
    With ``broadcast_right`` the right side is shipped to every task (no
    shuffle of ``left``, so hot keys cannot skew it); otherwise give
    ``bucket_ms`` and both sides are joined on (key, time bucket), which
    bounds the work per hot key by the bucket size.
    """
    keys = _as_list(on)
    validate_asof(left, right, on=keys, left_ts=left_ts, right_ts=right_ts, right_prefix=right_prefix)
    if not tie_breaker:
        raise ValueError("asof_join: pass tie_breaker, the ordering that decides between right rows "
                         "with the same key and timestamp")
    if not broadcast_right and not bucket_ms:
        raise ValueError("asof_join: without broadcast_right, give bucket_ms (the time bucket of the join)")

    ties = Window.partitionBy(*keys, right_ts).orderBy(*tie_breaker)
    nxt = Window.partitionBy(*keys).orderBy(right_ts)
    r = (
        right.withColumn("_asof_rank", F.row_number().over(ties))
        .filter(F.col("_asof_rank") == 1)
        .drop("_asof_rank")
        .withColumn(VALID_TO_COL, F.lead(right_ts).over(nxt))
    )
    r = r.select(
        *[F.col(k).alias(f"_asof_key_{i}") for i, k in enumerate(keys)],
        *[F.col(c).alias(f"{right_prefix}{c}") for c in right.columns if c not in keys],
        F.col(VALID_TO_COL),
    )
    r_ts = f"{right_prefix}{right_ts}"
    cond = [left[k] == r[f"_asof_key_{i}"] for i, k in enumerate(keys)]
    cond += [left[left_ts] >= r[r_ts], r[VALID_TO_COL].isNull() | (left[left_ts] < r[VALID_TO_COL])]

    if broadcast_right:
        joined = left.join(F.broadcast(r), on=cond, how="left")
    else:
        bounds = left.agg(F.min(F.floor(F.col(left_ts) / bucket_ms)), F.max(F.floor(F.col(left_ts) / bucket_ms))).first()
        bmin, bmax = (int(bounds[0]), int(bounds[1])) if bounds[0] is not None else (0, 0)
        # only the buckets the left side has: a change point "before all time" must not explode
        first_b = F.greatest(F.floor(F.col(r_ts) / bucket_ms), F.lit(bmin).cast("bigint"))
        last_b = F.least(F.coalesce(F.floor((F.col(VALID_TO_COL) - 1) / bucket_ms), F.lit(bmax).cast("bigint")),
                         F.lit(bmax).cast("bigint"))
        r = r.filter(first_b <= last_b).withColumn(BUCKET_COL, F.explode(F.sequence(first_b, last_b)))
        lb = left.withColumn(BUCKET_COL, F.floor(F.col(left_ts) / bucket_ms))
        cond = [lb[k] == r[f"_asof_key_{i}"] for i, k in enumerate(keys)]
        cond += [lb[BUCKET_COL] == r[BUCKET_COL], lb[left_ts] >= r[r_ts],
                 r[VALID_TO_COL].isNull() | (lb[left_ts] < r[VALID_TO_COL])]
        joined = lb.join(r, on=cond, how="left").drop(lb[BUCKET_COL]).drop(r[BUCKET_COL])
    return joined.drop(*[f"_asof_key_{i}" for i in range(len(keys))], VALID_TO_COL)
