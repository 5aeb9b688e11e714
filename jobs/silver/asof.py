"""One reusable, validated as-of join (in the manner of Databricks Labs' tempo).

For every left row, the right row with the same key whose timestamp is the
latest one at or before the left row's timestamp. Rows of the right side with
equal (key, timestamp) are ties, broken by an explicit ordering the caller
gives. Left rows with no such right row are kept, with nulls.
"""

from __future__ import annotations

import uuid
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
                  right_prefix: str, right_on: Sequence[str] | None = None) -> None:
    """Raise ValueError naming the problem when the two sides cannot be as-of joined."""
    right_on = list(right_on or on)
    if not on or len(right_on) != len(on):
        raise ValueError("asof_join needs at least one key column in `on` (and as many in `right_on`)")
    lf, rf = {f.name: f for f in left.schema.fields}, {f.name: f for f in right.schema.fields}
    for side, fields, cols in (("left", lf, [*on, left_ts]), ("right", rf, [*right_on, right_ts])):
        missing = [c for c in cols if c not in fields]
        if missing:
            raise ValueError(f"asof_join: {side} side lacks column(s) {missing}; it has {sorted(fields)}")
    for key, rkey in zip(on, right_on):
        if lf[key].dataType != rf[rkey].dataType:
            raise ValueError(
                f"asof_join: key {key!r} is {lf[key].dataType.simpleString()} on the left but "
                f"{rf[rkey].dataType.simpleString()} on the right; cast one side first"
            )
    for side, field in (("left", lf[left_ts]), ("right", rf[right_ts])):
        if not isinstance(field.dataType, _TS_TYPES):
            raise ValueError(
                f"asof_join: {side} timestamp {field.name!r} is {field.dataType.simpleString()}; "
                "use integer epoch milliseconds (bigint)"
            )
    renamed = {f"{right_prefix}{c}" for c in rf if c not in right_on}
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
    right_on: str | Sequence[str] | None = None,
    broadcast_right: bool = True,
    bucket_ms: int | None = None,
) -> DataFrame:
    """As-of join ``right`` onto ``left`` (left outer): latest right row with right_ts <= left_ts.

    ``tie_breaker`` orders right rows that share (key, right_ts): the first wins.
    With ``broadcast_right`` the right side is shipped to every task (no
    shuffle of ``left``, so hot keys cannot skew it); otherwise give
    ``bucket_ms`` and both sides are joined on (key, time bucket), which
    bounds the work per hot key by the bucket size. ``right_on`` names the
    right side's keys when they differ from ``on``.
    """
    keys = _as_list(on)
    rkeys = _as_list(right_on) if right_on is not None else keys
    validate_asof(left, right, on=keys, left_ts=left_ts, right_ts=right_ts, right_prefix=right_prefix,
                  right_on=rkeys)
    if not tie_breaker:
        raise ValueError("asof_join: pass tie_breaker, the ordering that decides between right rows "
                         "with the same key and timestamp")
    if not broadcast_right and not bucket_ms:
        raise ValueError("asof_join: without broadcast_right, give bucket_ms (the time bucket of the join)")

    ties = Window.partitionBy(*rkeys, right_ts).orderBy(*tie_breaker)
    nxt = Window.partitionBy(*rkeys).orderBy(right_ts)
    r = (
        right.withColumn("_asof_rank", F.row_number().over(ties))
        .filter(F.col("_asof_rank") == 1)
        .drop("_asof_rank")
        .withColumn(VALID_TO_COL, F.lead(right_ts).over(nxt))
    )
    payload = [c for c in right.columns if c not in rkeys]
    # The right side keeps its own column names up to the join (renamed after it), so two
    # lookups against the same table share one broadcast.
    r = r.select(*[F.col(k).alias(f"_asof_key_{i}") for i, k in enumerate(rkeys)], *payload, F.col(VALID_TO_COL))
    # Columns are named through per-call aliases: the same right table may be joined
    # several times into one plan (a self-join Spark could not otherwise tell apart).
    tag = uuid.uuid4().hex[:8]
    la, ra = f"_asof_l{tag}", f"_asof_r{tag}"

    def lc(c: str) -> Column:
        return F.col(f"{la}.`{c}`")

    def rc(c: str) -> Column:
        return F.col(f"{ra}.`{c}`")

    if broadcast_right:
        lsrc, rsrc = left.alias(la), F.broadcast(r).alias(ra)
        cond = [lc(k) == rc(f"_asof_key_{i}") for i, k in enumerate(keys)]
    else:
        bounds = left.agg(F.min(F.floor(F.col(left_ts) / bucket_ms)), F.max(F.floor(F.col(left_ts) / bucket_ms))).first()
        bmin, bmax = (int(bounds[0]), int(bounds[1])) if bounds[0] is not None else (0, 0)
        # only the buckets the left side has: a change point "before all time" must not explode
        first_b = F.greatest(F.floor(F.col(right_ts) / bucket_ms), F.lit(bmin).cast("bigint"))
        last_b = F.least(F.coalesce(F.floor((F.col(VALID_TO_COL) - 1) / bucket_ms), F.lit(bmax).cast("bigint")),
                         F.lit(bmax).cast("bigint"))
        rsrc = r.filter(first_b <= last_b).withColumn(BUCKET_COL, F.explode(F.sequence(first_b, last_b))).alias(ra)
        lsrc = left.withColumn(BUCKET_COL, F.floor(F.col(left_ts) / bucket_ms)).alias(la)
        cond = [lc(k) == rc(f"_asof_key_{i}") for i, k in enumerate(keys)] + [lc(BUCKET_COL) == rc(BUCKET_COL)]
    cond += [lc(left_ts) >= rc(right_ts), rc(VALID_TO_COL).isNull() | (lc(left_ts) < rc(VALID_TO_COL))]
    joined = lsrc.join(rsrc, on=cond, how="left")
    return joined.select(*[lc(c) for c in left.columns], *[rc(c).alias(f"{right_prefix}{c}") for c in payload])
